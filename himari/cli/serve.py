"""``himari serve``: the decision API (FastAPI + uvicorn) for a trained run."""

from __future__ import annotations

import click


@click.command("serve")
@click.option("--run", "run", required=True, help="Run directory (or bundle directory) to serve.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--api-key-file", default=None, help="File with API keys, one per line (else HIMARI_API_KEY).")
@click.option("--allow-open-loopback", is_flag=True, help="Run without an API key (only on a loopback host).")
@click.option("--history-bars", default=None, type=int,
              help="Bars kept per symbol for POST /v1/bars (default: what the model needs).")
@click.option("--allow-gaps", is_flag=True, help="Accept bars with missing hours (default: 422 naming the row).")
@click.option("--paper-db", default=None, help="A 'himari paper' database to show on the dashboard and in /metrics.")
@click.option(
    "--decision-cache",
    default=1024,
    show_default=True,
    type=int,
    help="Memoized decisions per (bars, account); 0 = decide on every request.",
)
@click.option("--workers", default=0, show_default=True, type=int,
              help="Worker threads for parsing and decisions (0 = the number of cores).")
@click.option("--max-pending", default=0, show_default=True, type=int,
              help="Requests admitted (running + waiting) before answering 503 + Retry-After (0 = 4 per worker).")
@click.option("--request-timeout", default=10.0, show_default=True, type=float,
              help="Seconds before an unanswered request gets 503 + Retry-After.")
@click.option("--backend", default="process", show_default=True, type=click.Choice(["process", "thread"]),
              help="Where decisions run: a decision backend child process (the event loop answering /health "
                   "never waits on decision work) or worker threads of the server process.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve_cmd(
    run: str,
    host: str,
    port: int,
    api_key_file: str | None,
    allow_open_loopback: bool,
    history_bars: int | None,
    allow_gaps: bool,
    paper_db: str | None,
    decision_cache: int,
    workers: int,
    max_pending: int,
    request_timeout: float,
    backend: str,
    log_level: str,
    access_log: bool,
) -> None:
    """Serve POST /v1/decide, POST /v1/bars, GET /health, /metrics, /v1/state, the dashboard (/) and /openapi.json.

    \b
    HIMARI_API_KEY=$(openssl rand -hex 24) himari serve --run RUN --port 8000
    curl -s localhost:8000/health
    """
    import uvicorn

    from himari.errors import ConfigError
    from himari.serve.app import create_app, serve_config_from_bundle
    from himari.serve.auth import check_startup_auth, load_api_keys
    from himari.serve.decider import self_check
    from himari.trading.bundle import load_bundle
    from himari.trading.engine import DecisionEngine
    from himari.utils.threads import configure_torch_threads

    if request_timeout <= 0 or workers < 0 or max_pending < 0:
        raise ConfigError("--request-timeout must be > 0; --workers and --max-pending must be >= 0")
    keys = load_api_keys(api_key_file)
    check_startup_auth(keys, host, allow_open_loopback)
    configure_torch_threads()
    bundle = load_bundle(run)
    engine = (
        DecisionEngine(bundle) if history_bars is None else DecisionEngine(bundle, history_bars=history_bars)
    )
    bars = int(engine.history_bars)
    self_check(engine, tuple(bundle.symbols), bundle.timeframe, bars)  # refuse a bundle that cannot decide
    engine.reset_streams()  # the self-check's synthetic bars are not the feed the streams follow
    config = serve_config_from_bundle(bundle, bars, allow_gaps, paper_db).replace(
        decision_cache=max(0, decision_cache), workers=workers, max_pending=max_pending,
        request_timeout_s=request_timeout, backend=backend,
    )
    import gc

    # the loaded model and pipelines move to the permanent generation: shorter GC pauses per request (before the
    # app exists, so this one long collection is not counted among the serving pauses in /metrics)
    gc.collect()
    gc.freeze()
    app = create_app(engine, config, keys)
    auth = "API key required" if keys.enabled else "OPEN (no API key, loopback only)"
    click.echo(f"serving {config.model_id} ({', '.join(config.symbols)} {config.timeframe}) on http://{host}:{port} - {auth}")
    extra = {}
    try:
        import uvloop  # noqa: F401

        extra["loop"] = "uvloop"
    except ImportError:
        pass
    try:
        import httptools  # noqa: F401

        extra["http"] = "httptools"
    except ImportError:
        pass
    import sys

    # worker threads hand the GIL back to the event loop after 1 ms instead of 5 ms: /health and accept() stay
    # prompt while decisions run (measured with himari bench serve --scenario soak-new)
    sys.setswitchinterval(0.001)
    # backlog: connections waiting for accept() under a burst of clients (the kernel caps it at somaxconn)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, backlog=4096, **extra)


def register(cli: click.Group) -> None:
    cli.add_command(serve_cmd)
