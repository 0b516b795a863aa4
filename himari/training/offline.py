"""Training entry points of the offline models: ``train_offline`` (run directory), ``fit_offline`` (in memory, e.g.
per walk-forward window) and ``train_ensemble`` (combine trained runs).

Steps (all fits on the training window ``[train_start, train_end)``; selection on ``[train_end, val_end)`` only):

1. ``himari.agents.training.prepare_training_data``: load bars up to ``val_end`` (nothing later), fit one
   tactical pipeline per symbol on the training window, transform causally.
2. Label-trained kinds (``mlp-classifier``, ``flag-trader``): forward-return labels with a cost-derived threshold
   (the simulator's fees and slippage), purged and embargoed chronological splits; the checkpoint (the untrained
   model included) with the best validation log-loss is kept.
3. RL kinds (``cql``, ``dt``, ``cgdt``): offline trajectories collected in the simulator (costs on) on the training
   window by rule behaviour policies (MA crossover, momentum, random) and, when given, a trained discrete policy;
   the checkpoint with the best validation-window simulator net return is kept.
   Both families train through the shared loop (``himari.agents.offline.loop``: one gradient-clipping setting,
   validation-only selection, atomic checkpoints under ``RUN/checkpoints``, exact resume).
4. The bundle is written (``RUN/bundle``, ``himari.trading.bundle.save_bundle``: backtest, serve and paper run it like any
   PPO policy). Only then is the later test period ``[val_end, test_end)`` read, for the report: classification
   metrics beside the majority-class baseline and simulator net log-return beside always-long, on validation and
   test (``RUN/metrics.json``). Nothing from the test period is used for fitting or selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from himari.agents.offline.datasets import (
    LabelConfig,
    SupervisedData,
    TrajectoryData,
    build_supervised,
    collect_trajectories,
)
from himari.agents.offline.evaluate import evaluate_policy
from himari.agents.offline.loop import LoopConfig, fit
from himari.agents.registry import OFFLINE_KINDS
from himari.data.bars import Bars, to_utc_timestamp
from himari.env.protocol import ACCOUNT_FIELDS, LONG, Observation
from himari.errors import ConfigError, DataError, RunDirError
from himari.trading.bundle import Bundle, save_bundle
from himari.utils.io import atomic_write_json, read_json
from himari.utils.progress import progress_bar
from himari.utils.rundir import create_run_dir
from himari.utils.threads import configure_torch_threads

LABEL_KINDS = ("mlp-classifier", "flag-trader")  # trained on forward-return labels, selected by validation log-loss
RL_KINDS = ("cql", "dt", "cgdt")  # trained on simulator trajectories, selected by validation simulator return
DEFAULT_STEPS: dict[str, int] = {  # training samples processed when none are given
    "mlp-classifier": 2000,
    "cql": 3000,
    "dt": 1500,
    "cgdt": 1500,
    "flag-trader": 800,
}
LOOP_OPTION_KEYS = frozenset({"grad_clip", "patience", "device"})  # the rest of LoopConfig is derived


def supervised_for_symbols(
    bars_by_symbol: dict[str, Bars],
    frames: dict[str, Any],
    label_cfg: LabelConfig,
    boundaries: Sequence[Any],
    split_names: Sequence[str],
) -> SupervisedData:
    """Supervised samples of every symbol, pooled (windows never cross symbols: each symbol's first rows are warm-up)."""
    bounds_ns = [int(to_utc_timestamp(b).value) for b in boundaries]  # type: ignore[union-attr]
    parts = []
    for symbol, bars in bars_by_symbol.items():
        frame = frames[symbol]
        pos = np.searchsorted(bars.timestamps_ns, frame.timestamps_ns)
        if not np.array_equal(bars.timestamps_ns[np.minimum(pos, len(bars) - 1)], frame.timestamps_ns):
            raise DataError(f"{symbol}: tactical frame timestamps do not match the bars")
        parts.append(
            build_supervised(
                frame.features,
                frame.regime_posterior,
                frame.valid,
                frame.timestamps_ns,
                bars.open[pos],
                bars.close[pos],
                bars.segment_id[pos],
                label_cfg,
                bounds_ns,
                split_names,
            )
        )
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [p.inputs.shape[0] for p in parts[:-1]])
    first = parts[0]
    return SupervisedData(
        inputs=np.concatenate([p.inputs for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        forward_return=np.concatenate([p.forward_return for p in parts]),
        label_end=np.concatenate([p.label_end + o for p, o in zip(parts, offsets, strict=True)]),
        timestamps_ns=np.concatenate([p.timestamps_ns for p in parts]),
        window=first.window,
        n_features=first.n_features,
        splits={
            k: np.concatenate([p.splits[k] + o for p, o in zip(parts, offsets, strict=True)])
            for k in first.splits
        },
        info=first.info,
    )


# ------------------------------------------------------------------------------------------------------------
# Simulator helpers


@dataclass
class SymbolMarket:
    """One symbol's simulator market with the bar ranges of its training / validation / test windows."""

    symbol: str
    market: Any  # himari.env.market.MarketData (single asset)
    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int] = (0, 0)


def symbol_markets(
    bars_by_symbol: dict[str, Bars], frames: dict[str, Any], times: Sequence[pd.Timestamp]
) -> list[SymbolMarket]:
    """Single-asset markets per symbol (offline trajectories are per asset) with window bar ranges."""
    from himari.env.market import MarketData

    out = []
    for symbol, bars in bars_by_symbol.items():
        market = MarketData.from_frames([bars], [frames[symbol]])
        idx = [market.index_of(t) for t in times]
        ranges = [(idx[k], idx[k + 1]) for k in range(len(idx) - 1)]
        out.append(SymbolMarket(symbol, market, *ranges))
    return out


def rollout_return(
    policy: Any, market: Any, sim_config: Any, start: int, end: int, num_envs: int = 8
) -> dict[str, Any]:
    """Greedy policy over ``[start, end)`` as ``num_envs`` contiguous deterministic episodes (simulator, costs on).

    Returns the total net log return (the chunks together trade the period once), the number of decisions and the
    fraction of HOLD/LONG/SHORT actions.
    """
    from himari.env.sim import SimVecEnv

    env = SimVecEnv.for_evaluation(market, sim_config, start, end, num_envs=num_envs)
    obs = env.reset()
    state = policy.initial_state(num_envs)
    finished = np.zeros(num_envs, bool)
    total = np.zeros(num_envs)
    counts = np.zeros(3)
    eq_idx = ACCOUNT_FIELDS.index("equity_log")
    for _ in range(end - start):  # an upper bound: every chunk is shorter
        out, state = policy.act(obs, state, deterministic=True)
        action = np.asarray(out.action, np.int64).reshape(num_envs, -1)
        result = env.step(action)
        live = ~finished
        counts += np.bincount(action[live, 0], minlength=3)
        done = np.asarray(result.terminated) | np.asarray(result.truncated)
        total = np.where(live & done, result.final_obs.account[:, 0, eq_idx], total)
        finished |= done
        if finished.all():
            break
        obs = result.obs
    return {
        "net_log_return": float(total.sum()),
        "decisions": int(counts.sum()),
        "action_fractions": (counts / max(counts.sum(), 1)).tolist(),
    }


class ConstantPolicy:
    """Always the same discrete action (LONG: the always-long comparator in the same simulator)."""

    action_kind = "discrete"
    window = 1
    n_assets = 1

    def __init__(self, action: int) -> None:
        self.kind = f"constant-{action}"
        self.action = action

    def initial_state(self, n: int) -> None:
        return None

    def reset_state(self, state: Any, done: np.ndarray) -> None:
        return None

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[Any, Any]:
        from himari.agents.base import PolicyOutput

        n, _, a, _ = obs.features.shape
        probs = np.zeros((n, a, 3), np.float32)
        probs[..., self.action] = 1.0
        return PolicyOutput(action=np.full((n, a), self.action, np.int64), action_probs=probs), None


# ------------------------------------------------------------------------------------------------------------


def build_policy(
    kind: str, n_inputs: int, state_dim: int, model_options: dict[str, Any], window: int, seed: int
) -> Any:
    """A fresh policy of ``kind`` (config fields from ``model_options``)."""
    opts = dict(model_options)
    if kind == "mlp-classifier":
        from himari.agents.offline.classifier import ClassifierConfig, ClassifierPolicy

        opts.setdefault("window", window)
        return ClassifierPolicy(ClassifierConfig.parse(opts, n_inputs=n_inputs, seed=seed))
    if kind == "flag-trader":
        from himari.agents.offline.flag_trader import FlagTraderConfig, FlagTraderPolicy

        opts.setdefault("context", window)
        opts.setdefault("n_positions", max(64, int(opts["context"])))
        return FlagTraderPolicy.create(FlagTraderConfig.parse(opts, n_inputs=n_inputs, seed=seed))
    if kind == "cql":
        from himari.agents.offline.cql import CQLConfig, CQLPolicy

        return CQLPolicy(CQLConfig.parse(opts, state_dim=state_dim, seed=seed))
    if kind == "dt":
        from himari.agents.offline.decision_transformer import DecisionTransformerPolicy, DTConfig

        return DecisionTransformerPolicy(DTConfig.parse(opts, state_dim=state_dim, seed=seed))
    if kind == "cgdt":
        from himari.agents.offline.decision_transformer import CGDTConfig, CriticGuidedDTPolicy

        return CriticGuidedDTPolicy(CGDTConfig.parse(opts, state_dim=state_dim, seed=seed))
    raise ConfigError(f"unknown offline policy kind {kind!r}; known: {', '.join(OFFLINE_KINDS)}")


def behaviour_policies(
    frame: Any, train: tuple[int, int], seed: int, behaviour_policy: str | None
) -> list[Any]:
    """Rule behaviours (signal centres = training-window medians) plus an optional trained discrete policy."""
    from himari.agents.rules import default_behaviours

    in_train = np.asarray(frame.valid, bool).copy()
    in_train[: train[0]] = False
    in_train[train[1] :] = False
    medians = (
        np.median(frame.features[in_train], axis=0) if in_train.any() else np.zeros(frame.features.shape[1])
    )
    centers = {name: float(m) for name, m in zip(frame.feature_names, medians, strict=True)}
    policies: list[Any] = default_behaviours(frame.feature_names, centers, seed)
    if behaviour_policy:
        from himari.agents.registry import load_policy
        from himari.trading.bundle import find_bundle_dir

        path = Path(behaviour_policy)
        if (path / "bundle.json").exists() or (path / "bundle" / "bundle.json").exists():
            path = find_bundle_dir(path) / "policy"
        trained = load_policy(path)
        if trained.action_kind != "discrete":
            raise ConfigError(f"behaviour policy {behaviour_policy}: {trained.kind} is not discrete")
        policies.append(trained)
    return policies


def collect_offline_data(
    markets: list[SymbolMarket],
    frames: dict[str, Any],
    sim_config: Any,
    num_envs: int,
    collect_steps: int,
    epsilon: float,
    seed: int,
    behaviour_policy: str | None,
) -> TrajectoryData:
    """Trajectories on every symbol's training window (streams of all symbols side by side)."""
    from himari.env.sim import SimVecEnv

    parts = []
    for k, sm in enumerate(markets):
        lo, hi = sm.train
        length = min(sim_config.episode_length, max(16, (hi - lo - sim_config.window) // 4))
        env = SimVecEnv(
            sm.market,
            sim_config.replace(episode_length=length),
            num_envs,
            seed=seed + k,
            start_index=lo,
            end_index=hi,
        )
        frame_idx = (lo, hi)  # frames and single-asset markets share the time axis of the symbol's bars
        behaviours = behaviour_policies(frames[sm.symbol], frame_idx, seed + 100 * k, behaviour_policy)
        parts.append(collect_trajectories(env, behaviours, collect_steps, seed + k, epsilon=epsilon))
    if len(parts) == 1:
        return parts[0]
    fields = (
        "states",
        "actions",
        "rewards",
        "next_states",
        "terminated",
        "truncated",
        "returns_to_go",
        "episode_step",
    )
    joined = {f: np.concatenate([getattr(p, f) for p in parts], axis=1) for f in fields}
    return TrajectoryData(**joined, behaviour=sum((p.behaviour for p in parts), ()), gamma=parts[0].gamma)


OPTION_KEYS = frozenset(
    {"labels", "model", "sim", "tactical", "loop", "num_envs", "collect_steps", "epsilon", "behaviour_policy",
     "evaluations", "test"}
)


@dataclass
class OfflineFit:
    """A trained offline model with what its report needs (see :func:`fit_offline`)."""

    policy: Any
    bundle: Bundle
    summary: dict[str, Any]
    supervised: SupervisedData  # train + validation splits (nothing at or after val_end)
    markets: list[SymbolMarket]
    sim_config: Any
    label_config: LabelConfig
    data: Any  # himari.agents.training.TrainingData


def validate_options(policy_kind: str, options: dict[str, Any] | None) -> None:
    """Check an offline run's options (unknown keys, loop settings, simulator and label configs) before any work."""
    _resolve_options(policy_kind, None, options)


def _resolve_options(policy_kind: str, steps: int | None, options: dict[str, Any] | None
                     ) -> tuple[dict[str, Any], int, Any, LabelConfig]:
    from himari.env.sim import SimConfig

    if policy_kind not in OFFLINE_KINDS:
        raise ConfigError(f"unknown offline policy kind {policy_kind!r}; known: {', '.join(OFFLINE_KINDS)}")
    opts = dict(options or {})
    unknown = set(opts) - OPTION_KEYS
    if unknown:
        raise ConfigError(f"train_offline: unknown options {sorted(unknown)}; known: {', '.join(sorted(OPTION_KEYS))}")
    loop_options = opts.get("loop", {})
    if not isinstance(loop_options, dict):
        raise ConfigError(f"options.loop must be a mapping of {', '.join(sorted(LOOP_OPTION_KEYS))}")
    bad = sorted(set(loop_options) - LOOP_OPTION_KEYS)
    if bad:
        raise ConfigError(f"options.loop: unknown or derived key {bad[0]!r}; settable: "
                          f"{', '.join(sorted(LOOP_OPTION_KEYS))} (steps from --steps, lr / batch_size / weight_decay "
                          "from options.model, seed from --seed, eval cadence from options.evaluations)")
    LoopConfig.parse(loop_options, steps=1)  # range-check before any data is read
    samples = int(steps) if steps is not None else DEFAULT_STEPS[policy_kind]
    if samples < 1:
        raise ConfigError(f"steps must be >= 1, got {samples}")
    sim_config = SimConfig.parse(opts.get("sim", {}))
    if sim_config.action_kind != "discrete":
        raise ConfigError("offline models are discrete: sim.action_kind must be 'discrete'")
    costs = sim_config.costs
    labels = dict(opts.get("labels", {}))
    model_window = (opts.get("model") or {}).get("window") if policy_kind == "mlp-classifier" else None
    if model_window is not None:
        # the classifier reads the bars its labels' inputs were built from: one window for both
        if "window" in labels and labels["window"] != model_window:
            raise ConfigError(f"options.model.window ({model_window}) and options.labels.window ({labels['window']}) "
                              "differ: the classifier's inputs are the labels' window; give one of them")
        labels["window"] = model_window
    label_cfg = LabelConfig.parse({"fee_bps": costs.fee_rate * 1e4, "slippage_bps": costs.slippage_bps, **labels})
    return opts, samples, sim_config, label_cfg


def _windows(train_start: Any, train_end: Any, val_end: Any) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    t0, t1, t2 = (to_utc_timestamp(x) for x in (train_start, train_end, val_end))
    if t0 is None or t1 is None or t2 is None or not t0 < t1 < t2:
        raise ConfigError(f"need train_start < train_end < val_end, got {train_start}, {train_end}, {val_end}")
    return t0, t1, t2


def fit_offline(
    policy_kind: str,
    data_specs: Sequence[Any] | str,
    train_start: Any,
    train_end: Any,
    val_end: Any,
    steps: int | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    sizing_config: dict[str, Any] | None = None,
    risk_config: dict[str, Any] | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> OfflineFit:
    """Fit ``policy_kind`` in memory (no files unless ``checkpoint_dir``): the core of :func:`train_offline`, usable
    per walk-forward window.

    Loads nothing at or after ``val_end`` (``himari.agents.training.prepare_training_data``): the tactical
    pipelines and the model are fitted on ``[train_start, train_end)``, the model is selected on
    ``[train_end, val_end)``. Returns the policy and a :class:`~himari.trading.bundle.Bundle` ready for the backtester.
    Training runs through the shared loop (``himari.agents.offline.loop``); with ``checkpoint_dir`` it writes
    checkpoints there and, with ``resume``, continues from the latest one (same weights as an uninterrupted fit).
    """
    from himari.agents.training import prepare_training_data

    configure_torch_threads()
    opts, samples, sim_config, label_cfg = _resolve_options(policy_kind, steps, options)
    t0, t1, t2 = _windows(train_start, train_end, val_end)
    specs = [data_specs] if isinstance(data_specs, str | Path | Bars) else list(data_specs)
    num_envs = int(opts.get("num_envs", 16))
    prep = prepare_training_data(specs, t0, t1, t2, opts.get("tactical"))
    supervised = supervised_for_symbols(prep.bars, prep.frames, label_cfg, [t0, t1, t2], ("train", "validation"))
    n_inputs = supervised.inputs.shape[1]
    policy = build_policy(policy_kind, n_inputs, n_inputs + len(ACCOUNT_FIELDS), opts.get("model", {}),
                          label_cfg.window, seed)
    sim_config = sim_config.replace(window=max(sim_config.window, int(policy.window)))
    markets = symbol_markets(prep.bars, prep.frames, [t0, t1, t2])
    cfg = policy.config
    per_sample = int(cfg.context) if policy_kind in ("dt", "cgdt") else 1
    updates = max(1, -(-samples // (int(cfg.batch_size) * per_sample)))
    evaluations = max(1, int(opts.get("evaluations", 8 if policy_kind in LABEL_KINDS else 4)))
    loop = LoopConfig.parse(opts.get("loop", {}), steps=updates, batch_size=cfg.batch_size, lr=cfg.lr,
                            weight_decay=getattr(cfg, "weight_decay", 0.0), eval_every=max(1, -(-updates // evaluations)),
                            seed=seed)
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None

    def select() -> float:
        """Validation-window simulator net log return, averaged over symbols (selection only uses this)."""
        return float(np.mean([rollout_return(policy, sm.market, sim_config, *sm.validation)["net_log_return"]
                              for sm in markets]))

    summary: dict[str, Any] = {"updates": updates, "batch_size": loop.batch_size, "samples": samples,
                               "loop": loop.to_dict()}
    with progress_bar(f"train {policy_kind}", total=updates) as bar:

        def on_step(step: int, loss: float) -> None:
            bar.advance(1, info=f"loss={loss:.4f}")

        if policy_kind in LABEL_KINDS:
            from himari.agents.offline.supervised import SupervisedAlgorithm

            algorithm = SupervisedAlgorithm(policy, supervised, balanced=cfg.balanced_classes)
            result = fit(algorithm, loop, root, resume, on_step)
            result["best_val_log_loss"] = None if result["best_val_score"] is None else -result["best_val_score"]
            summary.update(result)
        else:
            collect_steps = int(opts.get("collect_steps", min(2048, max(64, samples // num_envs))))
            trajectories = collect_offline_data(markets, prep.frames, sim_config, num_envs, collect_steps,
                                                float(opts.get("epsilon", 0.1)), seed, opts.get("behaviour_policy"))
            summary["dataset"] = {
                "transitions": trajectories.n_transitions,
                "action_counts": trajectories.action_counts().tolist(),
                "behaviours": sorted(set(trajectories.behaviour)),
                "mean_reward_per_step": float(trajectories.rewards.mean()),
            }
            if policy_kind == "cql":
                from himari.agents.offline.cql import CQLAlgorithm

                summary.update(fit(CQLAlgorithm(policy.net, trajectories.flat(), cfg, select), loop, root, resume,
                                   on_step))
            else:
                from himari.agents.offline.decision_transformer import train_decision_transformer

                summary.update(train_decision_transformer(policy, trajectories, loop, select, root, resume, on_step))
    policy.meta = {"trained_on": list(prep.symbols), "train_window": [str(t0), str(t1)], "val_end": str(t2),
                   "seed": seed}
    bundle = Bundle(
        symbols=prep.symbols,
        timeframe=prep.timeframe,
        tactical=prep.pipelines,
        policy=policy,
        sim_config=sim_config.to_dict(),
        sizing_config=dict(sizing_config or {}),
        risk_config=dict(risk_config or {}),
        meta={
            "model_id": f"{policy_kind}-s{seed}",
            "train_start": str(t0),
            "train_end": str(t1),
            "val_end": str(t2),
            "selection": "validation simulator return" if policy_kind in RL_KINDS else "validation log-loss",
            "updates": updates,
        },
    )
    return OfflineFit(policy, bundle, summary, supervised, markets, sim_config, label_cfg, prep)


def train_offline(
    policy_kind: str,
    data_specs: Sequence[Any] | str,
    out: str | Path,
    train_start: Any,
    train_end: Any,
    val_end: Any,
    steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    *,
    test_end: Any = None,
    options: dict[str, Any] | None = None,
) -> Path:
    """Train ``policy_kind`` (one of ``OFFLINE_KINDS``) and write the run directory ``out``; returns its path.

    ``steps``: training samples processed (None: the kind's default): gradient updates = ceil(steps / (batch_size
    x actions per sample)), one action per sample except the Decision Transformers (``context`` actions).
    RL kinds collect ``num_envs x collect_steps`` transitions, ``collect_steps = clip(steps // num_envs, 64, 2048)``
    unless given. ``options`` (all optional): ``labels`` (LabelConfig fields), ``model`` (the kind's config fields),
    ``sim`` (SimConfig fields), ``tactical`` (TacticalConfig fields), ``num_envs`` (16), ``collect_steps``,
    ``epsilon`` (0.1), ``behaviour_policy`` (a run or policy directory of a trained discrete policy),
    ``evaluations`` (validation checkpoints: 8 for label kinds, 4 for RL kinds), ``test`` (True: after training, report on
    ``[val_end, test_end)``, by default as long as the validation window, clipped to the data).
    ``loop`` (``grad_clip`` 1.0, ``patience`` None, ``device`` "cpu" | "cuda" | "auto": the settings of
    :class:`~himari.agents.offline.loop.LoopConfig` not derived from the budget and the model config).
    ``resume``: a finished run in ``out`` with the same configuration is returned as is; an unfinished one continues
    from its last checkpoint (``RUN/checkpoints``) and ends with the same weights as an uninterrupted run; a
    different configuration is an error.
    """
    from himari.config import config_hash

    opts, samples, sim_config, label_cfg = _resolve_options(policy_kind, steps, options)
    t0, t1, t2 = _windows(train_start, train_end, val_end)
    t3 = to_utc_timestamp(test_end) if test_end is not None else t2 + (t2 - t1)
    if t3 is None or t3 <= t2:
        raise ConfigError(f"test_end {test_end} must be after val_end {t2}")
    specs = [data_specs] if isinstance(data_specs, str | Path | Bars) else list(data_specs)
    run_config = {
        "policy_kind": policy_kind,
        "steps": samples,
        "train_start": str(t0),
        "train_end": str(t1),
        "val_end": str(t2),
        "test_end": str(t3),
        "labels": label_cfg.to_dict(),
        "sim": sim_config.to_dict(),
        "options": {k: v for k, v in opts.items() if k not in ("labels", "sim")},
        "data": [s.symbol if isinstance(s, Bars) else str(s) for s in specs],
    }
    run = Path(out)
    command = f"train --policy {policy_kind}"
    if (run / "run.json").exists():
        previous = read_json(run / "run.json")
        if not resume:
            raise RunDirError(f"{run}: already holds a run; use --resume to continue it or choose a new --out")
        if previous.get("config_hash") != config_hash(run_config) or previous.get("seed") != seed:
            raise RunDirError(f"{run}: --resume with a different config than the existing run")
        if (run / "metrics.json").exists() and (run / "bundle" / "bundle.json").exists():
            return run
    else:
        create_run_dir(run, command, run_config, seed)  # marks the directory before the first checkpoint
    fitted = fit_offline(policy_kind, specs, t0, t1, t2, samples, seed, opts, checkpoint_dir=run / "checkpoints",
                      resume=resume)
    run = create_run_dir(out, command, run_config, seed, {s: p for s, p in fitted.data.data_files.items()},
                         extra={"data_summary": fitted.data.describe()})
    fitted.bundle.meta["model_id"] = f"{policy_kind}-{config_hash(run_config)}"
    save_bundle(run / "bundle", fitted.bundle)  # the model is final before anything after val_end is read
    metrics: dict[str, Any] = {
        "policy_kind": policy_kind,
        "classification": {
            "validation": evaluate_policy(fitted.policy, fitted.supervised, ("validation",))["validation"],
            "train_class_counts": fitted.supervised.class_counts("train").tolist(),
        },
        "simulator": {"validation": _trading(fitted.policy, fitted.markets, fitted.sim_config, "validation")},
        "training": {k: v for k, v in fitted.summary.items() if not k.endswith("history")},
        "training_history": fitted.summary.get("history", []),
        "windows": {"train": [str(t0), str(t1)], "validation": [str(t1), str(t2)], "test": [str(t2), str(t3)]},
        "notes": (
            "Fitting on train, selection on validation only; the test period is read only after the bundle "
            "is saved and is reported, never used. Simulator returns are net of fees and slippage, without "
            "the sizing/risk layer (the backtester adds those)."
        ),
    }
    if opts.get("test", True):
        metrics.update(_test_report(fitted.policy, specs, fitted.data, label_cfg, fitted.sim_config, (t0, t1, t2, t3)))
    atomic_write_json(run / "metrics.json", metrics)
    return run


def _trading(policy: Any, markets: list[SymbolMarket], sim_config: Any, window: str) -> dict[str, Any]:
    """Net log return of the model and of always-long over a window, averaged over symbols."""
    out: dict[str, Any] = {}
    for label, candidate in (("model", policy), ("always_long", ConstantPolicy(LONG))):
        results = [
            rollout_return(candidate, sm.market, sim_config, *getattr(sm, window))
            for sm in markets
            if getattr(sm, window)[1] - getattr(sm, window)[0] > sim_config.window + 8
        ]
        if results:
            out[label] = {
                "net_log_return": float(np.mean([r["net_log_return"] for r in results])),
                "action_fractions": np.mean([r["action_fractions"] for r in results], axis=0).tolist(),
            }
    return out


def _test_report(
    policy: Any,
    specs: list[Any],
    prep: Any,
    label_cfg: LabelConfig,
    sim_config: Any,
    times: tuple[pd.Timestamp, ...],
) -> dict[str, Any]:
    """Classification and simulator metrics on ``[val_end, test_end)`` with the already fitted pipelines."""
    from himari.data.bundled import resolve_data_path
    from himari.data.loaders import load_bars

    t0, t1, t2, t3 = times
    bars_by_symbol, frames = {}, {}
    for spec, symbol in zip(specs, prep.symbols, strict=True):
        full = spec if isinstance(spec, Bars) else load_bars(resolve_data_path(spec))
        span = full.between(pd.Timestamp(int(prep.bars[symbol].timestamps_ns[0]), tz="UTC"), t3)
        if len(span.between(t2, t3)) <= label_cfg.horizon_bars + label_cfg.window:
            return {"test": None, "test_note": f"no test data after {t2} for {symbol}"}
        bars_by_symbol[symbol] = span
        frames[symbol] = prep.pipelines[symbol].transform(span, eval_start=t2)
    data = supervised_for_symbols(
        bars_by_symbol, frames, label_cfg, [t0, t1, t2, t3], ("train", "validation", "test")
    )
    markets = symbol_markets(bars_by_symbol, frames, [t0, t1, t2, t3])
    report = evaluate_policy(policy, data, ("test",))
    return {
        "test": {"classification": report["test"], "simulator": _trading(policy, markets, sim_config, "test")}
    }


# ------------------------------------------------------------------------------------------------------------
# Ensembles of trained runs


@dataclass
class _EvalData:
    symbols: tuple[str, ...]
    bars: dict[str, Bars]
    pipelines: dict[str, Any]


def train_ensemble(
    member_runs: Sequence[str | Path],
    out: str | Path,
    weights: str = "fit",
    mode: str = "average",
    seed: int = 0,
    test: bool = True,
) -> Path:
    """Combine trained offline runs (same data and windows) into an ensemble run directory with a bundle.

    ``weights``: ``"fit"`` (EM maximum-likelihood mixture weights on the *validation* labels, see
    ``himari.agents.offline.ensemble.fit_weights``) or a preset name (``production``, ``low-latency``). The members'
    fitted tactical pipelines are reused as they are (nothing is refitted).
    """
    from himari.agents.offline.ensemble import PRESETS, EnsembleConfig, EnsemblePolicy, fit_weights
    from himari.agents.offline.evaluate import stream_probs
    from himari.data.bundled import resolve_data_path
    from himari.data.loaders import load_bars
    from himari.env.sim import SimConfig
    from himari.trading.bundle import load_bundle
    from himari.utils.rundir import load_run_meta

    configure_torch_threads()
    if not member_runs:
        raise ConfigError("ensemble: no member runs given")
    if weights != "fit" and weights not in PRESETS:
        raise ConfigError(f"ensemble weights {weights!r}: use 'fit' or one of {', '.join(PRESETS)}")
    bundles = [load_bundle(r) for r in member_runs]
    metas = [load_run_meta(r)["config"] for r in member_runs]
    first = metas[0]
    for run, meta, bundle in zip(member_runs, metas, bundles, strict=True):
        if bundle.policy.action_kind != "discrete":
            raise ConfigError(f"ensemble member {run}: {bundle.policy.kind} is not discrete")
        for key in ("train_start", "train_end", "val_end", "data"):
            if meta.get(key) != first.get(key):
                raise ConfigError(f"ensemble member {run}: {key} {meta.get(key)} differs from {first.get(key)}")
    names: list[str] = []
    for bundle in bundles:
        name = bundle.policy.kind
        names.append(name if name not in names else f"{name}-{len(names)}")
    t0, t1, t2, t3 = (pd.Timestamp(first[k]) for k in ("train_start", "train_end", "val_end", "test_end"))
    specs = list(first["data"])
    symbols = bundles[0].symbols
    bars_by_symbol = {s: load_bars(resolve_data_path(spec)).between(None, t2) for s, spec in zip(symbols, specs,
                                                                                                  strict=True)}
    frames = {s: bundles[0].tactical[s].transform(bars_by_symbol[s]) for s in symbols}
    label_cfg = LabelConfig.parse(first["labels"])
    data = supervised_for_symbols(bars_by_symbol, frames, label_cfg, [t0, t1, t2], ("train", "validation"))
    val_idx = data.splits["validation"]
    members = [b.policy for b in bundles]
    if weights == "fit":
        probs = [stream_probs(m, data, val_idx) for m in members]
        fitted = fit_weights(probs, data.labels[val_idx])
        config = EnsembleConfig(members=tuple(names), weights=tuple(float(w) for w in fitted), mode=mode)  # type: ignore[arg-type]
        ensemble = EnsemblePolicy(members, config)
    else:
        ensemble = EnsemblePolicy.from_preset(weights, dict(zip(names, members, strict=True)), mode=mode)
    sim_config = SimConfig.parse(bundles[0].sim_config).replace(
        window=max(int(b.sim_config.get("window", 1)) for b in bundles))
    run_config = {"members": [str(r) for r in member_runs], "weights": weights, "mode": mode,
                  "train_start": str(t0), "train_end": str(t1), "val_end": str(t2), "test_end": str(t3),
                  "data": specs, "labels": label_cfg.to_dict()}
    run = create_run_dir(out, "offline ensemble", run_config, seed)
    ensemble.meta = {"weights_source": weights}
    save_bundle(run / "bundle", Bundle(symbols=symbols, timeframe=bundles[0].timeframe, tactical=bundles[0].tactical,
                                       policy=ensemble, sim_config=sim_config.to_dict(),
                                       meta={"model_id": f"ensemble-{weights}", "train_start": str(t0),
                                             "train_end": str(t1), "val_end": str(t2)}))
    markets = symbol_markets(bars_by_symbol, frames, [t0, t1, t2])
    metrics: dict[str, Any] = {
        "policy_kind": "ensemble",
        "weights": dict(zip(ensemble.config.members, ensemble.config.weights, strict=True)),
        "mode": mode,
        "classification": {"validation": evaluate_policy(ensemble, data, ("validation",))["validation"]},
        "simulator": {"validation": _trading(ensemble, markets, sim_config, "validation")},
        "notes": "Weights fitted on validation labels only when weights='fit'; test reported, never used.",
    }
    if test:
        metrics.update(_test_report(ensemble, specs, _EvalData(symbols, bars_by_symbol, bundles[0].tactical),
                                    label_cfg, sim_config, (t0, t1, t2, t3)))
    atomic_write_json(run / "metrics.json", metrics)
    return run
