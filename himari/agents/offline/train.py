"""``train_offline``: train one offline model kind end to end and write a run directory with a model bundle.

Steps (all fits on the training window ``[train_start, train_end)``; selection on ``[train_end, val_end)`` only):

1. Load bars, fit the tactical pipeline on the training window and transform (causal) — through
   ``himari.agents.training.prepare_training_data`` when available, else the same steps here.
2. Label-trained kinds (``mlp-classifier``, ``flag-trader``): forward-return labels with a cost-derived threshold
   (the simulator's fees and slippage), purged and embargoed chronological splits; the best step by validation
   log-loss is kept.
3. RL kinds (``cql``, ``dt``, ``cgdt``): offline trajectories collected in the simulator (costs on) on the training
   window by rule behaviour policies (MA crossover, momentum, random) and, when given, a trained policy; the best
   checkpoint by the validation-window simulator return is kept.
4. Every kind is then reported honestly: classification metrics on the validation and later purged test period
   beside the majority-class baseline, and simulator net log-return on validation and test beside flat and
   always-long. Nothing from the test period is used for fitting or selection.
5. ``RUN/run.json``, ``RUN/metrics.json`` and ``RUN/bundle/`` (``himari.bundle.save_bundle``), so the backtester,
   the API server and paper trading run the model like any PPO policy.
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
from himari.bundle import Bundle, save_bundle
from himari.data.bars import Bars, to_utc_timestamp
from himari.env.protocol import ACCOUNT_FIELDS, LONG, REGIME_NAMES, Observation
from himari.errors import ConfigError, DataError
from himari.utils.io import atomic_write_json, read_json
from himari.utils.progress import progress_bar
from himari.utils.rundir import create_run_dir
from himari.utils.threads import configure_torch_threads

OFFLINE_KINDS: tuple[str, ...] = ("mlp-classifier", "cql", "dt", "cgdt", "flag-trader")
LABEL_KINDS = ("mlp-classifier", "flag-trader")
RL_KINDS = ("cql", "dt", "cgdt")
DEFAULT_STEPS: dict[str, int] = {"mlp-classifier": 2000, "cql": 3000, "dt": 1500, "cgdt": 1500, "flag-trader": 800}


@dataclass
class PreparedData:
    """What every offline kind needs: per-symbol bars, fitted pipelines and their causal frames, and market data."""

    symbols: tuple[str, ...]
    bars: list[Bars]
    pipelines: dict[str, Any]
    frames: list[Any]
    data_files: dict[str, str]


def _resolve_bars(spec: Any) -> tuple[Bars, str | None]:
    from himari.data.loaders import load_bars

    if isinstance(spec, Bars):
        return spec, None
    bars = load_bars(str(spec))
    path = str(spec) if Path(str(spec)).exists() else None
    return bars, path


def prepare_offline_data(data_specs: Sequence[Any] | str, train_start: Any, train_end: Any,
                         tactical_config: dict[str, Any] | None = None) -> PreparedData:
    """Load bars, fit one ``TacticalPipeline`` per symbol on ``[train_start, train_end)`` and transform causally."""
    from himari.features.pipeline import TacticalConfig, TacticalPipeline

    specs = [data_specs] if isinstance(data_specs, str | Path | Bars) else list(data_specs)
    if not specs:
        raise ConfigError("train_offline: no data given")
    bars_list, pipelines, frames, files, symbols = [], {}, [], {}, []
    for spec in specs:
        bars, path = _resolve_bars(spec)
        symbol = (bars.symbol or str(spec)).replace("/", "")
        pipe = TacticalPipeline(TacticalConfig.parse(tactical_config or {})).fit(bars, train_start, train_end)
        frame = pipe.transform(bars)
        bars_list.append(bars)
        pipelines[symbol] = pipe
        frames.append(frame)
        symbols.append(symbol)
        if path:
            files[symbol] = path
    return PreparedData(tuple(symbols), bars_list, pipelines, frames, files)


def supervised_from_prepared(prep: PreparedData, label_cfg: LabelConfig, boundaries: Sequence[Any]) -> SupervisedData:
    """Supervised samples of every symbol, pooled (windows never cross symbols: each symbol's first rows are warm-up)."""
    bounds_ns = [int(to_utc_timestamp(b).value) for b in boundaries]  # type: ignore[union-attr]
    parts = []
    for bars, frame in zip(prep.bars, prep.frames, strict=True):
        pos = np.searchsorted(bars.timestamps_ns, frame.timestamps_ns)
        if not np.array_equal(bars.timestamps_ns[np.minimum(pos, len(bars) - 1)], frame.timestamps_ns):
            raise DataError(f"{bars.symbol}: tactical frame timestamps do not match the bars")
        parts.append(build_supervised(
            frame.features, frame.regime_posterior, frame.valid, frame.timestamps_ns, bars.open[pos],
            bars.close[pos], bars.segment_id[pos], label_cfg, bounds_ns))
    if len(parts) == 1:
        return parts[0]
    offset, splits = 0, {k: [] for k in parts[0].splits}
    for part in parts:
        for k, v in part.splits.items():
            splits[k].append(v + offset)
        offset += part.inputs.shape[0]
    first = parts[0]
    return SupervisedData(
        inputs=np.concatenate([p.inputs for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        forward_return=np.concatenate([p.forward_return for p in parts]),
        label_end=np.concatenate([p.label_end + o for p, o in zip(parts, np.cumsum([0] + [p.inputs.shape[0] for p in parts[:-1]]), strict=True)]),
        timestamps_ns=np.concatenate([p.timestamps_ns for p in parts]),
        window=first.window, n_features=first.n_features,
        splits={k: np.concatenate(v) for k, v in splits.items()}, info=first.info,
    )


# ------------------------------------------------------------------------------------------------------------
# Simulator helpers


def _market(prep: PreparedData, k: int) -> Any:
    from himari.env.market import MarketData

    return MarketData.from_frames([prep.bars[k]], [prep.frames[k]])


def rollout_return(policy: Any, market: Any, sim_config: Any, start: int, end: int, num_envs: int = 8) -> dict[str, float]:
    """Greedy policy over ``[start, end)`` as ``num_envs`` contiguous deterministic episodes; net log return.

    Returns the total net log return (sum over the chunks = the whole period traded once), per-bar mean and the
    fraction of LONG/SHORT/HOLD actions.
    """
    from himari.env.sim import SimVecEnv

    env = SimVecEnv.for_evaluation(market, sim_config, start, end, num_envs=num_envs)
    obs = env.reset()
    state = policy.initial_state(num_envs)
    finished = np.zeros(num_envs, bool)
    total = np.zeros(num_envs)
    counts = np.zeros(3)
    steps = 0
    max_steps = end - start  # upper bound; every chunk is shorter
    eq_idx = ACCOUNT_FIELDS.index("equity_log")
    for _ in range(max_steps):
        out, state = policy.act(obs, state, deterministic=True)
        action = np.asarray(out.action, np.int64).reshape(num_envs, -1)
        result = env.step(action)
        live = ~finished
        counts += np.bincount(action[live, 0], minlength=3)
        steps += int(live.sum())
        done = np.asarray(result.terminated) | np.asarray(result.truncated)
        total = np.where(live & done, result.final_obs.account[:, 0, eq_idx], total)
        finished |= done
        if finished.all():
            break
        obs = result.obs
    return {"net_log_return": float(total.sum()), "per_bar": float(total.sum() / max(steps, 1)),
            "action_fractions": (counts / max(counts.sum(), 1)).tolist(), "bars": steps}  # type: ignore[dict-item]


class _ConstantPolicy:
    """Always the same discrete action (flat = HOLD with hold_mode "flat" sim, always-long = LONG)."""

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
        return PolicyOutput(action=np.full((n, a), self.action, np.int64)), None


# ------------------------------------------------------------------------------------------------------------


def _build_policy(kind: str, n_inputs: int, state_dim: int, options: dict[str, Any], seed: int) -> Any:
    model_opts = dict(options.get("model", {}))
    if kind == "mlp-classifier":
        from himari.agents.offline.classifier import ClassifierConfig, ClassifierPolicy

        return ClassifierPolicy(ClassifierConfig.parse(model_opts, n_inputs=n_inputs, seed=seed,
                                                       window=options["labels"].window))
    if kind == "flag-trader":
        from himari.agents.offline.flag_trader import FlagTraderConfig, FlagTraderPolicy

        model_opts.setdefault("context", options["labels"].window)
        model_opts.setdefault("n_positions", max(64, int(model_opts["context"])))
        return FlagTraderPolicy.create(FlagTraderConfig.parse(model_opts, n_inputs=n_inputs, seed=seed))
    if kind == "cql":
        from himari.agents.offline.cql import CQLConfig, CQLPolicy

        return CQLPolicy(CQLConfig.parse(model_opts, state_dim=state_dim, seed=seed))
    if kind == "dt":
        from himari.agents.offline.decision_transformer import DecisionTransformerPolicy, DTConfig

        return DecisionTransformerPolicy(DTConfig.parse(model_opts, state_dim=state_dim, seed=seed))
    if kind == "cgdt":
        from himari.agents.offline.decision_transformer import CGDTConfig, CriticGuidedDTPolicy

        return CriticGuidedDTPolicy(CGDTConfig.parse(model_opts, state_dim=state_dim, seed=seed))
    raise ConfigError(f"unknown offline policy kind {kind!r}; known: {', '.join(OFFLINE_KINDS)}")


def _behaviours(prep: PreparedData, k: int, train_idx: np.ndarray, seed: int, behaviour_policy: str | None) -> list[Any]:
    from himari.agents.rules import default_behaviours

    frame = prep.frames[k]
    in_train = frame.valid.copy()
    in_train[: train_idx[0]] = False
    in_train[train_idx[1]:] = False
    medians = np.median(frame.features[in_train], axis=0) if in_train.any() else np.zeros(frame.features.shape[1])
    centers = {name: float(m) for name, m in zip(frame.feature_names, medians, strict=True)}
    policies: list[Any] = default_behaviours(frame.feature_names, centers, seed)
    if behaviour_policy:
        from himari.agents.registry import load_policy
        from himari.bundle import find_bundle_dir

        path = Path(behaviour_policy)
        try:
            path = find_bundle_dir(path) / "policy"
        except Exception:  # noqa: BLE001 - a plain policy directory is fine too
            pass
        trained = load_policy(path)
        if trained.action_kind != "discrete":
            raise ConfigError(f"behaviour policy {behaviour_policy}: {trained.kind} is not discrete")
        policies.append(trained)
    return policies


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

    ``steps``: gradient updates (None: the kind's default). ``options`` (all optional): ``labels`` (LabelConfig
    fields), ``model`` (the kind's config fields), ``sim`` (SimConfig fields), ``tactical`` (TacticalConfig fields),
    ``num_envs`` (16), ``collect_steps`` (512 per env), ``epsilon`` (0.1), ``behaviour_policy`` (a run or policy
    directory of a trained discrete policy), ``eval_every``. ``resume``: when ``out`` already holds a finished run
    with the same configuration, it is returned as is; otherwise training starts from scratch.
    """
    from himari.env.sim import SimConfig

    if policy_kind not in OFFLINE_KINDS:
        raise ConfigError(f"unknown offline policy kind {policy_kind!r}; known: {', '.join(OFFLINE_KINDS)}")
    configure_torch_threads()
    options = dict(options or {})
    steps = int(steps) if steps is not None else DEFAULT_STEPS[policy_kind]
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    sim_config = SimConfig.parse(options.get("sim", {}))
    costs = sim_config.costs
    label_cfg = LabelConfig.parse(
        {"fee_bps": costs.taker_fee_bps if costs.order_type == "taker" else max(costs.maker_fee_bps, 0.0),
         "slippage_bps": costs.slippage_bps, **options.get("labels", {})}
    )
    options["labels"] = label_cfg
    t0, t1, t2 = (to_utc_timestamp(x) for x in (train_start, train_end, val_end))
    if t0 is None or t1 is None or t2 is None or not t0 < t1 < t2:
        raise ConfigError(f"need train_start < train_end < val_end, got {train_start}, {train_end}, {val_end}")
    run_config = {
        "policy_kind": policy_kind, "steps": steps, "train_start": str(t0), "train_end": str(t1), "val_end": str(t2),
        "test_end": None if test_end is None else str(to_utc_timestamp(test_end)),
        "labels": label_cfg.to_dict(), "sim": sim_config.to_dict(),
        **{k: v for k, v in options.items() if k not in ("labels", "sim")},
        "data": [str(s) if not isinstance(s, Bars) else s.symbol for s in
                 ([data_specs] if isinstance(data_specs, str | Path | Bars) else data_specs)],
    }
    run = Path(out)
    if resume and (run / "metrics.json").exists() and (run / "run.json").exists():
        previous = read_json(run / "run.json")
        if previous.get("config") == run_config and previous.get("seed") == seed:
            return run
    prep = prepare_offline_data(data_specs, t0, t1, options.get("tactical"))
    run = create_run_dir(out, f"train --policy {policy_kind}", run_config, seed, prep.data_files)
    last_ts = max(int(b.timestamps_ns[-1]) for b in prep.bars) + 1
    t3_ns = last_ts if test_end is None else int(to_utc_timestamp(test_end).value)  # type: ignore[union-attr]
    if t3_ns <= t2.value:
        raise ConfigError(f"no test period after val_end {t2} (data ends {pd.Timestamp(last_ts, tz='UTC')})")
    supervised = supervised_from_prepared(prep, label_cfg, [t0, t1, t2, pd.Timestamp(t3_ns, tz="UTC")])
    n_inputs = supervised.inputs.shape[1]
    state_dim = n_inputs + len(ACCOUNT_FIELDS)
    policy = _build_policy(policy_kind, n_inputs, state_dim, options, seed)
    sim_config = sim_config.replace(window=max(sim_config.window, int(policy.window)))
    markets = [_market(prep, k) for k in range(len(prep.symbols))]
    index = [(m.index_of(t0), m.index_of(t1), m.index_of(t2), min(m.index_of(pd.Timestamp(t3_ns, tz="UTC")), m.num_bars))
             for m in markets]
    eval_every = int(options.get("eval_every", max(1, steps // 5)))

    def select(candidate: Any) -> float:
        return float(np.mean([rollout_return(candidate, m, sim_config, i[1], i[2])["net_log_return"]
                              for m, i in zip(markets, index, strict=True)]))

    summary: dict[str, Any] = {}
    with progress_bar(f"train {policy_kind}", total=steps) as bar:
        def on_step(step: int, loss: float) -> None:
            bar.advance(1, info=f"loss={loss:.4f}")

        if policy_kind in LABEL_KINDS:
            from himari.agents.offline.supervised import train_supervised

            cfg = policy.config
            summary = train_supervised(policy, supervised, steps, cfg.batch_size, cfg.lr, seed,
                                       weight_decay=cfg.weight_decay, eval_every=eval_every, on_step=on_step)
        else:
            trajectories = _collect(prep, markets, index, sim_config, options, seed)
            summary["dataset"] = {"transitions": trajectories.n_transitions,
                                  "action_counts": trajectories.action_counts().tolist(),
                                  "behaviours": sorted(set(trajectories.behaviour)),
                                  "mean_reward_per_step": float(trajectories.rewards.mean())}
            if policy_kind == "cql":
                from himari.agents.offline.cql import train_cql

                summary.update(train_cql(policy, trajectories.flat(), steps, seed, eval_every, select, on_step))
            else:
                from himari.agents.offline.decision_transformer import train_decision_transformer

                summary.update(train_decision_transformer(policy, trajectories, steps, seed, eval_every, select,
                                                          on_step))
    metrics = _report(policy, supervised, markets, index, sim_config, summary)
    policy.meta = {"trained_on": list(prep.symbols), "train_window": [str(t0), str(t1)], "val_end": str(t2),
                   "seed": seed}
    bundle = Bundle(
        symbols=prep.symbols,
        timeframe=str(prep.bars[0].timeframe),
        tactical=prep.pipelines,
        policy=policy,
        sim_config=sim_config.to_dict(),
        meta={"model_id": f"{policy_kind}-{run_config_hash(run)}", "train_start": str(t0), "train_end": str(t1),
              "val_end": str(t2), "selection": "validation", "steps": steps},
    )
    save_bundle(run / "bundle", bundle)
    atomic_write_json(run / "metrics.json", metrics)
    return run


def run_config_hash(run: Path) -> str:
    return str(read_json(run / "run.json").get("config_hash", ""))


def _collect(prep: PreparedData, markets: list[Any], index: list[tuple[int, int, int, int]], sim_config: Any,
             options: dict[str, Any], seed: int) -> TrajectoryData:
    from himari.env.sim import SimVecEnv

    num_envs = int(options.get("num_envs", 16))
    collect_steps = int(options.get("collect_steps", 512))
    parts = []
    for k, (market, idx) in enumerate(zip(markets, index, strict=True)):
        length = min(sim_config.episode_length, max(16, (idx[1] - idx[0]) // 4))
        cfg = sim_config.replace(episode_length=length)
        env = SimVecEnv(market, cfg, num_envs, seed=seed + k, start_index=idx[0], end_index=idx[1])
        behaviours = _behaviours(prep, k, np.asarray(idx[:2]), seed + 100 * k, options.get("behaviour_policy"))
        parts.append(collect_trajectories(env, behaviours, collect_steps, seed + k,
                                          epsilon=float(options.get("epsilon", 0.1))))
    if len(parts) == 1:
        return parts[0]
    cat = {f: np.concatenate([getattr(p, f) for p in parts], axis=1) for f in
           ("states", "actions", "rewards", "next_states", "terminated", "truncated", "returns_to_go", "episode_step")}
    return TrajectoryData(**cat, behaviour=sum((p.behaviour for p in parts), ()), gamma=parts[0].gamma)


def _report(policy: Any, supervised: SupervisedData, markets: list[Any], index: list[tuple[int, int, int, int]],
            sim_config: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """Classification (validation, test) beside the majority baseline; simulator returns beside flat/always-long."""
    classification = evaluate_policy(policy, supervised, ("validation", "test"))
    trading: dict[str, Any] = {}
    for name, (lo, hi) in (("validation", (1, 2)), ("test", (2, 3))):
        per_policy: dict[str, Any] = {}
        for label, candidate in (("model", policy), ("always_long", _ConstantPolicy(LONG))):
            results = [rollout_return(candidate, m, sim_config, i[lo], i[hi]) for m, i in zip(markets, index, strict=True)
                       if i[hi] - i[lo] > sim_config.window + 16]
            if results:
                per_policy[label] = {"net_log_return": float(np.mean([r["net_log_return"] for r in results])),
                                     "action_fractions": results[0]["action_fractions"]}
        trading[name] = per_policy
    return {
        "policy_kind": policy.kind,
        "classification": classification,
        "simulator": trading,
        "training": {k: v for k, v in summary.items() if not k.endswith("history")},
        "training_history": summary.get("history", []),
        "notes": ("Selection used the validation window only; test metrics are reported, never used. "
                  "Simulator returns are net of the simulator's fees and slippage (no sizing/risk layer); "
                  "the backtester adds sizing and risk."),
        "regimes": list(REGIME_NAMES),
    }
