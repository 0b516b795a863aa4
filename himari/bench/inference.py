"""``himari bench inference``: latency of one decision (batch 1) for every importable policy kind.

Each policy is built with its default configuration for the 48 tactical features + 4 regime probabilities (PPO kinds
through ``himari.agents.ppo.policies.make_policy``; offline kinds, the rule baseline and both ensemble presets from
``himari.agents.offline``), then ``act`` is called ``--repeats`` times on fresh batch-1 observations, carrying the
policy state as a live deployment does (the Decision Transformers' context fills up to its 64 steps during warm-up).
Reported: median and 99th percentile wall time per decision in milliseconds (``time.perf_counter_ns``), one torch
thread. With ``--json``: one object mapping each kind to its median latency in ms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from himari.agents.registry import PPO_KINDS
from himari.env.protocol import ACCOUNT_FIELDS, REGIME_NAMES, Observation

N_FEATURES = 48  # 44 technical + 4 filter features of the tactical pipeline


def _offline_builders(n_features: int) -> dict[str, Callable[[], Any]]:
    n_inputs = n_features + len(REGIME_NAMES)
    state_dim = n_inputs + len(ACCOUNT_FIELDS)

    def classifier() -> Any:
        from himari.agents.offline.classifier import ClassifierConfig, ClassifierPolicy

        return ClassifierPolicy(ClassifierConfig(n_inputs=n_inputs))

    def cql() -> Any:
        from himari.agents.offline.cql import CQLConfig, CQLPolicy

        return CQLPolicy(CQLConfig(state_dim=state_dim))

    def dt() -> Any:
        from himari.agents.offline.decision_transformer import DecisionTransformerPolicy, DTConfig

        return DecisionTransformerPolicy(DTConfig(state_dim=state_dim))

    def cgdt() -> Any:
        from himari.agents.offline.decision_transformer import CGDTConfig, CriticGuidedDTPolicy

        return CriticGuidedDTPolicy(CGDTConfig(state_dim=state_dim))

    def flag() -> Any:
        from himari.agents.offline.flag_trader import FlagTraderConfig, FlagTraderPolicy

        return FlagTraderPolicy(FlagTraderConfig(n_inputs=n_inputs, context=16))

    def rule() -> Any:
        from himari.agents.rules import RuleConfig, RulePolicy

        return RulePolicy(RuleConfig(rule="ma_crossover", fast=4, slow=16))

    def preset(name: str) -> Callable[[], Any]:
        def build() -> Any:
            from himari.agents.offline.ensemble import PRESETS, EnsemblePolicy

            makers = {"flag-trader": flag, "cgdt": cgdt, "cql": cql, "mlp-classifier": classifier}
            return EnsemblePolicy.from_preset(name, {k: makers[k]() for k in PRESETS[name]})

        return build

    return {"mlp-classifier": classifier, "cql": cql, "dt": dt, "cgdt": cgdt, "flag-trader": flag, "rule": rule,
            "ensemble-production": preset("production"), "ensemble-low-latency": preset("low-latency")}


def _ppo_builder(kind: str, n_features: int) -> Callable[[], Any]:
    def build() -> Any:
        from himari.agents.ppo.networks import ObsSpec
        from himari.agents.ppo.policies import make_policy

        n_assets = 3 if kind == "multiasset" else 1
        window = 100 if kind == "transformer" else 32
        return make_policy(kind, ObsSpec(window, n_assets, n_features, len(REGIME_NAMES), len(ACCOUNT_FIELDS)))

    return build


def policy_builders(n_features: int = N_FEATURES) -> dict[str, Callable[[], Any]]:
    """Kind -> zero-argument constructor of a default-configured policy (PPO kinds first)."""
    builders = {kind: _ppo_builder(kind, n_features) for kind in PPO_KINDS}
    builders.update(_offline_builders(n_features))
    return builders


def decision_latency(policy: Any, repeats: int, warmup: int, seed: int = 0) -> dict[str, float]:
    """Median / p99 / mean milliseconds of ``policy.act`` on batch-1 observations (state carried between calls)."""
    rng = np.random.default_rng(seed)
    n_assets = int(getattr(policy, "n_assets", 1) or 1)
    window = max(int(policy.window), 1)
    n_features = _policy_features(policy)
    observations = [
        Observation(
            rng.normal(size=(1, window, n_assets, n_features)).astype(np.float32),
            rng.dirichlet(np.ones(len(REGIME_NAMES)), size=(1, window, n_assets)).astype(np.float32),
            np.zeros((1, n_assets, len(ACCOUNT_FIELDS)), np.float32),
        )
        for _ in range(8)
    ]
    state = policy.initial_state(1)
    for k in range(warmup):
        _, state = policy.act(observations[k % 8], state, deterministic=True)
    times = np.empty(repeats)
    for k in range(repeats):
        start = time.perf_counter_ns()
        _, state = policy.act(observations[k % 8], state, deterministic=True)
        times[k] = (time.perf_counter_ns() - start) / 1e6
    return {"p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99)),
            "mean_ms": float(times.mean())}


def _policy_features(policy: Any) -> int:
    spec = getattr(policy, "spec", None)
    if spec is not None:
        return int(spec.n_features)
    return N_FEATURES


def run_inference_bench(kinds: tuple[str, ...] | None, repeats: int, warmup: int) -> dict[str, Any]:
    """``{kind: {"p50_ms", "p99_ms", "mean_ms"}}`` for importable kinds, ``{kind: {"skipped": reason}}`` otherwise."""
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    builders = policy_builders()
    selected = kinds or tuple(builders)
    results: dict[str, Any] = {}
    for kind in selected:
        if kind not in builders:
            raise click.BadParameter(f"unknown kind {kind!r}; known: {', '.join(builders)}", param_hint="--kinds")
        try:
            policy = builders[kind]()
        except (ImportError, ModuleNotFoundError) as exc:
            results[kind] = {"skipped": f"not importable: {exc}"}
            continue
        results[kind] = decision_latency(policy, repeats, warmup)
    return results


def register_bench(group: click.Group) -> None:
    @group.command("inference")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object: kind -> median latency (ms).")
    @click.option("--repeats", default=200, show_default=True, type=click.IntRange(min=1))
    @click.option("--warmup", default=70, show_default=True, type=click.IntRange(min=0),
                  help="Untimed calls first (fills sequence contexts).")
    @click.option("--kinds", default=None, help="Comma-separated kinds (default: all).")
    def inference_cmd(as_json: bool, repeats: int, warmup: int, kinds: str | None) -> None:
        """Latency of one decision (batch 1, one torch thread) for every importable policy kind."""
        chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else None
        results = run_inference_bench(chosen, repeats, warmup)
        if as_json:
            click.echo(json.dumps({k: v["p50_ms"] for k, v in results.items() if "p50_ms" in v}, sort_keys=True))
            return
        click.echo(f"{'policy':<22}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
        for kind, r in results.items():
            if "skipped" in r:
                click.echo(f"{kind:<22}  skipped: {r['skipped']}")
            else:
                click.echo(f"{kind:<22}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['mean_ms']:>10.3f}")
