"""Walk-forward optimization: fit on train, select on validation, trade the test period, stitch the test periods.

The candidates compared per window are **configurations**: named sets of settings (``WFOConfig.configurations``,
e.g. a learning rate, a network size, the L3 delta scale) that keep their identity across windows. Every
configuration is trained with ``seeds`` seeds per window and the seeds are **ensembled** (averaged action
probabilities / actions, :mod:`himari.agents.seed_ensemble`), not selected: seed choice is noise, not a trial. The
seeds of a configuration derive from the run seed, the configuration's *name* and the window, so listing the
configurations in another order changes nothing.

Per window (``himari.data.splits.walk_forward_windows``):

1. **Fit** — bars with timestamps < validation end only (test bars are not even loaded into the fitting market):
   the tactical pipeline (normalizers, Kalman/EKF, regime HMM) on the training period; then every configuration's
   seed ensemble trained on episodes inside the training period (each fine-tuned from the same configuration's
   ensemble of the previous window when ``transfer`` is on), with the trainer's checkpoint selection on the
   validation period.
2. **Select** — each configuration runs through the full decision stack (sizing, risk, costs) on the validation
   period; the highest validation Sharpe trades the test period (ties: the first name in sorted order). Test data
   plays no part in fitting or selection (a test corrupts the test months and checks the selection does not change).
3. **Trade** — the selected bundle is backtested on the test period (warm-up history before it), with the baselines.
   Every configuration's test returns are recorded on its own account chain, for PBO only (never for selection).

The stitched test periods form the out-of-sample equity curve. PBO (CSCV) runs over the (T, configurations) matrix
of stitched test returns, and the deflated Sharpe ratio counts the configurations compared plus the trials ledger.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from himari.agents.registry import OFFLINE_KINDS, POLICY_KINDS, WALK_FORWARD_KINDS
from himari.backtest.ablation import ablation_bundles
from himari.backtest.backtester import BacktestResult, run_backtest
from himari.config import FrozenConfig, merge_overrides
from himari.data.bars import Bars
from himari.data.splits import WalkForwardWindow, walk_forward_windows
from himari.env.sim import SimConfig
from himari.errors import ConfigError
from himari.tactical.pipeline import TacticalConfig
from himari.trading.bundle import Bundle
from himari.training.config import validate_sections
from himari.utils.seeding import child_seeds
from himari.utils.tracking import TrackingConfig

CONFIGURABLE: frozenset[str] = frozenset({
    "policy", "pool", "offline", "window", "episode_length", "num_envs", "n_steps", "sim", "ppo", "policy_config", "tactical",
    "sizing", "risk", "steps_first_window", "steps_per_window", "transfer",
})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class WFOConfig(FrozenConfig):
    """Walk-forward settings: 6 months train, 1 validation, 1 test, stepping 1 month by default."""

    policy: str = Field("mlp", description="a walk-forward policy kind of himari.agents.registry")
    offline: dict[str, Any] = Field(default_factory=dict)  # options of himari.training.offline.fit_offline
    first_train_start: str | None = None  # default: test_start - (train + validation) months
    test_start: str = "2023-01-01"
    test_end: str = "2025-01-01"
    train_months: int = Field(6, ge=1)
    expanding_train: bool = Field(
        False, description="every window trains from first_train_start (the training period grows) instead of the "
        "last train_months only",
    )
    validation_months: int = Field(1, ge=1)
    test_months: int = Field(1, ge=1)
    step_months: int = Field(1, ge=1)
    max_windows: int | None = Field(None, ge=1)
    seeds: int = Field(2, ge=1, le=16, description="seeds trained per configuration and window and ensembled "
                       "(averaged action probabilities / actions); seed choice is noise, not a trial")
    configurations: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named configurations compared per window (the trials of PBO and the "
        "DSR): name -> overrides of this config's training settings (" + ", ".join(sorted(CONFIGURABLE)) + "); "
        "none: one configuration, 'base'",
    )
    steps_first_window: int = Field(150_000, ge=1)
    steps_per_window: int = Field(60_000, ge=1)
    transfer: bool = True  # fine-tune from the previous window's selected weights
    num_envs: int = Field(64, ge=1)
    episode_length: int = Field(256, ge=8)
    n_steps: int = Field(64, ge=1)
    window: int | None = Field(None, ge=1, description="observation window (bars); default per policy kind")
    sim: dict[str, Any] = Field(default_factory=dict)  # SimConfig overrides
    ppo: dict[str, Any] = Field(default_factory=dict)  # PPOConfig overrides
    policy_config: dict[str, Any] = Field(default_factory=dict)
    tactical: dict[str, Any] = Field(default_factory=dict)  # TacticalConfig overrides
    sizing: dict[str, Any] = Field(default_factory=dict)
    risk: dict[str, Any] = Field(default_factory=dict)
    pool: tuple[str, ...] = Field(
        (), description="pooled training: other assets (bundled names or files) whose training-period bars are "
        "chained into a single-asset policy's training data (himari.training.pooling); validation and trading stay "
        "on the traded asset",
    )
    pretrain: dict[str, Any] = Field(
        default_factory=dict, description="synthetic stress-batch pre-training before the first window "
        "(himari.training.pretrain.PretrainConfig; off unless steps > 0)",
    )
    warmup_bars: int = Field(2500, ge=0, description="history before each training start used as feature warm-up")
    ablation: bool = Field(True, description="trade the layer ablation (himari.backtest.ablation) beside the strategy")
    trials_ledger: str | None = Field(
        None, description="JSON ledger of configurations already evaluated on these data (a path, or the name of "
        "one shipped in himari/backtest/ledgers): the DSR counts them as trials; RUN/trials.json adds this run",
    )
    workers: int = Field(1, ge=1, le=64, description="processes fitting a window's configurations, or else a "
                         "configuration's seeds, in parallel (fork; one thread each); the results equal the "
                         "sequential ones")
    seed: int = 0
    # where curves and figures go (not part of the method: left out of to_dict(), the config hash and the ledger)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "n_candidates" in data:
            raise ValueError("n_candidates was replaced: the candidates are named 'configurations' and each is "
                             "trained with 'seeds' seeds that are ensembled (use seeds=N)")
        return data

    @model_validator(mode="after")
    def _check_sections(self) -> WFOConfig:
        if self.policy not in WALK_FORWARD_KINDS:
            raise ValueError(f"policy {self.policy!r} is not a walk-forward kind; known: {', '.join(WALK_FORWARD_KINDS)}")
        try:
            validate_sections(
                self.policy, "walk-forward config", ppo=self.ppo, policy_config=self.policy_config, sim=self.sim,
                tactical=self.tactical, sizing=self.sizing, risk=self.risk, offline=self.offline,
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        from himari.training.pretrain import PretrainConfig

        try:
            pre = PretrainConfig.parse(self.pretrain)
        except ConfigError as exc:
            raise ValueError(f"pretrain: {exc}") from None
        if self.pool and (self.is_offline or self.policy == "multiasset"):
            raise ValueError(f"pool: pooled training is for single-asset simulator policies, not {self.policy}")
        if pre.steps > 0 and self.is_offline:
            raise ValueError(f"pretrain: synthetic pre-training trains in the simulator; {self.policy} is offline")
        for name, overrides in self.configurations.items():
            if not _NAME.match(name) or name in (".", ".."):
                raise ValueError(f"configurations: name {name!r}: use letters, digits and _.+- (a directory name)")
            if not isinstance(overrides, Mapping):
                raise ValueError(f"configurations.{name}: expected an object of overrides")
            unknown = sorted(set(overrides) - CONFIGURABLE)
            if unknown:
                raise ValueError(f"configurations.{name}: {unknown[0]!r} cannot differ between configurations; "
                                 f"allowed: {', '.join(sorted(CONFIGURABLE))}")
            try:
                self.for_configuration(name)
            except (ConfigError, ValueError) as exc:
                raise ValueError(f"configurations.{name}: {exc}") from None
        return self

    @property
    def configuration_names(self) -> tuple[str, ...]:
        """The configurations compared per window, in the order given (``("base",)`` when none are named)."""
        return tuple(self.configurations) or ("base",)

    def for_configuration(self, name: str) -> WFOConfig:
        """This config with the overrides of configuration ``name`` applied (and no configurations of its own)."""
        if name == "base" and not self.configurations:
            return self
        if name not in self.configurations:
            raise ConfigError(f"unknown configuration {name!r}; known: {', '.join(self.configuration_names)}")
        merged = merge_overrides({k: v for k, v in self.to_dict().items() if k != "configurations"}, self.configurations[name])
        return WFOConfig.parse(merged)

    def configuration_seeds(self, name: str, window_index: int) -> list[int]:
        """The seeds of configuration ``name`` in window ``window_index``: from the run seed, the configuration's
        name (not its position in the list) and the window."""
        return child_seeds(self.seed * 100_003 + window_index * 7_919 + zlib.crc32(name.encode()), self.seeds)

    def windows(self) -> list[WalkForwardWindow]:
        import pandas as pd

        start = self.first_train_start or (
            pd.Timestamp(self.test_start, tz="UTC") - pd.DateOffset(months=self.train_months + self.validation_months)
        )
        wins = walk_forward_windows(
            start, self.test_end, self.train_months, self.validation_months, self.test_months, self.step_months,
            self.max_windows, expanding=self.expanding_train,
        )
        if not wins:
            raise ConfigError(f"no walk-forward window fits between {start} and {self.test_end}")
        return wins

    def _default_window(self) -> int | None:
        if self.policy == "stack":  # the L3 sizer's window (the L2 sees the same bars)
            from himari.training.ppo import stack_kinds

            return POLICY_KINDS[stack_kinds(self.policy_config)[1]].window
        return POLICY_KINDS[self.policy].window

    @property
    def is_offline(self) -> bool:
        return self.policy in OFFLINE_KINDS

    def sim_config(self) -> SimConfig:
        if self.is_offline:
            return SimConfig.parse({"action_kind": "discrete", "window": self.window or 1,
                                    "episode_length": self.episode_length, **self.sim})
        base: dict[str, Any] = {
            "action_kind": POLICY_KINDS[self.policy].action_kind,
            "window": self.window or self._default_window(),
            "episode_length": self.episode_length,
            # the policy trains through the positioning layer and risk gates that trade it
            "sizing": dict(self.sizing),
            "risk": dict(self.risk),
        }
        base.update(self.sim)
        return SimConfig.parse(base)


@dataclass
class ConfigurationResult:
    """One configuration in one window: its seed ensemble's validation result and, after trading, its test returns."""

    name: str
    seeds: list[int]
    validation_sharpe: float
    validation_total_return: float
    train_summary: dict[str, Any]
    test_path: Any = None  # PathResult of its own account chain over the test period (PBO and the ledger only)

    @property
    def test_returns(self) -> np.ndarray | None:
        return None if self.test_path is None else self.test_path.net_returns


@dataclass
class WindowFit:
    """A fitted window: every configuration's bundle and validation result, and the selected configuration."""

    bundles: dict[str, Bundle]
    results: dict[str, ConfigurationResult]
    selected: str

    @property
    def bundle(self) -> Bundle:
        return self.bundles[self.selected]


@dataclass
class WindowResult:
    window: WalkForwardWindow
    selected: str
    configurations: dict[str, ConfigurationResult]
    test: BacktestResult
    bundle: Bundle
    wall_s: float
    policy_state: dict[str, Any] = field(default_factory=dict)  # configuration -> what its next window starts from
    ablation: dict[str, Any] = field(default_factory=dict)  # layer -> PathResult over the test period
    trade_s: float = 0.0  # of wall_s, the test period's backtests (the rest: fitting and selection)

    def row(self, buy_and_hold_return: float = math.nan) -> dict[str, Any]:
        s = self.test.strategy.net_returns
        total = float(np.prod(1 + s) - 1) if len(s) else math.nan
        return {
            "window": self.window.index,
            "train": str(self.window.train),
            "validation": str(self.window.validation),
            "test": str(self.window.test),
            "selected": self.selected,
            "validation_sharpe": round(self.configurations[self.selected].validation_sharpe, 3),
            "validation_sharpes": {n: round(c.validation_sharpe, 3) for n, c in self.configurations.items()},
            "test_return": total,
            "buy_and_hold_return": buy_and_hold_return,
        }


def _history(bars: Bars, train_start: Any, end: Any, warmup_bars: int) -> Bars:
    """Bars < ``end``, starting ``warmup_bars`` before the training start (feature warm-up; older bars unused)."""
    import pandas as pd

    start = pd.Timestamp(train_start) - pd.Timedelta(seconds=bars.timeframe.seconds * warmup_bars)
    return bars.between(start, end)


def _sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 2 or np.std(returns) == 0:
        return 0.0 if len(returns) else math.nan
    return float(np.mean(returns) / np.std(returns, ddof=1) * math.sqrt(periods_per_year))


def window_lineage(config: WFOConfig, window: WalkForwardWindow, fit_bars: Mapping[str, Bars],
                   init_state: dict[str, Any] | None, pretrained: Any) -> list[dict[str, str]]:
    """Every period whose data reaches this window's model: the lineage carried from the window it fine-tunes from
    (transfer), the pre-trained model's, and this window's own data from the first feature warm-up bar to the
    validation end (normalizers and regime model are fitted on the training part of it)."""
    prior = list((init_state or {}).get("lineage") or [])
    if init_state is None and pretrained is not None:
        prior = list(getattr(pretrained, "lineage", None) or [])
    import pandas as pd

    firsts = [int(b.timestamps_ns[0]) for b in fit_bars.values() if len(b)]
    start = pd.Timestamp(min(firsts), tz="UTC") if firsts else window.train.start
    own = {"start": start.isoformat(), "end": window.validation.end.isoformat(),
           "what": f"window {window.index}: feature warm-up, training (normalizers, regime model) and validation"}
    return [*prior, own]


def select_configuration(results: Mapping[str, ConfigurationResult]) -> str:
    """The configuration with the highest validation Sharpe (non-finite counts as the worst); ties go to the first
    name in sorted order, so the choice does not depend on how the configurations are listed."""
    def score(name: str) -> float:
        v = results[name].validation_sharpe
        return v if np.isfinite(v) else -np.inf

    return max(sorted(results), key=score)  # max keeps the first of equal scores


def fit_window(
    config: WFOConfig,
    window: WalkForwardWindow,
    bars_by_symbol: Mapping[str, Bars],
    init_states: Mapping[str, dict[str, Any]] | None = None,
    pretrained: Any = None,
    progress: bool = False,
    compare_scratch: bool = False,
) -> WindowFit:
    """Fit every configuration's seed ensemble and select one, using bars < validation end only.
    ``init_states``: configuration -> ``{"policy": ..., "lineage": [...]}`` of the previous window (transfer).
    ``pretrained``: a policy every configuration starts from, or configuration -> policy (stress pre-training;
    with ``compare_scratch`` the configuration is also trained from scratch and the better on validation kept)."""
    fit_bars = {s: _history(b, window.train.start, window.validation.end, config.warmup_bars)
                for s, b in bars_by_symbol.items()}
    tactical_cache: dict[str, Any] = {}

    def fit_one(name: str) -> tuple[Bundle, ConfigurationResult]:
        cfg = config.for_configuration(name)
        init = (init_states or {}).get(name) if cfg.transfer else None
        seeds = config.configuration_seeds(name, window.index)
        pre = pretrained.get(name) if isinstance(pretrained, Mapping) else pretrained
        bundle, result = _fit_configuration(cfg, name, seeds, window, fit_bars, init, None if init is not None else pre,
                                            tactical_cache, progress)
        if init is None and pre is not None and isinstance(pretrained, Mapping) and compare_scratch:
            # is the pre-training worth it? the same seeds from scratch, compared on validation only
            s_bundle, s_result = _fit_configuration(cfg, name, seeds, window, fit_bars, None, None, tactical_cache,
                                                    progress)
            comparison = {"validation_sharpe_pretrained": result.validation_sharpe,
                          "validation_sharpe_scratch": s_result.validation_sharpe}
            if not result.validation_sharpe > s_result.validation_sharpe:
                bundle, result = s_bundle, s_result
            result.train_summary["pretraining"] = {
                **comparison, "kept": "pretrained" if result is not s_result else "scratch"}
        return bundle, result

    names = config.configuration_names
    if config.workers > 1 and len(names) > 1:
        fitted = _fit_in_processes(config, names, fit_one, fit_bars, window, tactical_cache)
    else:
        fitted = {name: fit_one(name) for name in names}
    bundles = {name: b for name, (b, _) in fitted.items()}
    results = {name: r for name, (_, r) in fitted.items()}
    return WindowFit(bundles, results, select_configuration(results))


def _fit_in_processes(config: WFOConfig, names: tuple[str, ...], fit_one: Any, fit_bars: dict[str, Bars],
                      window: WalkForwardWindow, tactical_cache: dict[str, Any]) -> dict[str, Any]:
    """The configurations of one window fitted in ``config.workers`` forked processes
    (:func:`himari.utils.parallel.fork_map`). Every configuration's training is seeded on its own, so the results
    equal the sequential ones (tested). The tactical pipelines are fitted once in the parent and shared again after
    the bundles come back."""
    from himari.utils.parallel import fork_map

    for name in names:  # fit the shared tactical pipelines before forking
        _tactical_market(config.for_configuration(name), window, fit_bars, tactical_cache)
    out = dict(zip(names, fork_map(fit_one, names, config.workers), strict=True))
    for name, (bundle, _) in out.items():
        cfg = config.for_configuration(name)
        if not cfg.is_offline:
            bundle.tactical = _tactical_market(cfg, window, fit_bars, tactical_cache)[0]
    return out


def _tactical_market(cfg: WFOConfig, window: WalkForwardWindow, fit_bars: dict[str, Bars],
                     tactical_cache: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The tactical pipelines fitted on the window's training bars and the fitting market, shared by every
    configuration with the same tactical settings."""
    import json

    from himari.env.market import MarketData
    from himari.tactical.pipeline import TacticalPipeline

    key = json.dumps(cfg.tactical, sort_keys=True)
    if key not in tactical_cache:
        symbols = tuple(fit_bars)
        tactical = {s: TacticalPipeline(TacticalConfig.parse(cfg.tactical)).fit(fit_bars[s], window.train.start,
                                                                               window.train.end)
                    for s in symbols}
        market = MarketData.from_frames([fit_bars[s] for s in symbols],
                                        [tactical[s].transform(fit_bars[s]) for s in symbols])
        tactical_cache[key] = (tactical, market)
    return tactical_cache[key]  # type: ignore[no-any-return]


def _fit_configuration(
    cfg: WFOConfig, name: str, seeds: list[int], window: WalkForwardWindow, fit_bars: dict[str, Bars],
    init: dict[str, Any] | None, pretrained: Any, tactical_cache: dict[str, Any], progress: bool,
) -> tuple[Bundle, ConfigurationResult]:
    """One configuration's seed ensemble in one window, and its validation result through the full stack."""
    from himari.agents.ppo.config import PPOConfig
    from himari.agents.ppo.methods.augment import AugmentSource
    from himari.agents.seed_ensemble import ensemble_members, seed_ensemble
    from himari.training.ppo import STACK_L2_OFFLINE_KINDS, fit_offline_direction, fit_stack, stack_kinds
    from himari.utils.parallel import fork_map

    symbols = tuple(fit_bars)
    lineage = window_lineage(cfg, window, fit_bars, init, pretrained)
    first = init is None and pretrained is None
    steps = cfg.steps_first_window if first else cfg.steps_per_window
    if cfg.is_offline:
        bundle, market, summary = _fit_offline_configuration(cfg, window, fit_bars, seeds, steps)
    else:
        tactical, market = _tactical_market(cfg, window, fit_bars, tactical_cache)
        sim_cfg = cfg.sim_config()
        tr = (market.index_of(window.train.start), market.index_of(window.train.end))
        va = (market.index_of(window.validation.start), market.num_bars)
        train_market = market
        if cfg.pool:
            train_market, tr, pooled_lineage = _pooled_training_market(cfg, window, fit_bars, tactical_cache,
                                                                       sim_cfg.window)
            lineage = [*lineage, *pooled_lineage]
        ppo_cfg = PPOConfig.parse({"total_steps": steps, "n_steps": cfg.n_steps, "eval_every_updates": 5, **cfg.ppo})
        previous = pretrained if init is None else init.get("policy")
        if cfg.policy == "stack":
            direction = None
            l2_kind = stack_kinds(cfg.policy_config)[0]
            if l2_kind in STACK_L2_OFFLINE_KINDS:  # an offline L2 is fitted on the window's logged bars first
                direction = fit_offline_direction(l2_kind, list(fit_bars.values()), window.train.start,
                                                  window.train.end, window.validation.end, steps, seeds,
                                                  cfg.policy_config.get("direction"))
                sim_cfg = sim_cfg.replace(window=max(sim_cfg.window, int(direction.window)))
            policy, stages = fit_stack(
                train_market, sim_cfg, ppo_cfg, train_range=tr, seeds=seeds, num_envs=cfg.num_envs, eval_range=va,
                eval_market=market, policy_config=cfg.policy_config, progress=progress, init=previous,
                direction=direction, description=f"window {window.index} {name}", workers=cfg.workers,
            )
            trained = stages["directions"] + stages["sizers"]  # (an offline L2 has no PPO result)
        else:
            starts = ensemble_members(previous) if previous is not None else [None]
            source = None if cfg.pool else AugmentSource([fit_bars[s] for s in symbols], [tactical[s] for s in symbols])

            def fit_seed(k: int) -> tuple[Any, Any]:
                return _fit_single(cfg, train_market, market, sim_cfg, ppo_cfg, tr, va, seeds[k],
                                   starts[k % len(starts)], progress, f"window {window.index} {name} s{k}", source)

            fitted = fork_map(fit_seed, range(len(seeds)), cfg.workers)  # seeded: equal to a sequential fit
            members, trained = [p for p, _ in fitted], [r for _, r in fitted]
            policy = seed_ensemble(members)
        bundle = Bundle(symbols=symbols, timeframe=str(market.timeframe), tactical=tactical, policy=policy,
                        sim_config=sim_cfg.to_dict(), sizing_config=dict(cfg.sizing), risk_config=dict(cfg.risk))
        summary = {"steps": int(sum(r.global_step for r in trained)), "wall_s": float(sum(r.wall_s for r in trained)),
                   "best_val_metric": [r.best_metric for r in trained]}
    bundle.meta.update({"model_id": f"{cfg.policy}-{name}-w{window.index:02d}", "configuration": name,
                        "seeds": list(seeds), "fit_windows": window.as_dict(), "lineage": lineage,
                        "train_steps": summary.get("steps")})
    val = run_backtest(bundle, fit_bars, window.validation.start, window.validation.end, seed=seeds[0],
                       keep_log=False, show_progress=False, market=market, with_baselines=False)
    r = val.strategy.net_returns
    return bundle, ConfigurationResult(name, list(seeds), _sharpe(r, market.timeframe.periods_per_year),
                                       float(np.prod(1 + r) - 1), summary)


def _fit_single(config: WFOConfig, train_market: Any, market: Any, sim_cfg: SimConfig, ppo_cfg: Any,
                train_range: tuple[int, int], val_range: tuple[int, int], seed: int, init: Any, progress: bool,
                description: str, augment_source: Any = None) -> tuple[Any, Any]:
    """One PPO policy (one seed of a configuration) trained on ``train_market`` (the window's market, or the pooled
    one), with checkpoint selection on the validation range of ``market``."""
    from himari.training.ppo import evaluation_env, fit_ppo

    eval_env = evaluation_env(market, sim_cfg, val_range)
    return fit_ppo(
        config.policy, train_market, sim_cfg, ppo_cfg, train_range=train_range, seed=seed, num_envs=config.num_envs,
        eval_env=eval_env, policy_config=config.policy_config, progress=progress, init=init, description=description,
        augment_source=augment_source,  # the window's bars and pipelines (causal augmentation, rare events)
    )


def _pooled_training_market(cfg: WFOConfig, window: WalkForwardWindow, fit_bars: dict[str, Bars],
                            tactical_cache: dict[str, Any], obs_window: int) -> tuple[Any, tuple[int, int], list[Any]]:
    """The traded asset's training rows chained with the pooled assets' (:mod:`himari.training.pooling`), each
    asset through its own tactical pipeline fitted on its own training bars. Returns (market, training range,
    lineage entries of the pooled data)."""
    from himari.data.loaders import load_bars
    from himari.tactical.pipeline import TacticalPipeline
    from himari.training.pooling import pooled_market

    if len(fit_bars) != 1:
        raise ConfigError("pool: pooled training is for single-asset runs")
    (symbol, bars), = fit_bars.items()
    tactical = _tactical_market(cfg, window, fit_bars, tactical_cache)[0]
    segments = [(bars, tactical[symbol].transform(bars))]
    lineage = []
    for spec in cfg.pool:
        key = ("pool", spec, window.index, repr(sorted(cfg.tactical.items())))
        if key not in tactical_cache:
            other = _history(load_bars(spec), window.train.start, window.train.end, cfg.warmup_bars)
            tp = TacticalPipeline(TacticalConfig.parse(cfg.tactical)).fit(other, window.train.start, window.train.end)
            tactical_cache[key] = (other, tp.transform(other))
        other, frame = tactical_cache[key]
        if other.symbol == symbol:
            raise ConfigError(f"pool: {spec} is the traded asset {symbol}")
        segments.append((other, frame))
        lineage.append({"start": window.train.start.isoformat(), "end": window.train.end.isoformat(),
                        "what": f"window {window.index}: pooled training bars of {other.symbol}"})
    start_ns, end_ns = int(window.train.start.value), int(window.train.end.value)
    market, first = pooled_market(segments, start_ns, end_ns, history_rows=max(obs_window, 1) + 1)
    return market, (first, market.num_bars), lineage


def _fit_offline_configuration(cfg: WFOConfig, window: WalkForwardWindow, fit_bars: dict[str, Bars],
                               seeds: list[int], steps: int) -> tuple[Bundle, Any, dict[str, Any]]:
    """An offline model (supervised, CQL, DT, CGDT, FLAG-TRADER) per seed, fitted on train with its own selection
    on validation inside ``fit_offline``; the seeds' models ensembled (their tactical pipelines are fitted
    identically: same data and config)."""
    from dataclasses import replace

    from himari.agents.seed_ensemble import seed_ensemble
    from himari.trading.engine import DecisionEngine
    from himari.training.offline import fit_offline

    fits = [fit_offline(cfg.policy, list(fit_bars.values()), window.train.start, window.train.end,
                        window.validation.end, steps, seed, dict(cfg.offline), dict(cfg.sizing), dict(cfg.risk))
            for seed in seeds]
    bundle = replace(fits[0].bundle, policy=seed_ensemble([f.bundle.policy for f in fits]),
                     meta=dict(fits[0].bundle.meta))
    return bundle, DecisionEngine(bundle).build_market(fit_bars), {"samples": steps * len(seeds)}


def trade_window(
    config: WFOConfig,
    window: WalkForwardWindow,
    bars_by_symbol: Mapping[str, Bars],
    fit: WindowFit,
    carry: dict[str, Any] | None = None,
    chains: dict[str, Any] | None = None,
) -> tuple[BacktestResult, dict[str, Any], dict[str, Any]]:
    """Trade the test period with the selected bundle (continuing ``carry``: the account of the previous window),
    every configuration on its own account chain for PBO only, and the layer ablation
    (:mod:`himari.backtest.ablation`) on its own chains. Uses bars < test end. Returns (test result, the chains'
    carries, ablation paths)."""
    from himari.trading.engine import DecisionEngine

    bundle = fit.bundle
    test_bars = {s: _history(b, window.train.start, window.test.end, config.warmup_bars) for s, b in bars_by_symbol.items()}
    # the test period is claimed out of sample: a tactical fit that reaches into it is a LeakageError
    markets: dict[int, Any] = {}

    def market_of(b: Bundle) -> Any:
        key = id(next(iter(b.tactical.values())))
        if key not in markets:
            markets[key] = DecisionEngine(b).build_market(test_bars, eval_start=window.test.start)
        return markets[key]

    chains = dict(chains or {})
    carries = dict(chains.get("configurations") or {})
    ablation_carries = dict(chains.get("ablation") or {})
    # every backtest of the window, each on its own account chain: the strategy, the configurations (for PBO and
    # the ledger only; never used to select) and the ablation rows; independent, so they run in config.workers
    # forked processes (the markets are built first and inherited) with results equal to the sequential ones
    reuse = {name for name in fit.bundles if name == fit.selected and _same_state(carries.get(name), carry)}
    jobs: list[tuple[str, str, Bundle, Any, dict[str, Any] | None]] = [("strategy", "", bundle, market_of(bundle), carry)]
    jobs += [("configuration", name, b, market_of(b), carries.get(name))
             for name, b in fit.bundles.items() if name not in reuse]
    jobs += [("ablation", name, variant, market_of(bundle), ablation_carries.get(name))
             for name, variant in (ablation_bundles(bundle) if config.ablation else [])]

    def backtest(job: tuple[str, str, Bundle, Any, dict[str, Any] | None]) -> BacktestResult:
        what, _, b, market, start_carry = job
        return run_backtest(b, test_bars, window.test.start, window.test.end, seed=config.seed, show_progress=False,
                            keep_log=what == "strategy", market=market, carry=start_carry,
                            with_baselines=what == "strategy" and start_carry is None)

    from himari.utils.parallel import fork_map

    results = fork_map(backtest, jobs, config.workers)
    test = results[0]
    ablation: dict[str, Any] = {}
    for (what, name, *_), row in zip(jobs[1:], results[1:], strict=True):
        if what == "configuration":
            fit.results[name].test_path = row.strategy
            carries[name] = row.carry
        else:
            ablation[name] = row.strategy
            ablation_carries[name] = row.carry
    for name in reuse:  # the traded bundle from the same account (always so with one configuration)
        fit.results[name].test_path = test.strategy
        carries[name] = test.carry
    return test, {"configurations": carries, "ablation": ablation_carries}, ablation


def _same_state(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Two carried session states are equal (both None: both accounts start fresh)."""
    if a is None or b is None:
        return a is None and b is None
    from himari.utils.io import to_json

    return to_json(a, indent=None) == to_json(b, indent=None)


def run_window(
    config: WFOConfig,
    window: WalkForwardWindow,
    bars_by_symbol: Mapping[str, Bars],
    init_states: Mapping[str, dict[str, Any]] | None = None,
    pretrained: Any = None,
    progress: bool = False,
    carry: dict[str, Any] | None = None,
    chains: dict[str, Any] | None = None,
    compare_scratch: bool = False,
) -> tuple[WindowResult, dict[str, Any]]:
    """Fit/select one window (bars < validation end), then trade its test period (bars < test end)."""
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    started = time.perf_counter()
    fit = fit_window(config, window, bars_by_symbol, init_states, pretrained, progress, compare_scratch)
    traded = time.perf_counter()
    test, carries, ablation = trade_window(config, window, bars_by_symbol, fit, carry, chains)
    trade_s = time.perf_counter() - traded
    # each configuration's next window fine-tunes from this window's ensemble of the same configuration, and
    # inherits its data lineage (offline kinds retrain from scratch)
    states = {name: {"policy": b.policy, "lineage": list(b.meta.get("lineage") or [])}
              for name, b in fit.bundles.items() if not config.for_configuration(name).is_offline}
    wall = time.perf_counter() - started
    return WindowResult(window, fit.selected, fit.results, test, fit.bundle, wall, states, ablation, trade_s), carries


def _fit_only(config: WFOConfig, window: WalkForwardWindow, bars_by_symbol: Mapping[str, Bars], pretrained: Any) -> Any:
    """Ray task: fit and select one window (no transfer between parallel windows)."""
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    started = time.perf_counter()
    return fit_window(config, window, bars_by_symbol, None, pretrained), time.perf_counter() - started


@dataclass
class WFOResult:
    config: WFOConfig
    windows: list[WindowResult]
    baselines: dict[str, Any] = field(default_factory=dict)  # name -> PathResult over the stitched span
    baseline_timestamps_ns: np.ndarray | None = None
    resumed: int = 0  # windows loaded from checkpoints instead of being fitted again
    pretrain_s: float | None = None  # seconds of synthetic stress pre-training (None: none, or loaded)

    @property
    def stitched(self) -> BacktestResult:
        """The test periods, one account carried across windows, with the baselines over the same span."""
        out = self.windows[0].test
        for w in self.windows[1:]:
            out = out.concat(w.test)
        if self.baselines:
            if self.baseline_timestamps_ns is not None and not np.array_equal(self.baseline_timestamps_ns, out.timestamps_ns):
                raise ConfigError("internal: stitched strategy and baseline bars differ")
            out.baselines = dict(self.baselines)
        return out

    def window_rows(self) -> list[dict[str, Any]]:
        rows = []
        bh = self.baselines.get("buy_and_hold")
        for w in self.windows:
            ret = math.nan
            if bh is not None and self.baseline_timestamps_ns is not None:
                mask = np.isin(self.baseline_timestamps_ns, w.test.timestamps_ns)
                ret = float(np.prod(1 + bh.net_returns[mask]) - 1)
            rows.append(w.row(ret))
        return rows

    def configuration_matrix(self) -> np.ndarray:
        """(T, configurations) stitched test returns of every configuration (for PBO), in
        ``config.configuration_names`` order."""
        cols = [np.concatenate([w.configurations[name].test_returns for w in self.windows])  # type: ignore[misc]
                for name in self.config.configuration_names]
        return np.stack(cols, axis=1)

    def configuration_paths(self) -> dict[str, Any]:
        """Configuration -> its stitched test-period path (its own account chain)."""
        out: dict[str, Any] = {}
        for name in self.config.configuration_names:
            path = self.windows[0].configurations[name].test_path
            for w in self.windows[1:]:
                path = path.concat(w.configurations[name].test_path)
            out[name] = path
        return out

    def ablation_paths(self) -> dict[str, Any]:
        """Layer -> the stitched test-period path of that ablation row (empty when the run has none)."""
        names = list(self.windows[0].ablation)
        out: dict[str, Any] = {}
        for name in names:
            path = self.windows[0].ablation[name]
            for w in self.windows[1:]:
                path = path.concat(w.ablation[name])
            out[name] = path
        return out

    @property
    def final_bundle(self) -> Bundle:
        return self.windows[-1].bundle


def run_wfo(
    config: WFOConfig,
    bars_by_symbol: Mapping[str, Bars],
    backend: Literal["local", "ray"] = "local",
    pretrained: Any = None,
    progress: bool = True,
    on_window: Any = None,
    ray_address: str | None = None,
    checkpoint_dir: str | Path | None = None,
) -> WFOResult:
    """Run every window, then the baselines over the stitched span.

    ``local``: sequential; each window fine-tunes from the previous one's selected weights (``config.transfer``).
    ``ray``: the fits run in parallel as Ray tasks (each from ``pretrained`` or from scratch, since a window cannot
    wait for its predecessor's weights). In both, the test periods are then traded in order on one account.
    ``checkpoint_dir`` (local backend): every finished window is saved there (:mod:`himari.backtest.checkpoint`), and
    windows already saved by a run with the same config, data and starting weights are loaded, not fitted again.
    """
    from himari.backtest import checkpoint as ckpt
    from himari.backtest.backtester import baseline_results
    from himari.utils.progress import progress_bar

    windows = config.windows()
    results: list[WindowResult] = []
    compare = False
    pretrain_s: float | None = None
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None and backend == "local" else None
    # what the windows depend on (the number of worker processes does not change results: tested)
    fingerprint = ckpt.run_fingerprint({k: v for k, v in config.to_dict().items() if k != "workers"},
                                       bars_by_symbol, pretrained) if ckdir is not None else ""
    if pretrained is None and int(config.pretrain.get("steps", 0)) > 0:
        from himari.training.pretrain import PretrainConfig

        pretrained = ckpt.load_policies(ckdir / "pretrained", fingerprint) if ckdir is not None else None
        if pretrained is None:
            t_pre = time.perf_counter()
            pretrained = pretrain_configurations(config, windows[0], bars_by_symbol, progress)
            pretrain_s = time.perf_counter() - t_pre
            if ckdir is not None:
                ckpt.save_policies(ckdir / "pretrained", pretrained, fingerprint)
        compare = PretrainConfig.parse(config.pretrain).compare_scratch
    carry: dict[str, Any] | None = None
    carries: dict[str, Any] | None = None
    resumed = 0
    if backend == "ray":
        fits = _run_ray(config, windows, bars_by_symbol, pretrained, ray_address)
        for w, (fit, wall) in zip(windows, fits, strict=True):
            test, carries, ablation = trade_window(config, w, bars_by_symbol, fit, carry, carries)
            carry = test.carry
            r = WindowResult(w, fit.selected, fit.results, test, fit.bundle, wall, ablation=ablation)
            results.append(r)
            if on_window is not None:
                on_window(r)
    elif backend == "local":
        prev_state = None
        resuming = ckdir is not None
        with progress_bar("walk-forward windows", total=len(windows), enabled=None if progress else False) as bar:
            for w in windows:
                loaded = ckpt.load_window(ckdir / "windows", w, fingerprint, _result_types()) if resuming and ckdir else None
                if loaded is not None:
                    r, carries = WindowResult(window=w, **loaded[0]), loaded[1]
                    resumed += 1
                else:
                    resuming = False  # a window is fitted from its predecessor: later checkpoints are stale
                    # each configuration fine-tunes from its own previous ensemble where its ``transfer`` is on
                    r, carries = run_window(config, w, bars_by_symbol, prev_state, pretrained, carry=carry,
                                            chains=carries, compare_scratch=compare and w is windows[0])
                    if ckdir is not None:
                        ckpt.save_window(ckdir / "windows", r, carries, fingerprint, _result_types())
                carry = r.test.carry
                results.append(r)
                if on_window is not None:
                    on_window(r)
                prev_state = r.policy_state or None
                how = "resumed from its checkpoint, " if loaded is not None else ""
                bar.advance(1, info=f"window {w.index}: {how}test {w.test} return {r.row()['test_return'] * 100:+.1f}%")
    else:
        raise ConfigError(f"unknown backend {backend!r}: use local or ray")
    from himari.sizing.sizer import SizingConfig

    sizing = SizingConfig.parse(config.sizing)
    ts, baselines = baseline_results(
        bars_by_symbol, windows[0].test.start, windows[-1].test.end, config.sim_config(), seed=config.seed,
        target_vol_annual=sizing.target_vol_annual, rebalance_band=sizing.rebalance_band, warmup_bars=config.warmup_bars,
    )
    return WFOResult(config, results, baselines, ts, resumed=resumed, pretrain_s=pretrain_s)


def _result_types() -> dict[str, type]:
    """The result dataclasses a window checkpoint holds (:mod:`himari.backtest.checkpoint` rebuilds only these)."""
    from himari.backtest.backtester import PathResult

    return {c.__name__: c for c in (PathResult, BacktestResult, ConfigurationResult)}


def pretrain_configurations(config: WFOConfig, window: WalkForwardWindow, bars_by_symbol: Mapping[str, Bars],
                            progress: bool = False) -> dict[str, Any]:
    """Configuration -> a policy pre-trained on the synthetic stress batch (:mod:`himari.training.pretrain`), seen
    through tactical pipelines fitted on the first window's training bars (the same fit that window uses)."""
    from himari.agents.ppo.config import PPOConfig
    from himari.tactical.pipeline import TacticalPipeline
    from himari.training.pretrain import PretrainConfig, pretrain_policy, stress_market

    pre = PretrainConfig.parse(config.pretrain)
    out: dict[str, Any] = {}
    markets: dict[str, Any] = {}
    for name in config.configuration_names:
        cfg = config.for_configuration(name)
        key = repr(sorted(cfg.tactical.items()))
        if key not in markets:
            pipelines = []
            for b in bars_by_symbol.values():
                fit_bars = _history(b, window.train.start, window.validation.end, cfg.warmup_bars)
                pipelines.append(TacticalPipeline(TacticalConfig.parse(cfg.tactical)).fit(
                    fit_bars, window.train.start, window.train.end))
            markets[key] = stress_market(pipelines, pre, config.seed)
        ppo = PPOConfig.parse({"total_steps": pre.steps, "n_steps": cfg.n_steps, **cfg.ppo})
        out[name] = pretrain_policy(cfg.policy, markets[key], cfg.sim_config(), ppo,
                                    seed=config.configuration_seeds(name, 10_000)[0], num_envs=cfg.num_envs,
                                    policy_config=cfg.policy_config, progress=progress)
    return out


def _run_ray(config: WFOConfig, windows: list[WalkForwardWindow], bars_by_symbol: Mapping[str, Bars],
             pretrained: Any, address: str | None = None) -> list[Any]:
    """Window fits as Ray tasks: on this machine by default (a local Ray instance), or on ``address`` (a cluster)."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("--backend ray needs the 'dist' extra: pip install 'himari[dist]'") from exc
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=1)(_fit_only)
        bars_ref = ray.put(dict(bars_by_symbol))
        futures = [remote.remote(config, w, bars_ref, pretrained) for w in windows]
        return list(ray.get(futures))
    finally:
        if started_here:
            ray.shutdown()


def write_final_bundle(result: WFOResult, out: str | Path) -> Path:
    from himari.trading.bundle import save_bundle

    return save_bundle(Path(out) / "bundle", result.final_bundle)
