"""``himari bench ppo``: end-to-end PPO training throughput (env steps/s including updates).

Every contender trains on the same environment: the vectorized simulator over the bundled BTCUSDT hourly bars with
the simulator's basic causal features, one-bar observations, discrete HOLD/LONG/SHORT actions, default costs. HIMARI's
PPO drives :class:`~himari.env.sim.SimVecEnv` directly; Stable-Baselines3 PPO and sb3-contrib RecurrentPPO drive the
same simulator through its Gymnasium adapter (``himari.env.gym_env.HimariEnv``) in SB3's ``DummyVecEnv``, with the
same number of environments, rollout length, epochs and minibatches.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import click
import numpy as np

BENCH_NAMES = ("mlp", "cleanrl_ppo", "lstm", "transformer", "sb3_ppo", "sb3_recurrent_ppo")
RATIOS = (
    ("mlp", "cleanrl_ppo"), ("mlp", "sb3_ppo"), ("lstm", "sb3_recurrent_ppo"), ("transformer", "sb3_recurrent_ppo"),
)


@functools.cache
def bench_market() -> Any:
    from himari.data.loaders import load_bars
    from himari.env.market import MarketData

    return MarketData.from_frames([load_bars("BTCUSDT").between("2020-01-01", "2024-01-01")])


def _warm_up(num_envs: int) -> None:
    """Load the market and compile the simulator's kernels once, so no contender pays for it."""
    from himari.env.sim import SimVecEnv

    env = SimVecEnv(bench_market(), _sim_config(), num_envs, seed=0)
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.zeros((num_envs, 1), dtype=np.int64))


def _sim_config() -> Any:
    from himari.env.sim import SimConfig

    return SimConfig.parse({"window": 1, "episode_length": 512, "action_kind": "discrete"})


def himari_ppo_steps_per_s(
    kind: str, steps: int, num_envs: int, n_steps: int, seed: int = 0, device: str = "cpu"
) -> float:
    """Env steps/s of ``PPOTrainer.train`` for ``kind`` (rollouts + GAE + 4 epochs x 4 minibatches). On a GPU the
    rollout runs in the torch simulator on the device (:func:`himari.agents.ppo.device.make_training_env`)."""
    from himari.agents.ppo.config import PPOConfig
    from himari.agents.ppo.device import make_training_env
    from himari.agents.ppo.networks import ObsSpec
    from himari.agents.ppo.policies import make_policy
    from himari.agents.ppo.trainer import PPOTrainer

    market = bench_market()
    env = make_training_env(market, _sim_config(), num_envs, seed=seed, device=device)
    policy = make_policy(kind, ObsSpec.from_env(env), None, seed=seed)
    config = PPOConfig(total_steps=steps, n_steps=n_steps, checkpoint_every_updates=10_000, device=device)
    result = PPOTrainer(policy, env, config, seed=seed, progress=False, tensorboard=False).train()
    return float(result.global_step / result.wall_s)


def cleanrl_steps_per_s(steps: int, num_envs: int, n_steps: int, seed: int = 0, device: str = "cpu") -> float:
    """Env steps/s of the single-file CleanRL-style PPO (:mod:`himari.bench.cleanrl_ppo`) on the same simulator,
    network, number of environments, rollout length, epochs (4) and minibatches (4)."""
    from himari.bench.cleanrl_ppo import train_cleanrl_ppo
    from himari.env.sim import SimVecEnv

    env = SimVecEnv(bench_market(), _sim_config(), num_envs, seed=seed)
    taken, wall = train_cleanrl_ppo(env, steps, num_steps=n_steps, seed=seed, device=device)
    return float(taken / wall)


def sb3_steps_per_s(
    recurrent: bool, steps: int, num_envs: int, n_steps: int, seed: int = 0, device: str = "cpu"
) -> float:
    """Env steps/s of SB3 ``PPO`` / sb3-contrib ``RecurrentPPO`` ``learn`` on the same simulator."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from himari.env.gym_env import HimariEnv

    market = bench_market()
    sim = _sim_config()
    vec = DummyVecEnv([lambda: HimariEnv(market, sim) for _ in range(num_envs)])
    vec.seed(seed)
    batch = num_envs * n_steps
    common = {"n_steps": n_steps, "batch_size": max(1, batch // 4), "n_epochs": 4, "seed": seed, "verbose": 0,
              "device": device}
    if recurrent:
        from sb3_contrib import RecurrentPPO

        model = RecurrentPPO("MlpLstmPolicy", vec, **common)
    else:
        from stable_baselines3 import PPO

        model = PPO("MlpPolicy", vec, **common)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    return float(model.num_timesteps / elapsed)


def run_ppo_bench(
    steps: int = 200_000, sb3_steps: int = 8192, num_envs: int = 512, n_steps: int = 64,
    sb3_envs: int = 8, sb3_n_steps: int = 256, seed: int = 0, which: tuple[str, ...] = BENCH_NAMES,
    recurrent_steps: int | None = None, device: str = "cpu", rounds: int = 1,
) -> dict[str, float]:
    """Steps/s per contender. Recurrent and transformer policies get ``recurrent_steps`` (default steps // 4).
    ``device`` (``cpu``, ``cuda``, ``auto``) applies to every contender (SB3's ``device`` argument too).

    With ``rounds > 1`` every contender runs once per round, in the same order, and the figures are medians over
    rounds; each ratio is the median of the per-round ratios, so contenders are compared under the load of their
    own round (on a shared machine the load drifts over a run)."""
    from himari.agents.ppo.device import resolve_device
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    device = str(resolve_device(device))
    slow_steps = recurrent_steps or max(num_envs * n_steps, steps // 4)
    _warm_up(num_envs)
    per_round = [_one_round(which, steps, slow_steps, sb3_steps, num_envs, n_steps, sb3_envs, sb3_n_steps, seed,
                            device) for _ in range(max(1, rounds))]
    out = {name: float(np.median([r[name] for r in per_round])) for name in per_round[0]}
    for ours, theirs in RATIOS:
        if ours in out and theirs in out:
            out[f"{ours}_over_{theirs}"] = float(np.median([r[ours] / r[theirs] for r in per_round]))
    return out


def _one_round(which: tuple[str, ...], steps: int, slow_steps: int, sb3_steps: int, num_envs: int, n_steps: int,
               sb3_envs: int, sb3_n_steps: int, seed: int, device: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in which:
        if name in ("mlp", "lstm", "transformer"):
            budget = steps if name == "mlp" else slow_steps
            out[name] = himari_ppo_steps_per_s(name, budget, num_envs, n_steps, seed, device)
        elif name == "cleanrl_ppo":
            out[name] = cleanrl_steps_per_s(steps, num_envs, n_steps, seed, device)
        elif name in ("sb3_ppo", "sb3_recurrent_ppo"):
            recurrent = name == "sb3_recurrent_ppo"
            try:
                if recurrent:
                    out[name] = sb3_steps_per_s(True, max(sb3_envs * 128, sb3_steps // 4), sb3_envs, 128, seed, device)
                else:
                    out[name] = sb3_steps_per_s(False, sb3_steps, sb3_envs, sb3_n_steps, seed, device)
            except ImportError:  # optional extra `baselines` (stable-baselines3, sb3-contrib) not installed
                click.echo(f"{name}: skipped (pip install 'himari[baselines]')", err=True)
        else:
            raise click.BadParameter(f"unknown contender {name!r}; known: {', '.join(BENCH_NAMES)}")
    return out


def register_bench(group: click.Group) -> None:
    @group.command("ppo")
    @click.option("--steps", default=200_000, show_default=True, help="Env steps for the HIMARI MLP PPO run.")
    @click.option("--recurrent-steps", default=None, type=int, help="Env steps for LSTM/transformer (default steps/4).")
    @click.option("--sb3-steps", default=8192, show_default=True, help="Env steps for SB3 PPO (RecurrentPPO: 1/4).")
    @click.option("--num-envs", default=512, show_default=True, help="Parallel episodes for HIMARI's PPO.")
    @click.option("--n-steps", default=64, show_default=True, help="Rollout length for HIMARI's PPO.")
    @click.option("--sb3-envs", default=8, show_default=True, help="DummyVecEnv size for SB3.")
    @click.option("--only", multiple=True, type=click.Choice(BENCH_NAMES), help="Run only these contenders.")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--rounds", default=1, show_default=True,
                  help="Run every contender this many times; report medians (ratios: median of per-round ratios).")
    @click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
                  help="Where every contender trains; cuda: HIMARI rolls out in the torch simulator on the GPU "
                  "(skipped cleanly when no GPU is present).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object {name: steps/s}.")
    def ppo_bench(steps: int, recurrent_steps: int | None, sb3_steps: int, num_envs: int, n_steps: int,
                  sb3_envs: int, only: tuple[str, ...], seed: int, rounds: int, device: str, as_json: bool) -> None:
        """End-to-end training throughput (env steps/s incl. updates): HIMARI PPO (mlp, lstm, transformer) vs a
        single-file CleanRL-style PPO, Stable-Baselines3 PPO and sb3-contrib RecurrentPPO on the same simulator."""
        import torch

        from himari.utils.io import to_json

        if device == "cuda" and not torch.cuda.is_available():
            click.echo("bench ppo --device cuda: skipped (no CUDA GPU available: torch.cuda.is_available() is False)")
            return
        res = run_ppo_bench(steps, sb3_steps, num_envs, n_steps, sb3_envs, seed=seed, which=only or BENCH_NAMES,
                            recurrent_steps=recurrent_steps, device=device, rounds=rounds)
        if as_json:
            click.echo(to_json(res, indent=None))
            return
        for name, value in res.items():
            unit = "x" if "_over_" in name else "env steps/s"
            click.echo(f"{name:<36} {value:>12,.2f} {unit}")
