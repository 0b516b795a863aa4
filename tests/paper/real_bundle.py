"""A small but real bundle for integration tests: a fitted tactical pipeline (features, normalizers, Student-t HMM)
on BTCUSDT and an untrained, seeded MLP PPO policy, saved with ``save_bundle`` (JSON + safetensors, no pickle).
The policy's weights are random: these tests check plumbing and equality of code paths, not trading skill."""

from __future__ import annotations

from pathlib import Path

from himari.agents.ppo.networks import ObsSpec
from himari.agents.ppo.policies import MLPPolicy
from himari.data.loaders import load_bars
from himari.env.protocol import ACCOUNT_FIELDS
from himari.env.sim import SimConfig
from himari.regime.labeller import LabellerConfig
from himari.tactical.pipeline import TacticalConfig, TacticalPipeline
from himari.trading.bundle import Bundle, save_bundle

FIT_START, FIT_END = "2022-01-01", "2022-03-01"


def build_mlp_bundle(run: Path, seed: int = 0, model_id: str = "mlp-test") -> Path:
    bars = load_bars("BTCUSDT").between(FIT_START, FIT_END)
    config = TacticalConfig(percentile_window=200, percentile_min_periods=100, hmm_em_iters=5,
                            labeller=LabellerConfig(pct_window=300, pct_min_periods=100))
    pipeline = TacticalPipeline(config).fit(bars, FIT_START, FIT_END)
    n_features = pipeline.transform(bars.head(400)).features.shape[1]
    sim = SimConfig(window=16)
    policy = MLPPolicy(ObsSpec(sim.window, 1, n_features, 4, len(ACCOUNT_FIELDS)), {}, seed=seed)
    bundle = Bundle(symbols=("BTCUSDT",), timeframe="1h", tactical={"BTCUSDT": pipeline}, policy=policy,
                    sim_config=sim.to_dict(), meta={"model_id": model_id, "model_version": f"seed{seed}"})
    save_bundle(run / "bundle", bundle)
    return run
