"""Orchestration of a PPO training run on prepared data: envs, policy, optional synthetic pre-training, training
with validation-based selection, final validation metrics, run directory and model bundle.

Used by ``himari train`` and by the walk-forward pipeline (pass ``init_policy`` to fine-tune from the previous
window's weights). Layout of ``out``::

    run.json, metrics.json, metrics.jsonl, checkpoints/, best_policy/, tensorboard/   (the main training)
    pretrain/  (synthetic pre-training run, when asked)    bundle/  (tactical pipelines + policy + sim config)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himari.agents.ppo.checkpoint import latest_checkpoint
from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.networks import ObsSpec
from himari.agents.ppo.policies import PPOPolicy, make_policy
from himari.agents.ppo.trainer import PPOTrainer, TrainResult, evaluate_policy, transfer_weights
from himari.agents.registry import POLICY_KINDS, PPO_KINDS, STACK_KINDS
from himari.agents.stack import StackEnv, StackPolicy
from himari.agents.training import TrainingData, synthetic_market
from himari.env.market import MarketData
from himari.env.sim import SimConfig, SimVecEnv
from himari.errors import ConfigError
from himari.trading.bundle import Bundle, save_bundle
from himari.utils.io import atomic_write_json


def default_sim_config(kind: str, train_bars: int, overrides: dict[str, Any] | None = None) -> SimConfig:
    """The simulator settings a PPO run of ``kind`` trains with (costs and reward at the simulator's defaults)."""
    if kind not in PPO_KINDS + STACK_KINDS:
        raise ConfigError(f"unknown PPO policy kind {kind!r}; known: {', '.join(PPO_KINDS + STACK_KINDS)}")
    spec = POLICY_KINDS[kind]
    window = int((overrides or {}).get("window", spec.window))
    length = max(8, min(512, (train_bars - window) // 2))
    # the positioning layer and risk gates at their defaults unless overridden (``"sizing": None`` trains on raw
    # positions): the policy learns in the world it trades in
    base = {"action_kind": spec.action_kind, "window": window, "episode_length": length, "sizing": {}, "risk": {}}
    return SimConfig.parse({**base, **(overrides or {})})


@dataclass
class PPORunResult:
    policy: PPOPolicy
    sim_config: SimConfig
    train: TrainResult
    metrics: dict[str, Any]
    bundle_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _eval_env(data: TrainingData, sim: SimConfig, num_envs: int) -> tuple[SimVecEnv | None, int]:
    lo, hi = data.val_range
    if hi - lo < 2:
        return None, 0
    first = max(lo, sim.window - 1)
    n = max(1, min(num_envs, (hi - 1 - first) // 2))
    env = SimVecEnv.for_evaluation(data.market, sim, lo, hi, num_envs=n)
    steps = (hi - 1 - first) // n  # the shortest chunk: no episode is replayed
    return env, steps


def _train_stage(
    policy: PPOPolicy, env: SimVecEnv, config: PPOConfig, seed: int, eval_env: SimVecEnv | None,
    run_dir: Path | None, run_config: dict[str, Any], resume: bool, progress: bool | None, tensorboard: bool,
    description: str,
) -> TrainResult:
    trainer = PPOTrainer(
        policy, env, config, seed=seed, eval_env=eval_env, run_dir=run_dir, run_config=run_config,
        progress=progress, tensorboard=tensorboard, description=description,
    )
    has_checkpoint = run_dir is not None and latest_checkpoint(run_dir / "checkpoints") is not None
    return trainer.train(resume=resume and has_checkpoint)


def fit_ppo(
    kind: str,
    market: MarketData,
    sim: SimConfig,
    ppo: PPOConfig,
    *,
    train_range: tuple[int, int],
    seed: int,
    num_envs: int,
    eval_env: SimVecEnv | None = None,
    policy_config: dict[str, Any] | None = None,
    init: PPOPolicy | dict[str, Any] | None = None,
    direction_policy: Any = None,
    run_dir: Path | None = None,
    run_config: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool | None = None,
    tensorboard: bool = False,
    description: str = "",
) -> tuple[PPOPolicy, TrainResult]:
    """The one PPO run assembly: environments on ``market`` (episodes inside ``train_range``), a fresh policy built
    from the PPO and policy settings, optional initial weights, training with checkpoint selection on ``eval_env``.

    ``init``: a policy to fine-tune from (its network weights; the observation normalizer is refitted on this run's
    data), or a network state dict (keys ``net.*``) of one. ``direction_policy``: a frozen L2 policy choosing the
    direction of this (L3, delta) policy's positions in training and evaluation (:class:`StackEnv`). ``himari
    train``, walk-forward windows, the full preset and synthetic pre-training all build their PPO runs here.
    """
    if ppo.synthetic is not None:  # pre-training on a generator's market (PPOConfig.synthetic), then the real run
        from himari.training.synthetic import synthetic_source_market

        syn = synthetic_source_market(ppo.synthetic, market, train_range, seed)
        pre_steps = max(1, int(ppo.synthetic.steps_fraction * ppo.total_steps))
        init, _ = fit_ppo(kind, syn, sim, ppo.replace(total_steps=pre_steps, synthetic=None),
                          train_range=(0, syn.num_bars), seed=seed, num_envs=num_envs, policy_config=policy_config,
                          init=init, direction_policy=direction_policy, progress=progress, tensorboard=False,
                          description=f"{description or kind}: synthetic pre-training ({ppo.synthetic.method})")
        ppo = ppo.replace(synthetic=None)
    lo, hi = train_range
    env: Any = SimVecEnv(market, sim, num_envs, seed=seed, start_index=lo, end_index=hi)
    if direction_policy is not None:
        env = StackEnv(env, direction_policy)
        eval_env = None if eval_env is None else StackEnv(eval_env, direction_policy)
    policy = make_policy(kind, ObsSpec.from_env(env), policy_config or None, seed=seed,
                         normalize_observations=ppo.normalize_observations, obs_clip=ppo.obs_clip)
    if isinstance(init, PPOPolicy):
        transfer_weights(init, policy)
    elif init is not None:
        net_state = {k: v for k, v in init.items() if k.startswith("net.")}
        policy.module.load_state_dict({**policy.module.state_dict(), **net_state})
    result = _train_stage(policy, env, ppo, seed, eval_env, run_dir, run_config or {}, resume, progress, tensorboard,
                          description or f"ppo {kind}")
    return policy, result


def fit_stack(
    market: MarketData,
    sim: SimConfig,
    ppo: PPOConfig,
    *,
    train_range: tuple[int, int],
    seed: int,
    num_envs: int,
    eval_range: tuple[int, int] | None = None,
    policy_config: dict[str, Any] | None = None,
    init: StackPolicy | None = None,
    progress: bool | None = None,
    description: str = "stack",
) -> tuple[StackPolicy, dict[str, TrainResult]]:
    """The stacked policy, trained in order on the same simulator, costs, positioning and risk: the L2 direction
    policy (discrete MLP) on its own objective, then the L3 bounded-delta sizer with the L2 frozen choosing the
    direction. ``sim`` is the L3's (delta) simulator; the L2 trains on the same with discrete actions.
    ``init``: a previous stack to fine-tune both layers from."""
    cfg = policy_config or {}
    d_sim = sim.replace(action_kind="discrete")
    evaluation = (lambda s: None) if eval_range is None else (
        lambda s: SimVecEnv.for_evaluation(market, s, eval_range[0], eval_range[1], num_envs=1))
    direction, d_result = fit_ppo(
        "mlp", market, d_sim, ppo, train_range=train_range, seed=seed, num_envs=num_envs,
        eval_env=evaluation(d_sim), policy_config=cfg.get("direction"), progress=progress,
        init=None if init is None else init.direction, description=f"{description}: L2 direction",
    )
    sizer, s_result = fit_ppo(
        "sizer", market, sim, ppo, train_range=train_range, seed=seed, num_envs=num_envs,
        eval_env=evaluation(sim), policy_config=cfg.get("sizer"), progress=progress, direction_policy=direction,
        init=None if init is None else init.sizer, description=f"{description}: L3 sizer",
    )
    return StackPolicy(direction, sizer), {"direction": d_result, "sizer": s_result}


def train_stack(
    data: TrainingData,
    out: str | Path,
    *,
    steps: int,
    seed: int = 0,
    num_envs: int = 32,
    ppo_overrides: dict[str, Any] | None = None,
    policy_config: dict[str, Any] | None = None,
    sim_overrides: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> PPORunResult:
    """``himari train --policy stack``: the L2 direction policy, then the L3 sizer with the L2 frozen, on the training
    window, each selected on the validation window; writes ``metrics.json`` and ``RUN/bundle``."""
    out_dir = Path(out)
    lo, hi = data.train_range
    sim = default_sim_config("stack", hi - lo, sim_overrides)
    ppo = PPOConfig.parse({"total_steps": steps, **(ppo_overrides or {})})
    has_validation = data.val_range[1] - data.val_range[0] > sim.window + 2
    policy, stages = fit_stack(
        data.market, sim, ppo, train_range=(lo, hi), seed=seed, num_envs=num_envs,
        eval_range=data.val_range if has_validation else None, policy_config=policy_config, progress=progress,
    )
    metrics: dict[str, Any] = {
        "policy": "stack",
        "data": data.describe(),
        **{f"{name}_{k}": getattr(r, k) for name, r in stages.items()
           for k in ("global_step", "best_metric", "best_update", "steps_per_s")},
    }
    bundle = Bundle(
        symbols=data.symbols, timeframe=data.timeframe, tactical=data.pipelines, policy=policy,
        sim_config=sim.to_dict(),
        meta={"model_id": f"stack-seed{seed}", "trainer": "ppo-stack",
              "train_window": [str(data.train_start), str(data.train_end)],
              "validation_window": [str(data.train_end), None if data.val_end is None else str(data.val_end)]},
    )
    bundle_dir = save_bundle(out_dir / "bundle", bundle)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return PPORunResult(policy, sim, stages["sizer"], metrics, bundle_dir)  # type: ignore[arg-type]


def train_ppo(
    kind: str,
    data: TrainingData,
    out: str | Path | None,
    *,
    steps: int,
    seed: int = 0,
    resume: bool = False,
    num_envs: int = 32,
    eval_envs: int = 8,
    ppo_overrides: dict[str, Any] | None = None,
    policy_config: dict[str, Any] | None = None,
    sim_overrides: dict[str, Any] | None = None,
    pretrain_synthetic_steps: int = 0,
    synthetic_bars: int = 3000,
    init_policy: PPOPolicy | None = None,
    progress: bool | None = None,
    tensorboard: bool = True,
    write_bundle: bool = True,
) -> PPORunResult:
    """Train a PPO policy of ``kind`` on ``data`` (train window), selecting on the validation window."""
    out_dir = None if out is None else Path(out)
    lo, hi = data.train_range
    sim = default_sim_config(kind, hi - lo, sim_overrides)
    eval_env, eval_steps = _eval_env(data, sim, eval_envs)
    ppo_dict = {"total_steps": steps, **(ppo_overrides or {})}
    if eval_env is not None and "eval_steps" not in ppo_dict:
        ppo_dict["eval_steps"] = eval_steps
    ppo = PPOConfig.parse(ppo_dict)
    run_config = {"kind": kind, "sim": sim.to_dict(), "data": data.describe(), "num_envs": num_envs}
    extra: dict[str, Any] = {}
    if pretrain_synthetic_steps > 0:
        extra["synthetic_pretraining"] = _pretrain_and_compare(
            kind, data, sim, ppo, seed, num_envs, eval_env, out_dir, run_config, resume, progress,
            tensorboard, pretrain_synthetic_steps, synthetic_bars, policy_config, init_policy,
        )
        chosen = extra["synthetic_pretraining"]["chosen"]
        policy = extra["synthetic_pretraining"].pop("_policies")[chosen]
        result = extra["synthetic_pretraining"].pop("_results")[chosen]
    else:
        policy, result = fit_ppo(
            kind, data.market, sim, ppo, train_range=data.train_range, seed=seed, num_envs=num_envs,
            eval_env=eval_env, policy_config=policy_config, init=init_policy, run_dir=out_dir, run_config=run_config,
            resume=resume, progress=progress, tensorboard=tensorboard, description=f"ppo {kind}",
        )
    metrics: dict[str, Any] = {
        "policy": kind,
        "global_step": result.global_step,
        "updates": result.updates,
        "steps_per_s": result.steps_per_s,
        "best_val_mean_reward": result.best_metric,
        "best_update": result.best_update,
        "stopped_early": result.stopped_early,
        "train_last": {k: v for k, v in (result.history[-1] if result.history else {}).items() if isinstance(v, float)},
        "data": data.describe(),
    }
    if eval_env is not None:
        final = evaluate_policy(policy, eval_env, eval_steps, seed=seed)
        metrics["validation"] = {**final, "bars": data.val_range[1] - data.val_range[0], "envs": eval_env.num_envs}
    metrics.update({k: v for k, v in extra.items()})
    bundle_dir = None
    if out_dir is not None:
        if write_bundle:
            bundle = Bundle(
                symbols=data.symbols,
                timeframe=data.timeframe,
                tactical=data.pipelines,
                policy=policy,
                sim_config=sim.to_dict(),
                meta={
                    "model_id": f"ppo-{kind}-seed{seed}",
                    "trainer": "ppo",
                    "train_window": [str(data.train_start), str(data.train_end)],
                    "validation_window": [str(data.train_end), None if data.val_end is None else str(data.val_end)],
                    "best_val_mean_reward": result.best_metric,
                    "global_step": result.global_step,
                },
            )
            bundle_dir = save_bundle(out_dir / "bundle", bundle)
        atomic_write_json(out_dir / "metrics.json", metrics)
    return PPORunResult(policy, sim, result, metrics, bundle_dir, extra)


def _pretrain_and_compare(
    kind: str, data: TrainingData, sim: SimConfig, ppo: PPOConfig, seed: int, num_envs: int,
    eval_env: SimVecEnv | None, out_dir: Path | None, run_config: dict[str, Any], resume: bool,
    progress: bool | None, tensorboard: bool, pretrain_steps: int, synthetic_bars: int,
    policy_config: dict[str, Any] | None, init_policy: PPOPolicy | None,
) -> dict[str, Any]:
    """Synthetic pre-training -> fine-tuning, against training from scratch with the same real-data budget.

    Both candidates are selected and compared on the validation window only; the better one is kept.
    """
    if eval_env is None:
        raise ConfigError("--pretrain-synthetic needs a validation window (--val-end) to measure whether it helps")
    pipelines = [data.pipelines[s] for s in data.symbols]
    syn_market = synthetic_market(pipelines, max(synthetic_bars, sim.episode_length + sim.window + 2), seed)
    sub = (lambda name: None) if out_dir is None else (lambda name: out_dir / name)
    common = {"seed": seed, "num_envs": num_envs, "policy_config": policy_config, "resume": resume,
              "progress": progress, "tensorboard": tensorboard}
    pre, pre_result = fit_ppo(
        kind, syn_market, sim, ppo.replace(total_steps=pretrain_steps), train_range=(0, syn_market.num_bars),
        run_dir=sub("pretrain"), run_config={**run_config, "stage": "pretrain"},
        description=f"pretrain {kind} (synthetic)", **common,
    )
    fine, fine_result = fit_ppo(
        kind, data.market, sim, ppo, train_range=data.train_range, eval_env=eval_env, init=pre,
        run_dir=sub("finetune"), run_config={**run_config, "stage": "finetune"}, description=f"fine-tune {kind}",
        **common,
    )
    scratch, scratch_result = fit_ppo(
        kind, data.market, sim, ppo, train_range=data.train_range, eval_env=eval_env, init=init_policy,
        run_dir=out_dir, run_config={**run_config, "stage": "scratch"}, description=f"ppo {kind} (from scratch)",
        **common,
    )
    v_fine = fine_result.best_metric if fine_result.best_metric is not None else float("-inf")
    v_scratch = scratch_result.best_metric if scratch_result.best_metric is not None else float("-inf")
    chosen = "pretrained" if v_fine > v_scratch else "scratch"
    return {
        "pretrain_steps": pre_result.global_step,
        "synthetic_bars": syn_market.num_bars,
        "val_mean_reward_pretrained": fine_result.best_metric,
        "val_mean_reward_scratch": scratch_result.best_metric,
        "helps": bool(v_fine > v_scratch),
        "chosen": chosen,
        "_policies": {"pretrained": fine, "scratch": scratch},
        "_results": {"pretrained": fine_result, "scratch": scratch_result},
    }
