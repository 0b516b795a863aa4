"""Walk-forward optimization: fit on train, select on validation, trade the test period, stitch the test periods.

Per window (``himari.data.splits.walk_forward_windows``):

1. **Fit** — bars with timestamps < validation end only (test bars are not even loaded into the fitting market):
   the tactical pipeline (normalizers, Kalman/EKF, regime HMM) on the training period; then ``n_candidates`` PPO
   policies (different seeds; each fine-tuned from the previous window's selected weights when ``transfer`` is on)
   trained on episodes inside the training period, with the trainer's checkpoint selection on the validation period.
2. **Select** — each candidate runs through the full decision stack (sizing, risk, costs) on the validation period;
   the highest validation Sharpe wins. Test data plays no part in fitting or selection (a test corrupts the test
   months and checks the selection does not change).
3. **Trade** — the selected bundle is backtested on the test period (warm-up history before it), with the baselines.
   Every candidate's test returns are recorded too, but only for the PBO statistic (never for selection).

The stitched test periods form the out-of-sample equity curve; ``n_trials`` = candidates per window feeds the
deflated Sharpe ratio, and the (T, n_candidates) test return matrix feeds PBO (CSCV).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from himari.agents.registry import OFFLINE_KINDS, POLICY_KINDS, WALK_FORWARD_KINDS
from himari.backtest.ablation import ablation_bundles
from himari.backtest.backtester import BacktestResult, run_backtest
from himari.config import FrozenConfig
from himari.data.bars import Bars
from himari.data.splits import WalkForwardWindow, walk_forward_windows
from himari.env.sim import SimConfig
from himari.errors import ConfigError
from himari.tactical.pipeline import TacticalConfig
from himari.trading.bundle import Bundle
from himari.training.config import validate_sections
from himari.utils.seeding import child_seeds
from himari.utils.tracking import TrackingConfig


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
    n_candidates: int = Field(2, ge=1, le=32, description="policies (seeds) trained per window; selection on validation")
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
    warmup_bars: int = Field(2500, ge=0, description="history before each training start used as feature warm-up")
    ablation: bool = Field(True, description="trade the layer ablation (himari.backtest.ablation) beside the strategy")
    trials_ledger: str | None = Field(
        None, description="JSON ledger of configurations already evaluated on these data (a path, or the name of "
        "one shipped in himari/backtest/ledgers): the DSR counts them as trials; RUN/trials.json adds this run",
    )
    seed: int = 0
    # where curves and figures go (not part of the method: left out of to_dict(), the config hash and the ledger)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, exclude=True)

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
        return self

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

    @property
    def is_offline(self) -> bool:
        return self.policy in OFFLINE_KINDS

    def sim_config(self) -> SimConfig:
        if self.is_offline:
            return SimConfig.parse({"action_kind": "discrete", "window": self.window or 1,
                                    "episode_length": self.episode_length, **self.sim})
        base: dict[str, Any] = {
            "action_kind": POLICY_KINDS[self.policy].action_kind,
            "window": self.window or POLICY_KINDS[self.policy].window,
            "episode_length": self.episode_length,
            # the policy trains through the positioning layer and risk gates that trade it
            "sizing": dict(self.sizing),
            "risk": dict(self.risk),
        }
        base.update(self.sim)
        return SimConfig.parse(base)


@dataclass
class CandidateResult:
    seed: int
    validation_sharpe: float
    validation_total_return: float
    train_summary: dict[str, Any]
    test_returns: np.ndarray | None = None


@dataclass
class WindowResult:
    window: WalkForwardWindow
    selected: int
    candidates: list[CandidateResult]
    test: BacktestResult
    bundle: Bundle
    wall_s: float
    policy_state: dict[str, Any] = field(default_factory=dict)
    ablation: dict[str, Any] = field(default_factory=dict)  # layer -> PathResult over the test period

    def row(self, buy_and_hold_return: float = math.nan) -> dict[str, Any]:
        s = self.test.strategy.net_returns
        total = float(np.prod(1 + s) - 1) if len(s) else math.nan
        return {
            "window": self.window.index,
            "train": str(self.window.train),
            "validation": str(self.window.validation),
            "test": str(self.window.test),
            "selected": f"seed {self.candidates[self.selected].seed}",
            "validation_sharpe": round(self.candidates[self.selected].validation_sharpe, 3),
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
                   init_policy_state: dict[str, Any] | None, pretrained: Any) -> list[dict[str, str]]:
    """Every period whose data reaches this window's model: the lineage carried from the window it fine-tunes from
    (transfer), the pre-trained model's, and this window's own data from the first feature warm-up bar to the
    validation end (normalizers and regime model are fitted on the training part of it)."""
    prior = list((init_policy_state or {}).get("lineage") or [])
    if init_policy_state is None and pretrained is not None:
        prior = list(getattr(pretrained, "lineage", None) or [])
    import pandas as pd

    firsts = [int(b.timestamps_ns[0]) for b in fit_bars.values() if len(b)]
    start = pd.Timestamp(min(firsts), tz="UTC") if firsts else window.train.start
    own = {"start": start.isoformat(), "end": window.validation.end.isoformat(),
           "what": f"window {window.index}: feature warm-up, training (normalizers, regime model) and validation"}
    return [*prior, own]


def fit_window(
    config: WFOConfig,
    window: WalkForwardWindow,
    bars_by_symbol: Mapping[str, Bars],
    init_policy_state: dict[str, Any] | None = None,
    pretrained: Any = None,
    progress: bool = False,
) -> tuple[Bundle, list[CandidateResult], int, list[Bundle]]:
    """Fit and select one window using bars < validation end only. Returns (selected bundle, candidates, index,
    all candidate bundles)."""
    from himari.agents.ppo.config import PPOConfig
    from himari.env.market import MarketData
    from himari.tactical.pipeline import TacticalPipeline
    from himari.training.ppo import fit_stack

    symbols = tuple(bars_by_symbol)
    fit_bars = {s: _history(b, window.train.start, window.validation.end, config.warmup_bars) for s, b in bars_by_symbol.items()}
    lineage = window_lineage(config, window, fit_bars, init_policy_state, pretrained)
    if config.is_offline:
        return _fit_offline_window(config, window, fit_bars, init_policy_state is None and pretrained is None)
    tactical = {}
    frames = []
    for s in symbols:
        tp = TacticalPipeline(TacticalConfig.parse(config.tactical)).fit(fit_bars[s], window.train.start, window.train.end)
        tactical[s] = tp
        frames.append(tp.transform(fit_bars[s]))
    market = MarketData.from_frames([fit_bars[s] for s in symbols], frames)
    sim_cfg = config.sim_config()
    tr0, tr1 = market.index_of(window.train.start), market.index_of(window.train.end)
    va0, va1 = market.index_of(window.validation.start), market.num_bars
    first = init_policy_state is None and pretrained is None
    steps = config.steps_first_window if first else config.steps_per_window
    ppo_cfg = PPOConfig.parse({"total_steps": steps, "n_steps": config.n_steps, "eval_every_updates": 5, **config.ppo})
    seeds = child_seeds(config.seed * 100_003 + window.index, config.n_candidates)
    candidates: list[CandidateResult] = []
    bundles: list[Bundle] = []
    for c, seed in enumerate(seeds):
        if config.policy == "stack":
            policy, stages = fit_stack(
                market, sim_cfg, ppo_cfg, train_range=(tr0, tr1), seed=seed, num_envs=config.num_envs,
                eval_range=(va0, va1), policy_config=config.policy_config, progress=progress,
                init=None if init_policy_state is None else init_policy_state.get("stack"),
                description=f"window {window.index} candidate {c}",
            )
            result = stages["sizer"]
        else:
            policy, result = _fit_single(config, market, sim_cfg, ppo_cfg, (tr0, tr1), (va0, va1), seed,
                                         init_policy_state, pretrained, progress, f"window {window.index} candidate {c}")
        bundle = Bundle(
            symbols=symbols,
            timeframe=str(market.timeframe),
            tactical=tactical,
            policy=policy,
            sim_config=sim_cfg.to_dict(),
            sizing_config=dict(config.sizing),
            risk_config=dict(config.risk),
            meta={
                "model_id": f"{config.policy}-w{window.index:02d}-s{seed}",
                "fit_windows": window.as_dict(),
                "lineage": lineage,
                "train_steps": result.global_step,
            },
        )
        val = run_backtest(bundle, fit_bars, window.validation.start, window.validation.end, seed=seed,
                           keep_log=False, show_progress=False, market=market, with_baselines=False)
        r = val.strategy.net_returns
        candidates.append(
            CandidateResult(
                seed=seed,
                validation_sharpe=_sharpe(r, market.timeframe.periods_per_year),
                validation_total_return=float(np.prod(1 + r) - 1),
                train_summary={"steps": result.global_step, "steps_per_s": result.steps_per_s,
                               "best_val_metric": result.best_metric, "wall_s": result.wall_s},
            )
        )
        bundles.append(bundle)
    scores = np.array([c.validation_sharpe for c in candidates])
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    selected = int(np.argmax(scores))
    return bundles[selected], candidates, selected, bundles


def _fit_single(config: WFOConfig, market: Any, sim_cfg: SimConfig, ppo_cfg: Any, train_range: tuple[int, int],
                val_range: tuple[int, int], seed: int, init_policy_state: dict[str, Any] | None, pretrained: Any,
                progress: bool, description: str) -> tuple[Any, Any]:
    """One PPO policy of the window (selection on the validation range)."""
    from himari.env.sim import SimVecEnv
    from himari.training.ppo import fit_ppo

    eval_env = SimVecEnv.for_evaluation(market, sim_cfg, val_range[0], val_range[1], num_envs=1)
    return fit_ppo(
        config.policy, market, sim_cfg, ppo_cfg, train_range=train_range, seed=seed, num_envs=config.num_envs,
        eval_env=eval_env, policy_config=config.policy_config, progress=progress,
        init=init_policy_state if init_policy_state is not None else pretrained, description=description,
    )


def _fit_offline_window(
    config: WFOConfig, window: WalkForwardWindow, fit_bars: dict[str, Bars], first: bool
) -> tuple[Bundle, list[CandidateResult], int, list[Bundle]]:
    """Offline models (supervised, CQL, DT, CGDT, FLAG-TRADER) per window: fitted on train, selected on validation
    (their own selection inside ``fit_offline``, then across candidates by validation Sharpe through the full stack)."""
    from himari.trading.engine import DecisionEngine
    from himari.training.offline import fit_offline

    steps = config.steps_first_window if first else config.steps_per_window
    seeds = child_seeds(config.seed * 100_003 + window.index, config.n_candidates)
    candidates: list[CandidateResult] = []
    bundles: list[Bundle] = []
    market = None
    for seed in seeds:
        fit = fit_offline(config.policy, list(fit_bars.values()), window.train.start, window.train.end,
                          window.validation.end, steps, seed, dict(config.offline), dict(config.sizing), dict(config.risk))
        bundle = fit.bundle
        bundle.meta.update({"model_id": f"{config.policy}-w{window.index:02d}-s{seed}", "fit_windows": window.as_dict(),
                            "lineage": window_lineage(config, window, fit_bars, None, None)})
        if market is None:  # the candidates' tactical pipelines are fitted identically (same data and config)
            market = DecisionEngine(bundle).build_market(fit_bars)
        val = run_backtest(bundle, fit_bars, window.validation.start, window.validation.end, seed=seed,
                           keep_log=False, show_progress=False, market=market, with_baselines=False)
        r = val.strategy.net_returns
        tf = next(iter(fit_bars.values())).timeframe
        candidates.append(CandidateResult(seed, _sharpe(r, tf.periods_per_year), float(np.prod(1 + r) - 1),
                                          {"samples": steps}))
        bundles.append(bundle)
    scores = np.array([c.validation_sharpe for c in candidates])
    selected = int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf)))
    return bundles[selected], candidates, selected, bundles


def trade_window(
    config: WFOConfig,
    window: WalkForwardWindow,
    bars_by_symbol: Mapping[str, Bars],
    bundle: Bundle,
    candidates: list[CandidateResult],
    bundles: list[Bundle],
    carry: dict[str, Any] | None = None,
    candidate_carries: dict[str, Any] | None = None,
) -> tuple[BacktestResult, dict[str, Any], dict[str, Any]]:
    """Trade the test period with the selected bundle (continuing ``carry``: the account of the previous window),
    each candidate on its own account chain for PBO only, and the layer ablation (:mod:`himari.backtest.ablation`)
    on its own chains. Uses bars < test end. Returns (test result, the chains' carries, ablation paths)."""
    from himari.trading.engine import DecisionEngine

    test_bars = {s: _history(b, window.train.start, window.test.end, config.warmup_bars) for s, b in bars_by_symbol.items()}
    # the test period is claimed out of sample: a tactical fit that reaches into it is a LeakageError
    test_market = DecisionEngine(bundle).build_market(test_bars, eval_start=window.test.start)
    test = run_backtest(bundle, test_bars, window.test.start, window.test.end, seed=config.seed, show_progress=False,
                        market=test_market, carry=carry, with_baselines=carry is None)
    chains = dict(candidate_carries or {})
    carries = list(chains.get("candidates") or [None] * len(bundles))
    for c, (cand, b) in enumerate(zip(candidates, bundles, strict=True)):
        other = run_backtest(b, test_bars, window.test.start, window.test.end, seed=config.seed, keep_log=False,
                             show_progress=False, market=test_market, carry=carries[c], with_baselines=False)
        cand.test_returns = other.strategy.net_returns  # for PBO only; never used to select
        carries[c] = other.carry
    ablation_carries = dict(chains.get("ablation") or {})
    ablation: dict[str, Any] = {}
    for name, variant in ablation_bundles(bundle) if config.ablation else []:
        row = run_backtest(variant, test_bars, window.test.start, window.test.end, seed=config.seed, keep_log=False,
                           show_progress=False, market=test_market, carry=ablation_carries.get(name),
                           with_baselines=False)
        ablation[name] = row.strategy
        ablation_carries[name] = row.carry
    return test, {"candidates": carries, "ablation": ablation_carries}, ablation


def run_window(
    config: WFOConfig,
    window: WalkForwardWindow,
    bars_by_symbol: Mapping[str, Bars],
    init_policy_state: dict[str, Any] | None = None,
    pretrained: Any = None,
    progress: bool = False,
    carry: dict[str, Any] | None = None,
    candidate_carries: dict[str, Any] | None = None,
) -> tuple[WindowResult, dict[str, Any]]:
    """Fit/select one window (bars < validation end), then trade its test period (bars < test end)."""
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    started = time.perf_counter()
    bundle, candidates, selected, bundles = fit_window(config, window, bars_by_symbol, init_policy_state, pretrained, progress)
    test, carries, ablation = trade_window(config, window, bars_by_symbol, bundle, candidates, bundles, carry,
                                           candidate_carries)
    module = getattr(bundle.policy, "module", None)
    state: dict[str, Any]
    if config.policy == "stack":  # the next window fine-tunes both layers of the selected stack
        state = {"stack": bundle.policy}
    else:
        state = {} if module is None or config.is_offline else {k: v.detach().clone() for k, v in module.state_dict().items()}
    if state:  # the next window's model inherits this one's data lineage
        state["lineage"] = list(bundle.meta.get("lineage") or [])
    wall = time.perf_counter() - started
    return WindowResult(window, selected, candidates, test, bundle, wall, state, ablation), carries


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

    def candidate_matrix(self) -> np.ndarray:
        """(T, n_candidates) stitched test returns of every candidate (for PBO)."""
        cols = []
        for c in range(self.config.n_candidates):
            cols.append(np.concatenate([w.candidates[c].test_returns for w in self.windows]))  # type: ignore[misc]
        return np.stack(cols, axis=1)

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
) -> WFOResult:
    """Run every window, then the baselines over the stitched span.

    ``local``: sequential; each window fine-tunes from the previous one's selected weights (``config.transfer``).
    ``ray``: the fits run in parallel as Ray tasks (each from ``pretrained`` or from scratch, since a window cannot
    wait for its predecessor's weights). In both, the test periods are then traded in order on one account.
    """
    from himari.backtest.backtester import baseline_results
    from himari.utils.progress import progress_bar

    windows = config.windows()
    results: list[WindowResult] = []
    carry: dict[str, Any] | None = None
    carries: dict[str, Any] | None = None
    if backend == "ray":
        fits = _run_ray(config, windows, bars_by_symbol, pretrained, ray_address)
        for w, ((bundle, cands, sel, bundles), wall) in zip(windows, fits, strict=True):
            test, carries, ablation = trade_window(config, w, bars_by_symbol, bundle, cands, bundles, carry, carries)
            carry = test.carry
            r = WindowResult(w, sel, cands, test, bundle, wall, ablation=ablation)
            results.append(r)
            if on_window is not None:
                on_window(r)
    elif backend == "local":
        prev_state = None
        with progress_bar("walk-forward windows", total=len(windows), enabled=None if progress else False) as bar:
            for w in windows:
                r, carries = run_window(config, w, bars_by_symbol, prev_state if config.transfer else None,
                                        pretrained if prev_state is None else None, carry=carry,
                                        candidate_carries=carries)
                carry = r.test.carry
                results.append(r)
                if on_window is not None:
                    on_window(r)
                prev_state = r.policy_state or None
                bar.advance(1, info=f"window {w.index}: test {w.test} return {r.row()['test_return'] * 100:+.1f}%")
    else:
        raise ConfigError(f"unknown backend {backend!r}: use local or ray")
    from himari.sizing.sizer import SizingConfig

    sizing = SizingConfig.parse(config.sizing)
    ts, baselines = baseline_results(
        bars_by_symbol, windows[0].test.start, windows[-1].test.end, config.sim_config(), seed=config.seed,
        target_vol_annual=sizing.target_vol_annual, rebalance_band=sizing.rebalance_band, warmup_bars=config.warmup_bars,
    )
    return WFOResult(config, results, baselines, ts)


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
