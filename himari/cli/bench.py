"""``himari bench ...``: throughput benchmarks. Each layer adds its command from its own module.

Every benchmark prints human-readable figures and, with ``--json``, one JSON object mapping configuration names to
numbers. Figures in the README come from these commands.
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
)


@click.group("bench")
def bench_group() -> None:
    """Measure throughput (features, simulator, PPO training, inference)."""


def register(cli: click.Group) -> None:
    for name in BENCH_MODULES:
        importlib.import_module(name).register_bench(bench_group)
    cli.add_command(bench_group)
