"""``himari bench ...``: throughput benchmarks. Each layer adds its command from its own module.

Every benchmark prints human-readable figures and, with ``--json``, one JSON object mapping configuration names to
numbers. Figures in the README come from these commands.

The benchmark modules are imported only when ``himari bench`` itself is used (they import numba, torch, ...), so
they cost nothing at ``himari --help``.
"""

from __future__ import annotations

import importlib

import click

# Modules that define ``register_bench(group: click.Group) -> None``.
BENCH_MODULES: tuple[str, ...] = (
    "himari.bench.features",
    "himari.bench.env",
    "himari.bench.ppo",
    "himari.bench.serve",
    "himari.bench.inference",
    "himari.bench.cli",
    "himari.bench.trading",
)


class LazyBenchGroup(click.Group):
    """A group whose commands are registered from :data:`BENCH_MODULES` on first use."""

    lazy = True  # himari.cli.options.check_dates walks it after loading, not at start-up

    def _load(self) -> None:
        if getattr(self, "_loaded", False):
            return
        self._loaded = True
        for name in BENCH_MODULES:
            importlib.import_module(name).register_bench(self)
        from himari.cli.options import check_dates

        for command in self.commands.values():
            check_dates(command)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, cmd_name)


@click.group("bench", cls=LazyBenchGroup)
def bench_group() -> None:
    """Measure throughput (features, simulator, PPO training, inference, CLI start-up)."""


def register(cli: click.Group) -> None:
    cli.add_command(bench_group)
