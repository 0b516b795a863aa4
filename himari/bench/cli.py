"""``himari bench cli``: start-up time of the CLI (``himari --help``, a group's help, a shell-completion TAB) and
the heavy modules a bare start imports (there should be none of numpy, pandas, numba, torch, scipy).

Each figure is the median wall time of fresh ``python -m himari ...`` processes, so it includes the interpreter's
own start (measured alone as ``python_startup_s``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

import click

HEAVY_MODULES: tuple[str, ...] = ("numpy", "pandas", "numba", "torch", "scipy", "matplotlib", "pydantic", "rich",
                                  "gymnasium", "plotly")
_PROBE = ("import sys, himari.cli.main as m; "
          "print(','.join(sorted(x for x in {heavy!r} if x in sys.modules)))")


def _time(args: list[str], env: dict[str, str], repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def run_cli_bench(repeats: int = 5) -> dict[str, Any]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    py = [sys.executable]
    completion_env = {**env, "_HIMARI_COMPLETE": "bash_complete", "COMP_WORDS": "himari ", "COMP_CWORD": "1"}
    heavy = subprocess.run([*py, "-c", _PROBE.format(heavy=HEAVY_MODULES)], env=env, capture_output=True,
                           text=True, check=False).stdout.strip()
    return {
        "python_startup_s": _time([*py, "-c", "pass"], env, repeats),
        "help_s": _time([*py, "-m", "himari", "--help"], env, repeats),
        "group_help_s": _time([*py, "-m", "himari", "regime", "--help"], env, repeats),
        "completion_tab_s": _time([*py, "-m", "himari"], completion_env, repeats),
        "version_s": _time([*py, "-m", "himari", "--version"], env, repeats),
        "heavy_modules_at_start": heavy.split(",") if heavy else [],
        "repeats": repeats,
    }


def register_bench(group: click.Group) -> None:
    @group.command("cli")
    @click.option("--repeats", default=5, show_default=True, help="Fresh processes per figure (median reported).")
    @click.option("--json", "as_json", is_flag=True)
    def cli_bench(repeats: int, as_json: bool) -> None:
        """Start-up time of `himari --help`, a group's help and a completion TAB (fresh processes)."""
        res = run_cli_bench(repeats)
        if as_json:
            from himari.utils.io import to_json

            click.echo(to_json(res))
            return
        click.echo(f"python alone:          {res['python_startup_s']:.3f} s")
        click.echo(f"himari --help:         {res['help_s']:.3f} s")
        click.echo(f"himari regime --help:  {res['group_help_s']:.3f} s")
        click.echo(f"completion TAB:        {res['completion_tab_s']:.3f} s")
        click.echo(f"himari --version:      {res['version_s']:.3f} s")
        click.echo("heavy modules at start: " + (", ".join(res["heavy_modules_at_start"]) or "none"))
