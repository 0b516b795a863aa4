"""Entry point of the ``himari`` CLI.

Errors derived from :class:`~himari.errors.HimariError` print as one line (``error: ...``) with a non-zero exit;
any other exception prints one line too (with ``--debug`` for the traceback), never a bare traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from himari import __version__
from himari.errors import HimariError

# Modules that add commands: each defines ``register(cli: click.Group) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "himari.cli.data",
    "himari.cli.bench",
    "himari.cli.features",
    "himari.cli.regime",
    "himari.cli.risk",
    "himari.cli.serve",
    "himari.cli.paper",
    "himari.cli.backtest",
    "himari.cli.train",
    "himari.cli.pipeline",
    "himari.cli.offline",
)


# Optional packages -> the pyproject extra that installs them.
EXTRAS: dict[str, str] = {
    "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "httpx": "serve", "uvloop": "serve",
    "httptools": "serve", "transformers": "llm", "peft": "llm", "ray": "dist", "stable_baselines3": "baselines",
    "sb3_contrib": "baselines", "hmmlearn": "baselines", "tensorboard": "tensorboard",
}


class HimariGroup(click.Group):
    """Click group that turns exceptions into one-line errors with a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except HimariError as exc:
            if os.environ.get("HIMARI_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except ImportError as exc:
            if os.environ.get("HIMARI_DEBUG"):
                raise
            missing = getattr(exc, "name", None) or str(exc)
            extra = EXTRAS.get(str(missing).split(".")[0], "all")
            click.echo(f"error: this command needs the optional package {missing!r}: pip install 'himari[{extra}]'", err=True)
            ctx.exit(2)
        except Exception as exc:
            if os.environ.get("HIMARI_DEBUG"):
                raise
            click.echo(f"error: {type(exc).__name__}: {exc} (set HIMARI_DEBUG=1 for a traceback)", err=True)
            ctx.exit(1)
        return None


@click.group(cls=HimariGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="himari")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
def cli(debug: bool) -> None:
    """HIMARI: regime-aware trading policies for crypto markets.

    Data paths accept a file (CSV, CSV.gz, Parquet, Feather, JSON) or a bundled dataset name: BTCUSDT, ETHUSDT,
    SOLUSDT.
    """
    if debug:
        os.environ["HIMARI_DEBUG"] = "1"


def _register_all() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(cli)


_register_all()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="himari", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
