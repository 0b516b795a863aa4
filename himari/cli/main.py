"""Entry point of the ``himari`` CLI.

Errors derived from :class:`~himari.errors.HimariError` print as one line (``error: ...``) with a non-zero exit;
any other exception prints one line too (with ``--debug`` for the traceback), never a bare traceback. A command
that fails before it wrote results removes the ``--out`` directory it had just created (no half-made runs).

Start-up stays fast (``himari --help`` well under a second): command modules import only click at the top and their
heavy dependencies (numpy, pandas, numba, torch) inside the commands; ``himari bench cli`` measures it.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from himari import __version__
from himari.cli.options import check_dates
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
    "himari.cli.run",
    "himari.cli.offline",
    "himari.cli.robustness",
)


# Optional packages -> the pyproject extra that installs them.
EXTRAS: dict[str, str] = {
    "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "httpx": "serve", "uvloop": "serve",
    "httptools": "serve", "transformers": "llm", "peft": "llm", "ray": "dist", "stable_baselines3": "baselines",
    "sb3_contrib": "baselines", "hmmlearn": "baselines", "tensorboard": "tensorboard", "ccxt": "exchange",
    "duckdb": "store", "gym_anytrading": "bench", "mlflow": "mlflow",
}


# Files a command may have written before failing that do not make a run worth keeping.
_SCAFFOLD_FILES = {"run.json", "wfo_config.json", "windows.json", "experiment.yaml"}
_OUT_OPTIONS = ("--out", "--run-dir")


def _new_out_dirs(args: list[str]) -> list[Path]:
    """``--out`` directories named on the command line that do not exist yet (a failed command may remove them)."""
    found: list[Path] = []
    for i, arg in enumerate(args):
        for option in _OUT_OPTIONS:
            if arg == option and i + 1 < len(args):
                found.append(Path(args[i + 1]))
            elif arg.startswith(option + "="):
                found.append(Path(arg.split("=", 1)[1]))
    return [p for p in found if not p.exists()]


def _remove_half_made(dirs: list[Path]) -> None:
    """Remove directories created by a command that failed, when they hold only run scaffolding (run.json, an empty
    windows.json...), never results, checkpoints or models."""
    for root in dirs:
        if not root.is_dir():
            continue
        entries = list(root.iterdir())
        scaffold = all(e.is_file() and e.name in _SCAFFOLD_FILES and not (e.name == "windows.json"
                                                                          and e.read_text().strip() not in ("", "[]"))
                       for e in entries)
        if scaffold:
            shutil.rmtree(root, ignore_errors=True)


class HimariGroup(click.Group):
    """Click group that turns exceptions into one-line errors with a non-zero exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["himari.new_out_dirs"] = _new_out_dirs(list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except HimariError as exc:
            _remove_half_made(ctx.meta.get("himari.new_out_dirs", []))
            if os.environ.get("HIMARI_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.ClickException:
            _remove_half_made(ctx.meta.get("himari.new_out_dirs", []))
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except ImportError as exc:
            _remove_half_made(ctx.meta.get("himari.new_out_dirs", []))
            if os.environ.get("HIMARI_DEBUG"):
                raise
            missing = getattr(exc, "name", None) or str(exc)
            extra = EXTRAS.get(str(missing).split(".")[0], "all")
            click.echo(f"error: this command needs the optional package {missing!r}: pip install 'himari[{extra}]'", err=True)
            ctx.exit(2)
        except Exception as exc:
            _remove_half_made(ctx.meta.get("himari.new_out_dirs", []))
            if os.environ.get("HIMARI_DEBUG"):
                raise
            click.echo(f"error: {type(exc).__name__}: {exc} (set HIMARI_DEBUG=1 for a traceback)", err=True)
            ctx.exit(1)
        return None


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (click's test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(verbosity: int) -> None:
    """Log records of ``himari.*`` to stderr: INFO by default (progress of long work when stderr is not a
    terminal), DEBUG with ``-v``, WARNING with ``-q``."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    logger = logging.getLogger("himari")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)


@click.group(cls=HimariGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="himari")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.option("-v", "--verbose", count=True, help="More log output (debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors: no progress bars or progress logs.")
def cli(debug: bool, verbose: int, quiet: bool) -> None:
    """HIMARI: regime-aware trading policies for crypto markets.

    Data paths accept a file (CSV, CSV.gz, Parquet, Feather, JSON) or a bundled dataset name: BTCUSDT, ETHUSDT,
    SOLUSDT. Shell completion: eval "$(_HIMARI_COMPLETE=bash_source himari)" (zsh_source, fish_source).
    """
    if debug:
        os.environ["HIMARI_DEBUG"] = "1"
    if quiet:
        os.environ["HIMARI_NO_PROGRESS"] = "1"
    configure_logging(-1 if quiet else verbose)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(cli)
    check_dates(cli)


_register_all()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="himari", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
