"""Orchestration of a PPO training run on prepared data: envs, policy, optional synthetic pre-training, training
with validation-based selection, final validation metrics, run directory and model bundle.

Used by ``himari train`` and by the walk-forward pipeline (pass ``init_policy`` to fine-tune from the previous
window's weights). Layout of ``out``::

    run.json, metrics.json, metrics.jsonl, checkpoints/, best_policy/, tensorboard/   (the main training)
    pretrain/  (synthetic pre-training run, when asked)    bundle/  (tactical pipelines + policy + sim config)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himari.agents.ppo.checkpoint import latest_checkpoint
from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.methods.assembly import training_env, training_methods
from himari.agents.ppo.methods.augment import AugmentSource
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
from himari.utils.tracking import training_callbacks


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


EVAL_CHUNKS = 8


def evaluation_env(market: MarketData, sim: SimConfig, eval_range: tuple[int, int],
                   chunks: int = EVAL_CHUNKS) -> SimVecEnv:
    """The checkpoint-selection environment over ``eval_range`` (validation bars): the range split into up to
    ``chunks`` contiguous episodes stepped together (each pays its bars once), so an evaluation costs about
    1/chunks of stepping the range bar by bar."""
    lo, hi = eval_range
    first = max(lo, sim.window - 1)
    n = max(1, min(chunks, (hi - 1 - first) // max(2, sim.episode_length // 8)))
    return SimVecEnv.for_evaluation(market, sim, lo, hi, num_envs=n)


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
    description: str, methods: list[Any] | None = None,
) -> TrainResult:
    trainer = PPOTrainer(
        policy, env, config, seed=seed, eval_env=eval_env, run_dir=run_dir, run_config=run_config,
        progress=progress, tensorboard=tensorboard, description=description, methods=methods or (),
        callbacks=training_callbacks(description),  # the active tracker's curves (himari.utils.tracking)
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
    augment_source: AugmentSource | None = None,
) -> tuple[PPOPolicy, TrainResult]:
    """The one PPO run assembly: environments on ``market`` (episodes inside ``train_range``), a fresh policy built
    from the PPO and policy settings, optional initial weights, training with checkpoint selection on ``eval_env``.

    ``init``: a policy to fine-tune from (its network weights; the observation normalizer is refitted on this run's
    data), or a network state dict (keys ``net.*``) of one. ``direction_policy``: a frozen L2 policy choosing the
    direction of this (L3, delta) policy's positions in training and evaluation (:class:`StackEnv`). ``himari
    train``, walk-forward windows, the full preset and synthetic pre-training all build their PPO runs here.

    Training methods (``ppo.curriculum / meta / augment / aux / adversarial / rare_events``,
    :mod:`himari.agents.ppo.methods`) are assembled here; ``augment_source`` (the bars and fitted pipelines the
    market was built from) is needed by augmentation and rare events only.
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
    env: Any
    env, real_env = training_env(market, sim, ppo, train_range, num_envs, seed, augment_source)
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
    if ppo.meta is not None:  # Reptile phase on sub-windows, then the main training with the rest of the budget
        from himari.agents.ppo.methods.reptile import meta_initialize

        if direction_policy is not None:
            raise ConfigError("ppo.meta (Reptile) is not available for a stack's L3 sizer (its tasks would run "
                              "without the L2 direction)")

        resuming = resume and run_dir is not None and latest_checkpoint(run_dir / "checkpoints") is not None
        if not resuming:  # a resumed run restores its weights from the checkpoint
            meta_initialize(policy, market, sim, ppo, train_range, num_envs, seed)
        ppo = ppo.replace(total_steps=max(1, ppo.total_steps - int(ppo.total_steps * ppo.meta.budget_fraction)))
    methods = training_methods(policy, env, real_env, ppo, seed)
    result = _train_stage(policy, env, ppo, seed, eval_env, run_dir, run_config or {}, resume, progress, tensorboard,
                          description or f"ppo {kind}", methods)
    return policy, result


STACK_L2_PPO_KINDS: tuple[str, ...] = ("mlp", "lstm", "transformer")  # discrete PPO kinds that can say the direction
STACK_L2_OFFLINE_KINDS: tuple[str, ...] = ("mlp-classifier", "cql", "dt")  # fitted on logged data first, then frozen
STACK_L2_KINDS: tuple[str, ...] = STACK_L2_PPO_KINDS + STACK_L2_OFFLINE_KINDS
STACK_L3_KINDS: tuple[str, ...] = ("sizer", "sizer-lstm")


def stack_kinds(policy_config: dict[str, Any] | None) -> tuple[str, str]:
    """(L2 kind, L3 kind) of a stack's ``policy_config`` (``direction_kind``, ``sizer_kind``; default mlp, sizer)."""
    cfg = policy_config or {}
    l2, l3 = cfg.get("direction_kind", "mlp"), cfg.get("sizer_kind", "sizer")
    if l2 not in STACK_L2_KINDS:
        raise ConfigError(f"stack: direction_kind {l2!r} is not an L2 kind; known: {', '.join(STACK_L2_KINDS)}")
    if l3 not in STACK_L3_KINDS:
        raise ConfigError(f"stack: sizer_kind {l3!r} is not an L3 kind; known: {', '.join(STACK_L3_KINDS)}")
    return l2, l3


def fit_stack(
    market: MarketData,
    sim: SimConfig,
    ppo: PPOConfig,
    *,
    train_range: tuple[int, int],
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    num_envs: int,
    eval_range: tuple[int, int] | None = None,
    policy_config: dict[str, Any] | None = None,
    init: StackPolicy | None = None,
    direction: Any = None,
    eval_market: MarketData | None = None,
    progress: bool | None = None,
    description: str = "stack",
    workers: int = 1,
    run_dir: Path | None = None,
    resume: bool = False,
) -> tuple[StackPolicy, dict[str, TrainResult]]:
    """The stacked policy, trained in order on the same simulator, costs, positioning and risk: the L2 direction
    policy (``policy_config["direction_kind"]``: a discrete PPO kind, MLP by default) on its own objective, then the
    L3 bounded-delta sizer with the L2 frozen choosing the direction. ``sim`` is the L3's (delta) simulator; the L2
    trains on the same with discrete actions. ``direction``: an already fitted L2 (an offline model, see
    :func:`fit_offline_direction`), kept frozen; only the L3 trains. ``eval_market``: the market of
    ``eval_range`` when training runs on another one (pooled training); default ``market``.

    ``workers``: processes training a layer's seeds in parallel (:func:`himari.utils.parallel.fork_map`).

    ``run_dir``: each layer's seed k checkpoints in ``run_dir/l2/s<k>`` and ``run_dir/l3/s<k>``; with ``resume`` an
    interrupted fit continues there (finished trainings are restored from their final checkpoint, the interrupted
    one from its last), giving the uninterrupted fit's weights.

    ``seeds``: K seeds per layer, ensembled (:func:`himari.agents.seed_ensemble.seed_ensemble`): the K L2 policies
    average their action probabilities, and the K L3 sizers train under that frozen L2 ensemble and average their
    deltas. ``init``: a previous stack to fine-tune both layers from (member k from member k)."""
    from himari.agents.seed_ensemble import ensemble_members, seed_ensemble

    if (seed is None) == (seeds is None):
        raise ConfigError("fit_stack: give seed or seeds")
    seed_list = [int(seed)] if seeds is None else [int(s) for s in seeds]
    cfg = policy_config or {}
    l2_kind, l3_kind = stack_kinds(cfg)
    d_sim = sim.replace(action_kind="discrete")
    evaluation = (lambda s: None) if eval_range is None else (
        lambda s: evaluation_env(market if eval_market is None else eval_market, s, eval_range))
    init_l2 = [] if init is None else ensemble_members(init.direction)
    init_l3 = [] if init is None else ensemble_members(init.sizer)
    from himari.utils.parallel import fork_map

    if direction is None and l2_kind not in STACK_L2_PPO_KINDS:
        raise ConfigError(f"stack: an offline L2 ({l2_kind}) is fitted first (fit_offline_direction) and passed "
                          "as direction=")

    def fit_direction(k: int) -> tuple[Any, TrainResult]:
        return fit_ppo(
            l2_kind, market, d_sim, ppo, train_range=train_range, seed=seed_list[k], num_envs=num_envs,
            eval_env=evaluation(d_sim), policy_config=cfg.get("direction"), progress=progress,
            init=init_l2[k % len(init_l2)] if init_l2 else None, description=f"{description}: L2 direction s{k}",
            run_dir=None if run_dir is None else Path(run_dir) / "l2" / f"s{k}", resume=resume,
        )

    # each seed is trained on its own (seeded): ``workers`` processes give the sequential results
    fitted = [] if direction is not None else fork_map(fit_direction, range(len(seed_list)), workers)
    d_results = [r for _, r in fitted]
    direction = seed_ensemble([d for d, _ in fitted]) if direction is None else direction

    def fit_sizer(k: int) -> tuple[Any, TrainResult]:
        return fit_ppo(
            l3_kind, market, sim, ppo, train_range=train_range, seed=seed_list[k], num_envs=num_envs,
            eval_env=evaluation(sim), policy_config=cfg.get("sizer"), progress=progress, direction_policy=direction,
            init=init_l3[k % len(init_l3)] if init_l3 else None, description=f"{description}: L3 sizer s{k}",
            run_dir=None if run_dir is None else Path(run_dir) / "l3" / f"s{k}", resume=resume,
        )

    fitted = fork_map(fit_sizer, range(len(seed_list)), workers)
    sizers, s_results = [z for z, _ in fitted], [r for _, r in fitted]
    return StackPolicy(direction, seed_ensemble(sizers)), {"direction": d_results[0] if d_results else None,
                                                           "sizer": s_results[0], "directions": d_results,
                                                           "sizers": s_results}


def fit_offline_direction(kind: str, bars: Sequence[Any], train_start: Any, train_end: Any, val_end: Any, steps: int,
                          seeds: Sequence[int], options: dict[str, Any] | None = None) -> Any:
    """The L2 of a stack as an offline model (supervised classifier or CQL) fitted on ``[train_start, train_end)``
    and selected on ``[train_end, val_end)`` by :func:`himari.training.offline.fit_offline`, one per seed,
    ensembled. Its tactical pipelines are fitted on the same bars and period as the stack's (same settings)."""
    from himari.agents.seed_ensemble import seed_ensemble
    from himari.training.offline import fit_offline

    if kind not in STACK_L2_OFFLINE_KINDS:
        raise ConfigError(f"stack: {kind!r} is not an offline L2 kind; known: {', '.join(STACK_L2_OFFLINE_KINDS)}")
    return seed_ensemble([fit_offline(kind, list(bars), train_start, train_end, val_end, steps, int(seed),
                                      dict(options or {})).policy for seed in seeds])


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
    resume: bool = False,
) -> PPORunResult:
    """``himari train --policy stack``: the L2 direction policy, then the L3 sizer with the L2 frozen, on the training
    window, each selected on the validation window; writes ``metrics.json`` and ``RUN/bundle``. The layers'
    trainings checkpoint in ``RUN/layers``; ``resume`` continues an interrupted run from there."""
    out_dir = Path(out)
    lo, hi = data.train_range
    sim = default_sim_config("stack", hi - lo, sim_overrides)
    ppo = PPOConfig.parse({"total_steps": steps, **(ppo_overrides or {})})
    has_validation = data.val_range[1] - data.val_range[0] > sim.window + 2
    direction = None
    l2_kind = stack_kinds(policy_config)[0]
    if l2_kind in STACK_L2_OFFLINE_KINDS:
        if data.val_end is None:
            raise ConfigError(f"stack: an offline L2 ({l2_kind}) needs a validation window (--val-end)")
        direction = fit_offline_direction(l2_kind, list(data.bars.values()), data.train_start, data.train_end,
                                          data.val_end, steps, [seed], (policy_config or {}).get("direction"))
        sim = sim.replace(window=max(sim.window, int(direction.window)))
    policy, stages = fit_stack(
        data.market, sim, ppo, train_range=(lo, hi), seed=seed, num_envs=num_envs,
        eval_range=data.val_range if has_validation else None, policy_config=policy_config, progress=progress,
        direction=direction, run_dir=out_dir / "layers", resume=resume,
    )
    metrics: dict[str, Any] = {
        "policy": "stack",
        "data": data.describe(),
        **{f"{name}_{k}": getattr(r, k) for name, r in stages.items() if name in ("direction", "sizer") and r is not None
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
            augment_source=AugmentSource([data.bars[s] for s in data.symbols], [data.pipelines[s] for s in data.symbols]),
        )
    metrics: dict[str, Any] = {
        "policy": kind,
        "global_step": result.global_step,
        "updates": result.updates,
        # speed of the last session that trained (a resumed finished run trains nothing and keeps the figure)
        "steps_per_s": result.steps_per_s if result.history else _previous_speed(out_dir),
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


def _previous_speed(out_dir: Path | None) -> float | None:
    path = None if out_dir is None else out_dir / "metrics.json"
    if path is None or not path.exists():
        return None
    from himari.utils.io import read_json

    value = read_json(path).get("steps_per_s")
    return float(value) if isinstance(value, int | float) else None


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
