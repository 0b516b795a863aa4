"""Market data held once for the simulator: prices, returns, features and regimes of A assets on one time axis.

Layout (T bars on a common time axis, A assets, F features, R = 4 regimes):

=====================  ==============  =========================================================================
field                  shape / dtype   meaning
=====================  ==============  =========================================================================
``timestamps_ns``      (T,) int64      bar open times (UTC ns), strictly increasing
``open/high/low/close`` (T, A) f64     raw prices; NaN where the asset has no bar at that time
``present``            (T, A) bool     the asset has a bar at that time
``mark_open/close``    (T, A) f64      valuation prices: the raw price where present, else the last traded close
                                       (before listing: the first traded open, so all returns there are 0)
``gap_return``         (T, A) f64      log(mark_open[t] / mark_close[t-1]) (0 at t = 0)
``intrabar_return``    (T, A) f64      log(mark_close[t] / mark_open[t])
``log_return``         (T, A) f64      gap_return + intrabar_return = close-to-close log return of the marks
``volatility``         (T, A) f64      trailing per-bar std of ``log_return`` over ``vol_window`` bars ending at t
``features``           (T, A, F) f32   normalized features (0 where invalid)
``regime_posterior``   (T, A, R) f32   P(regime_t | data <= t) (uniform where invalid)
``valid``              (T, A) bool     the asset's features are usable at t (present, warmed up, no gap in window)
``fillable``           (T, A) bool     an order decided at t can be filled at t+1: the asset has bars t and t+1
                                       and t+1 directly follows t (no fill across a gap). False at the last bar.
``tradable``           (T, A) bool     ``fillable & valid``: the policy's order for this asset is executed
=====================  ==============  =========================================================================

Valuation across a missing bar: no order can be filled there (``fillable`` is False), an open position is kept and
valued at the last traded price (return 0), and the move from that price to the next traded open is paid when
trading resumes. This is what holding through an exchange outage does; it is *accounting* only — no feature ever sees
a forward-filled price (features come from ``himari.features``, which breaks series at gaps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np

from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.env.protocol import REGIME_NAMES
from himari.errors import DataError
from himari.risk.config import RiskConfig
from himari.risk.evt import tail_es_columns
from himari.sizing.positioning import rolling_vol_per_bar, trailing_vol_per_bar

N_REGIMES = len(REGIME_NAMES)


class TacticalFrameLike(Protocol):
    """The shape of ``himari.tactical.pipeline.TacticalFrame`` that :meth:`MarketData.from_frames` reads."""

    timestamps_ns: np.ndarray  # (T,) int64
    features: np.ndarray  # (T, F) float32
    feature_names: tuple[str, ...]
    regime_posterior: np.ndarray  # (T, 4) float32
    valid: np.ndarray  # (T,) bool


# columns of MarketData.execution_table
EXEC_COLUMNS: tuple[str, ...] = (
    "gross_gap", "gross_intrabar", "gross_total", "mark_open", "mark_close", "volatility", "fillable", "valid"
)


@dataclass(frozen=True, eq=False)
class MarketData:
    """Arrays of A assets on a common time axis (see the module docstring for every field)."""

    timestamps_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    present: np.ndarray
    mark_open: np.ndarray
    mark_close: np.ndarray
    gap_return: np.ndarray
    intrabar_return: np.ndarray
    log_return: np.ndarray
    volatility: np.ndarray
    features: np.ndarray
    regime_posterior: np.ndarray
    valid: np.ndarray
    fillable: np.ndarray
    tradable: np.ndarray
    symbols: tuple[str, ...]
    feature_names: tuple[str, ...]
    timeframe: Timeframe
    vol_window: int = 24

    # -- sizes --------------------------------------------------------------------------------------------------
    @property
    def num_bars(self) -> int:
        return int(self.timestamps_ns.shape[0])

    @property
    def num_assets(self) -> int:
        return int(self.close.shape[1])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[2])

    def __len__(self) -> int:
        return self.num_bars

    @cached_property
    def execution_table(self) -> np.ndarray:
        """(T, A, 8) float64 of what one simulator step reads per bar and asset, in one cache line: gross returns
        exp(gap_return), exp(intrabar_return), exp(log_return), mark_open, mark_close, volatility, and fillable,
        valid as 1.0/0.0 (see :data:`EXEC_COLUMNS`). Computed once, read-only."""
        table = np.stack(
            [
                np.exp(self.gap_return),
                np.exp(self.intrabar_return),
                np.exp(self.log_return),
                self.mark_open,
                self.mark_close,
                self.volatility,
                self.fillable.astype(np.float64),
                self.valid.astype(np.float64),
            ],
            axis=-1,
        )
        table.flags.writeable = False
        return table

    @cached_property
    def risk_returns(self) -> np.ndarray:
        """(T, A) per-bar log returns as sizing and risk see them: ``log_return`` where the asset has a bar and that
        bar directly follows the previous one, NaN otherwise (first bar, across gaps, not listed). Read-only."""
        contiguous = np.zeros(self.num_bars, dtype=bool)
        contiguous[1:] = np.diff(self.timestamps_ns) == self.timeframe.nanoseconds
        out = np.where(contiguous[:, None] & self.present, self.log_return, np.nan)
        out.flags.writeable = False
        return out

    @cached_property
    def _sigma_cache(self) -> dict[tuple, Any]:
        return {}

    def sizing_sigma(self, lookback: int, min_bars: int) -> np.ndarray:
        """(T, A) trailing σ of :attr:`risk_returns` per bar (the positioning layer's
        :func:`~himari.sizing.positioning.rolling_vol_per_bar`), computed once per (lookback, min_bars)."""
        key = (int(lookback), int(min_bars))
        cache = self._sigma_cache
        if key not in cache:
            sigma = rolling_vol_per_bar(self.risk_returns, *key)
            sigma.flags.writeable = False
            cache[key] = sigma
        return cache[key]

    def sizing_sigma_at(self, lookback: int, min_bars: int, rows: np.ndarray) -> np.ndarray:
        """``sizing_sigma(lookback, min_bars)[rows]``; for a few rows of a market not yet cached (one trading
        decision on a market built for it) only those rows' windows are computed: the same kernel, the same floats
        (a row depends only on its window)."""
        key = (int(lookback), int(min_bars))
        rows = np.asarray(rows)
        if key in self._sigma_cache or rows.size > 4:
            return self.sizing_sigma(lookback, min_bars)[rows]
        returns = self.risk_returns
        flat = [trailing_vol_per_bar(returns[: t + 1], *key) for t in rows.reshape(-1).tolist()]
        return np.stack(flat).reshape((*rows.shape, returns.shape[1])) if flat else np.empty((0, returns.shape[1]))

    def tail_es(self, risk: RiskConfig) -> tuple[np.ndarray, np.ndarray]:
        """(T, A) expected shortfall of a unit long / short position in force at each bar under ``risk``'s EVT
        settings (:func:`himari.risk.evt.tail_es_columns`: the fits a trading session's cache holds there),
        computed once per setting."""
        key = ("evt", risk.evt_refit_every_bars, risk.evt_window_bars, risk.evt_level, risk.evt_threshold_quantile,
               risk.evt_min_exceedances, risk.evt_min_bars)
        cache = self._sigma_cache
        if key not in cache:
            cols = tail_es_columns(
                self.risk_returns, self.timestamps_ns, self.timeframe.nanoseconds,
                refit_every_bars=risk.evt_refit_every_bars, window=risk.evt_window_bars, level=risk.evt_level,
                threshold_quantile=risk.evt_threshold_quantile, min_exceedances=risk.evt_min_exceedances,
                min_bars=risk.evt_min_bars,
            )
            for c in cols:
                c.flags.writeable = False
            cache[key] = cols
        return cache[key]

    def index_of(self, timestamp: object) -> int:
        """First bar index whose timestamp is >= ``timestamp`` (UTC; str, pandas or numpy time)."""
        from himari.data.bars import to_utc_timestamp

        ts = to_utc_timestamp(timestamp)  # type: ignore[arg-type]
        assert ts is not None
        return int(np.searchsorted(self.timestamps_ns, ts.as_unit("ns").value, side="left"))

    # -- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        timestamps_ns: np.ndarray,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        features: np.ndarray | None = None,
        regime_posterior: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        symbols: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        timeframe: str | Timeframe = "1h",
        vol_window: int = 24,
        source: str = "MarketData",
    ) -> MarketData:
        """Build from arrays. Prices are (T,) or (T, A) with NaN where an asset has no bar; ``features`` (T, [A,] F),
        ``regime_posterior`` (T, [A,] 4), ``valid`` (T, [A]). Missing features default to none (F = 0), a missing
        posterior to uniform, a missing ``valid`` to ``present``.

        Raises :class:`DataError` naming the field and row on inconsistent input (shapes, non-increasing
        timestamps, non-positive or infinite prices, partially missing OHLC rows, NaN features on valid rows).
        """
        tf = Timeframe.parse(timeframe)
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        if ts.ndim != 1 or ts.size == 0:
            raise DataError(f"timestamps_ns must be a non-empty 1-D array, got shape {ts.shape}", source)
        if ts.size > 1:
            bad = np.flatnonzero(np.diff(ts) <= 0)
            if bad.size:
                raise DataError("timestamps_ns must be strictly increasing", source, int(bad[0]) + 1)
        t_len = ts.size

        def as_2d(name: str, arr: np.ndarray) -> np.ndarray:
            out = np.asarray(arr, dtype=np.float64)
            if out.ndim == 1:
                out = out[:, None]
            if out.ndim != 2 or out.shape[0] != t_len:
                raise DataError(f"{name} must have shape (T={t_len}, A), got {np.shape(arr)}", source)
            return out

        o, h, lo, c = (
            as_2d(n, a) for n, a in (("open", open), ("high", high), ("low", low), ("close", close))
        )
        n_assets = c.shape[1]
        for name, arr in (("open", o), ("high", h), ("low", lo)):
            if arr.shape != c.shape:
                raise DataError(f"{name} shape {arr.shape} differs from close shape {c.shape}", source)
        nan_any = np.isnan(o) | np.isnan(h) | np.isnan(lo) | np.isnan(c)
        nan_all = np.isnan(o) & np.isnan(h) & np.isnan(lo) & np.isnan(c)
        partial = nan_any & ~nan_all
        if partial.any():
            row, col = np.argwhere(partial)[0]
            raise DataError(f"asset {col}: open/high/low/close partially missing", source, int(row))
        present = ~nan_any
        for name, arr in (("open", o), ("high", h), ("low", lo), ("close", c)):
            bad_mask = present & ~(np.isfinite(arr) & (arr > 0))
            if bad_mask.any():
                row, col = np.argwhere(bad_mask)[0]
                raise DataError(
                    f"asset {col}: {name} must be finite and > 0, got {arr[row, col]}", source, int(row)
                )
        if not present.any(axis=0).all():
            col = int(np.flatnonzero(~present.any(axis=0))[0])
            raise DataError(f"asset {col} has no bars at all", source)

        names = tuple(symbols) if symbols is not None else tuple(f"asset{i}" for i in range(n_assets))
        if len(names) != n_assets:
            raise DataError(f"{len(names)} symbols for {n_assets} assets", source)

        # features (T, A, F)
        if features is None:
            feats = np.zeros((t_len, n_assets, 0), dtype=np.float32)
        else:
            feats = np.asarray(features, dtype=np.float32)
            if feats.ndim == 2:
                if n_assets != 1:
                    raise DataError(
                        f"features must be (T, A, F) for {n_assets} assets, got {feats.shape}", source
                    )
                feats = feats[:, None, :]
            if feats.ndim != 3 or feats.shape[:2] != (t_len, n_assets):
                raise DataError(
                    f"features must have shape (T={t_len}, A={n_assets}, F), got {feats.shape}", source
                )
        f_names = (
            tuple(feature_names)
            if feature_names is not None
            else tuple(f"f{i}" for i in range(feats.shape[2]))
        )
        if len(f_names) != feats.shape[2]:
            raise DataError(f"{len(f_names)} feature names for {feats.shape[2]} features", source)

        if regime_posterior is None:
            post = np.full((t_len, n_assets, N_REGIMES), 1.0 / N_REGIMES, dtype=np.float32)
        else:
            post = np.asarray(regime_posterior, dtype=np.float32)
            if post.ndim == 2 and n_assets == 1:
                post = post[:, None, :]
            if post.shape != (t_len, n_assets, N_REGIMES):
                raise DataError(
                    f"regime_posterior must have shape (T={t_len}, A={n_assets}, {N_REGIMES}), got {post.shape}",
                    source,
                )

        if valid is None:
            val = present.copy()
        else:
            val = np.asarray(valid, dtype=bool)
            if val.ndim == 1 and n_assets == 1:
                val = val[:, None]
            if val.shape != (t_len, n_assets):
                raise DataError(f"valid must have shape (T={t_len}, A={n_assets}), got {val.shape}", source)
            val = val & present
        bad_feat = val & ~np.isfinite(feats).all(axis=2)
        if bad_feat.any():
            row, col = np.argwhere(bad_feat)[0]
            raise DataError(f"asset {col}: non-finite feature on a valid row", source, int(row))
        bad_post = val & ~np.isfinite(post).all(axis=2)
        if bad_post.any():
            row, col = np.argwhere(bad_post)[0]
            raise DataError(f"asset {col}: non-finite regime posterior on a valid row", source, int(row))
        feats = np.where(val[:, :, None], feats, np.float32(0.0)).astype(np.float32)
        post = np.where(val[:, :, None], post, np.float32(1.0 / N_REGIMES)).astype(np.float32)

        mark_open, mark_close = _mark_prices(o, c, present)
        gap_ret = np.zeros_like(mark_close)
        gap_ret[1:] = np.log(mark_open[1:] / mark_close[:-1])
        intra_ret = np.log(mark_close / mark_open)
        log_ret = gap_ret + intra_ret
        vol = trailing_volatility(log_ret, vol_window)

        continuous = np.zeros(t_len, dtype=bool)
        if t_len > 1:
            continuous[:-1] = np.diff(ts) == tf.nanoseconds
        fillable = np.zeros_like(present)
        fillable[:-1] = present[:-1] & present[1:] & continuous[:-1, None]
        tradable = fillable & val

        def ro(arr: np.ndarray) -> np.ndarray:
            arr = np.ascontiguousarray(arr)
            arr.flags.writeable = False
            return arr

        return cls(
            timestamps_ns=ro(ts.copy()),
            open=ro(o.copy()),
            high=ro(h.copy()),
            low=ro(lo.copy()),
            close=ro(c.copy()),
            present=ro(present),
            mark_open=ro(mark_open),
            mark_close=ro(mark_close),
            gap_return=ro(gap_ret),
            intrabar_return=ro(intra_ret),
            log_return=ro(log_ret),
            volatility=ro(vol),
            features=ro(feats),
            regime_posterior=ro(post),
            valid=ro(val),
            fillable=ro(fillable),
            tradable=ro(tradable),
            symbols=names,
            feature_names=f_names,
            timeframe=tf,
            vol_window=int(vol_window),
        )

    @classmethod
    def from_frames(
        cls,
        bars_list: Sequence[Bars],
        tactical_frames: Sequence[TacticalFrameLike] | None = None,
        join: Literal["union", "intersection"] = "union",
        vol_window: int = 24,
    ) -> MarketData:
        """Align several symbols' bars (and their tactical frames) on one time axis.

        ``join="union"`` (default) keeps every timestamp at which any asset has a bar: an asset is absent
        (``present`` False, not tradable, position kept at the last price) before its listing and in its own gaps.
        ``join="intersection"`` keeps only timestamps at which all assets have a bar (so history before the latest
        listing is dropped; a bar missing in one asset removes that time for all, and the resulting jump in the time
        axis is a gap: no fill across it).

        A tactical frame's rows are matched to bars by timestamp; bars without a frame row are invalid (not
        tradable). Without tactical frames, :func:`basic_features` is used (a small causal fallback set).
        """
        if not bars_list:
            raise DataError("from_frames needs at least one Bars")
        tf = bars_list[0].timeframe
        for bars in bars_list:
            if bars.timeframe != tf:
                raise DataError(
                    f"{bars.symbol}: timeframe {bars.timeframe} differs from {tf}", bars.source or None
                )
            if len(bars) == 0:
                raise DataError(f"{bars.symbol}: no bars", bars.source or None)
        if tactical_frames is None:
            tactical_frames = [basic_features(b) for b in bars_list]
        if len(tactical_frames) != len(bars_list):
            raise DataError(f"{len(tactical_frames)} tactical frames for {len(bars_list)} bar sets")
        feature_names = tuple(tactical_frames[0].feature_names)
        for bars, frame in zip(bars_list, tactical_frames, strict=True):
            if tuple(frame.feature_names) != feature_names:
                raise DataError(f"{bars.symbol}: feature names differ from {bars_list[0].symbol}'s")

        stamps = [b.timestamps_ns for b in bars_list]
        if join == "union":
            axis = np.unique(np.concatenate(stamps))
        elif join == "intersection":
            axis = stamps[0]
            for s in stamps[1:]:
                axis = np.intersect1d(axis, s, assume_unique=True)
            if axis.size == 0:
                raise DataError("the symbols have no timestamp in common (intersection is empty)")
        else:
            raise DataError(f"join must be 'union' or 'intersection', got {join!r}")

        t_len, n_assets, n_feat = axis.size, len(bars_list), len(feature_names)
        prices = {k: np.full((t_len, n_assets), np.nan) for k in ("open", "high", "low", "close")}
        feats = np.zeros((t_len, n_assets, n_feat), dtype=np.float32)
        post = np.full((t_len, n_assets, N_REGIMES), 1.0 / N_REGIMES, dtype=np.float32)
        valid = np.zeros((t_len, n_assets), dtype=bool)
        for a, (bars, frame) in enumerate(zip(bars_list, tactical_frames, strict=True)):
            rows, pos = _match(axis, bars.timestamps_ns)
            for k in prices:
                prices[k][rows, a] = getattr(bars, k)[pos]
            f_ts = np.asarray(frame.timestamps_ns, dtype=np.int64)
            f_feat = np.asarray(frame.features, dtype=np.float32)
            f_post = np.asarray(frame.regime_posterior, dtype=np.float32)
            f_valid = np.asarray(frame.valid, dtype=bool)
            if not (f_feat.shape[0] == f_post.shape[0] == f_valid.shape[0] == f_ts.shape[0]):
                raise DataError(f"{bars.symbol}: tactical frame arrays have different lengths")
            rows_f, pos_f = _match(axis, f_ts)
            feats[rows_f, a] = f_feat[pos_f]
            post[rows_f, a] = f_post[pos_f]
            valid[rows_f, a] = f_valid[pos_f]
        return cls.from_arrays(
            axis,
            prices["open"],
            prices["high"],
            prices["low"],
            prices["close"],
            features=feats,
            regime_posterior=post,
            valid=valid,
            symbols=[b.symbol for b in bars_list],
            feature_names=feature_names,
            timeframe=tf,
            vol_window=vol_window,
            source="+".join(b.symbol for b in bars_list),
        )

    def slice(self, start: int, end: int) -> MarketData:
        """Bars ``[start, end)`` as a new MarketData (derived arrays recomputed; tradable False at the new end)."""
        if not 0 <= start < end <= self.num_bars:
            raise DataError(f"slice [{start}, {end}) outside [0, {self.num_bars})")
        s = slice(start, end)
        return MarketData.from_arrays(
            self.timestamps_ns[s],
            self.open[s],
            self.high[s],
            self.low[s],
            self.close[s],
            features=self.features[s],
            regime_posterior=self.regime_posterior[s],
            valid=self.valid[s],
            symbols=self.symbols,
            feature_names=self.feature_names,
            timeframe=self.timeframe,
            vol_window=self.vol_window,
        )


def _match(axis: np.ndarray, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``axis`` equal to entries of ``stamps`` and the matching positions in ``stamps``."""
    rows = np.searchsorted(axis, stamps)
    inside = rows < axis.size
    hit = np.zeros(stamps.size, dtype=bool)
    hit[inside] = axis[rows[inside]] == stamps[inside]
    return rows[hit], np.flatnonzero(hit)


def _mark_prices(o: np.ndarray, c: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valuation prices: raw where present; the last traded close where missing; the first open before listing."""
    t_len, n_assets = c.shape
    idx = np.where(present, np.arange(t_len)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)  # last present row at or before t (-1 before listing)
    first = present.argmax(axis=0)  # first present row per asset
    cols = np.arange(n_assets)[None, :]
    safe_last = np.where(last >= 0, last, 0)
    ffill_close = c[safe_last, cols]
    before = last < 0
    first_open = o[first, np.arange(n_assets)][None, :]
    mark_close = np.where(present, c, np.where(before, first_open, ffill_close))
    mark_open = np.where(present, o, mark_close)
    return mark_open.astype(np.float64), mark_close.astype(np.float64)


def trailing_volatility(log_return: np.ndarray, window: int) -> np.ndarray:
    """Per-bar volatility at t: population std of ``log_return[t-window+1 .. t]`` (fewer rows at the start).

    sigma_t = sqrt(mean(r^2) - mean(r)^2) over the trailing window; causal (row t uses returns <= t only).
    """
    if window < 2:
        raise DataError(f"vol_window must be >= 2, got {window}")
    r = np.asarray(log_return, dtype=np.float64)
    zeros = np.zeros((1, *r.shape[1:]))
    c1 = np.concatenate([zeros, np.cumsum(r, axis=0)])
    c2 = np.concatenate([zeros, np.cumsum(r * r, axis=0)])
    t = np.arange(1, r.shape[0] + 1)
    lo = np.maximum(t - window, 0)
    count = (t - lo).astype(np.float64).reshape((-1,) + (1,) * (r.ndim - 1))
    mean = (c1[t] - c1[lo]) / count
    mean_sq = (c2[t] - c2[lo]) / count
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


@dataclass(frozen=True)
class BasicFeatureFrame:
    """A :class:`TacticalFrameLike` built by :func:`basic_features` (fallback when no tactical pipeline is fitted)."""

    timestamps_ns: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    regime_posterior: np.ndarray
    valid: np.ndarray


BASIC_FEATURE_NAMES: tuple[str, ...] = ("ret_1", "ret_4", "ret_24", "vol_24", "range_1")


def basic_features(bars: Bars, scale_window: int = 24) -> BasicFeatureFrame:
    """A small causal feature set for tests, benchmarks and quick runs (not the 44-feature tactical set).

    ret_k = log(close_t / close_{t-k}) / (sigma_t * sqrt(k)); vol_24 = sigma_t * sqrt(periods_per_year)
    (annualized); range_1 = log(high_t / low_t) / sigma_t, with sigma_t the trailing std of 1-bar log returns over
    ``scale_window`` bars. A row is valid when its 24-bar window spans no gap. Regime posterior: uniform.
    """
    close = bars.close
    log_close = np.log(close)
    seg = bars.segment_id
    t_len = close.size
    r1 = np.zeros(t_len)
    r1[1:] = np.diff(log_close)
    r1[bars.gap_before] = 0.0
    sigma = np.maximum(trailing_volatility(r1, scale_window), 1e-6)
    feats = np.zeros((t_len, len(BASIC_FEATURE_NAMES)), dtype=np.float64)
    for j, k in enumerate((1, 4, 24)):
        ret = np.zeros(t_len)
        ret[k:] = log_close[k:] - log_close[:-k]
        feats[:, j] = ret / (sigma * np.sqrt(k))
    feats[:, 3] = sigma * np.sqrt(bars.timeframe.periods_per_year)
    feats[:, 4] = np.log(bars.high / bars.low) / sigma
    need = max(24, scale_window)
    valid = np.zeros(t_len, dtype=bool)
    if t_len > need:
        valid[need:] = seg[need:] == seg[:-need]
    feats = np.clip(np.where(valid[:, None], feats, 0.0), -50.0, 50.0).astype(np.float32)
    post = np.full((t_len, N_REGIMES), 1.0 / N_REGIMES, dtype=np.float32)
    return BasicFeatureFrame(bars.timestamps_ns, feats, BASIC_FEATURE_NAMES, post, valid)
