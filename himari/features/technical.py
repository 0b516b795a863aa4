"""The 44 causal technical features, computed from trailing windows only.

Kernel: :func:`segment_features` takes the float64 OHLCV arrays of **one contiguous segment** (no missing bar inside)
and returns a ``(n, 44)`` array, NaN where a window is incomplete (warm-up). Orchestrator: :func:`compute_features`
splits a :class:`~himari.data.Bars` at every gap (``Bars.segment_id``), runs the kernel per segment and stacks.

Gap policy: a missing bar is a break. Every window and every recursion (EMA, Wilder smoothing, OBV) restarts at the
first bar after a gap, so no window ever treats a missing hour as one bar; rows whose window would reach back past
the segment start are warm-up and are NaN here (``valid=False`` in the pipeline). Nothing is filled from the future.

Row ``t`` depends on bars ``<= t`` of its own segment only, so computing on ``bars[:t+1]`` gives the same row ``t``
(truncation invariance, tested for every column). Definitions, units and windows of every column are in
``docs/FEATURES.md``; the indicator conventions (RSI/ATR Wilder smoothing, MACD EMAs with ``adjust=False``,
Bollinger with population std, stochastic %K/%D, OBV, ROC) follow the ``ta`` package and are cross-checked against it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from scipy.signal import lfilter

from himari.data.bars import Bars

# (name, first valid index within a segment)
FEATURE_SPECS: tuple[tuple[str, int], ...] = (
    # returns (log, over k bars)
    ("ret_1", 1),
    ("ret_4", 4),
    ("ret_12", 12),
    ("ret_24", 24),
    ("ret_48", 48),
    ("ret_168", 168),
    # momentum
    ("rsi_14", 14),
    ("rsi_14_norm", 14),
    ("macd_pct", 25),
    ("macd_signal_pct", 33),
    ("macd_hist_pct", 33),
    ("stoch_k", 13),
    ("stoch_d", 15),
    ("roc_12", 12),
    # volatility
    ("atr_14", 13),
    ("atr_14_pct", 13),
    ("bb_upper_dist", 19),
    ("bb_lower_dist", 19),
    ("bb_width", 19),
    ("rvol_12", 12),
    ("rvol_24", 24),
    ("vol_ratio_24_168", 168),
    # volume
    ("obv_norm_24", 24),
    ("obv_slope_24", 23),
    ("vwap_dev_24", 23),
    ("volume_ma_ratio_24", 23),
    ("volume_trend_12_48", 47),
    ("volume_zscore_24", 23),
    # candle structure
    ("hl_ratio", 0),
    ("close_position", 0),
    ("gap_up", 1),
    ("gap_down", 1),
    ("upper_shadow", 0),
    ("lower_shadow", 0),
    ("body", 0),
    ("range_position_24", 23),
    # statistics (over 168 one-bar log returns unless noted)
    ("skew_168", 168),
    ("kurt_168", 168),
    ("autocorr_1_168", 168),
    ("autocorr_4_168", 168),
    ("hurst_168", 168),
    ("mean_reversion_168", 168),
    ("zscore_24", 23),
    ("zscore_168", 167),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in FEATURE_SPECS)
FEATURE_WARMUP: dict[str, int] = dict(FEATURE_SPECS)
MAX_WARMUP: int = max(w for _, w in FEATURE_SPECS)
N_FEATURES: int = len(FEATURE_NAMES)
assert N_FEATURES == 44


class FeatureTable(NamedTuple):
    """Raw (un-normalized) features of a bar series."""

    timestamps_ns: np.ndarray  # (T,) int64
    values: np.ndarray  # (T, F) float64, NaN in warm-up
    names: tuple[str, ...]
    valid: np.ndarray  # (T,) bool: every column's window complete within the bar's segment
    position_in_segment: np.ndarray  # (T,) int64: bars since the segment's first bar


# --------------------------------------------------------------------------------------------------------------
# Rolling / recursive primitives (1-D float64, one contiguous segment; NaN where the window is incomplete)
# --------------------------------------------------------------------------------------------------------------
def _windows(x: np.ndarray, window: int) -> np.ndarray:
    """``(n - window + 1, window)`` read-only view; row j covers ``x[j : j + window]`` (ends at index j + window - 1).

    The same view as ``sliding_window_view(x, window)``, built with ``as_strided`` directly: the public helper's
    argument checks cost ~20 µs a call, a sizeable share of one new bar's features (``TacticalStream``)."""
    x = np.asarray(x)
    if x.ndim != 1 or window < 1 or window > len(x):
        return sliding_window_view(x, window)  # its errors / empty-result semantics
    step = x.strides[0]
    return as_strided(x, shape=(len(x) - window + 1, window), strides=(step, step), writeable=False)


def _place(n: int, window: int, values: np.ndarray) -> np.ndarray:
    out = np.full(n, np.nan)
    if n >= window:
        out[window - 1 :] = values
    return out


# Windows longer than this use cumulative sums (O(T), prefix-exact so still truncation invariant) on values shifted
# by the segment's first value; shorter ones use exact two-pass sliding windows.
_SLIDING_MAX = 32


def window_sums(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sums ``sum x[t-window+1 .. t]`` by differences of a cumulative sum (NaN before ``window - 1``).
    ``cumsum[t]`` depends only on ``x[:t+1]``, so the result is exactly truncation invariant."""
    n = len(x)
    out = np.full(n, np.nan)
    if n >= window:
        c = np.concatenate([[0.0], np.cumsum(x)])
        out[window - 1 :] = c[window:] - c[:-window]
    return out


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of ``x[t-window+1 .. t]``."""
    n = len(x)
    if window > _SLIDING_MAX and n:
        ref = x[0]
        return window_sums(x - ref, window) / window + ref
    return _place(n, window, _windows(x, window).mean(axis=1) if n >= window else np.empty(0))


def rolling_std(x: np.ndarray, window: int, ddof: int = 0) -> np.ndarray:
    """Trailing standard deviation: two-pass per window for short windows (no cancellation on price levels);
    for long windows ``sqrt((S2 - S1^2/w)/(w - ddof))`` on ``x - x_0`` (clipped at 0)."""
    n = len(x)
    if window > _SLIDING_MAX and n:
        d = x - x[0]
        s1 = window_sums(d, window)
        s2 = window_sums(d * d, window)
        var = np.maximum(s2 - s1 * s1 / window, 0.0) / (window - ddof)
        return np.sqrt(var)
    return _place(n, window, _windows(x, window).std(axis=1, ddof=ddof) if n >= window else np.empty(0))


def rolling_max(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x)
    return _place(n, window, _windows(x, window).max(axis=1) if n >= window else np.empty(0))


def rolling_min(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x)
    return _place(n, window, _windows(x, window).min(axis=1) if n >= window else np.empty(0))


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x)
    return _place(n, window, _windows(x, window).sum(axis=1) if n >= window else np.empty(0))


def ema(x: np.ndarray, alpha: float, start: int = 0) -> np.ndarray:
    """Recursive EMA ``y_t = alpha x_t + (1 - alpha) y_{t-1}`` seeded with ``y_start = x_start`` (pandas
    ``ewm(adjust=False)``); NaN before ``start``."""
    n = len(x)
    out = np.full(n, np.nan)
    if n <= start:
        return out
    seg = x[start:]
    out[start:] = lfilter([alpha], [1.0, alpha - 1.0], seg, zi=[(1.0 - alpha) * seg[0]])[0]
    return out


def wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14) -> np.ndarray:
    """Average true range (Wilder): ``ATR_{w-1} = mean(TR_0..TR_{w-1})``, ``ATR_t = ((w-1) ATR_{t-1} + TR_t)/w``;
    ``TR_t = max(H-L, |H-C_{t-1}|, |L-C_{t-1}|)``, ``TR_0 = H_0 - L_0`` (as ``ta.volatility.AverageTrueRange``)."""
    n = len(close)
    tr = high - low
    if n > 1:
        prev = close[:-1]
        tr[1:] = np.maximum.reduce([high[1:] - low[1:], np.abs(high[1:] - prev), np.abs(low[1:] - prev)])
    out = np.full(n, np.nan)
    if n < window:
        return out
    seed = tr[:window].mean()
    alpha = 1.0 / window
    rest = tr[window:]
    out[window - 1] = seed
    if len(rest):
        out[window:] = lfilter([alpha], [1.0, alpha - 1.0], rest, zi=[(1.0 - alpha) * seed])[0]
    return out


def rsi(close: np.ndarray, window: int = 14) -> np.ndarray:
    """Wilder RSI in [0, 100]: ``RSI = 100 - 100 / (1 + U/D)`` with ``U, D`` the EMAs (alpha = 1/window,
    ``adjust=False``) of gains and losses; 100 when ``D = 0``. As ``ta.momentum.RSIIndicator``, the change at the
    segment's first bar counts as 0. NaN before index ``window``."""
    n = len(close)
    out = np.full(n, np.nan)
    if n <= window:
        return out
    diff = np.zeros(n)
    diff[1:] = np.diff(close)
    up = np.where(diff > 0, diff, 0.0)
    down = np.where(diff < 0, -diff, 0.0)
    alpha = 1.0 / window
    ema_up = ema(up, alpha)
    ema_down = ema(down, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ema_down == 0, 100.0, 100.0 - 100.0 / (1.0 + ema_up / ema_down))
    out[:window] = np.nan
    return out


def _rolling_moments(returns: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-window skewness and excess kurtosis (bias-corrected, as pandas ``rolling.skew/kurt``) from windowed
    power sums: ``m2 = S2/w - mu^2``, ``m3 = S3/w - 3 mu S2/w + 2 mu^3``,
    ``m4 = S4/w - 4 mu S3/w + 6 mu^2 S2/w - 3 mu^4``. Windows with (numerically) no variance give 0."""
    n = len(returns)
    if n < window:
        nan = np.full(n, np.nan)
        return nan, nan.copy()
    x = returns
    k = float(window)
    mu = window_sums(x, window) / k
    e2 = window_sums(x * x, window) / k
    e3 = window_sums(x * x * x, window) / k
    e4 = window_sums(x * x * x * x, window) / k
    m2 = e2 - mu * mu
    m3 = e3 - 3.0 * mu * e2 + 2.0 * mu**3
    m4 = e4 - 4.0 * mu * e3 + 6.0 * mu * mu * e2 - 3.0 * mu**4
    flat = m2 <= 1e-12 * np.maximum(e2, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        g1 = m3 / m2**1.5
        skew = np.where(flat, 0.0, g1 * np.sqrt(k * (k - 1)) / (k - 2))
        g2 = m4 / m2**2 - 3.0
        kurt = np.where(flat, 0.0, ((k + 1) * g2 + 6) * (k - 1) / ((k - 2) * (k - 3)))
    skew[: window - 1] = np.nan
    kurt[: window - 1] = np.nan
    return skew, kurt


def _rolling_corr(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Trailing Pearson correlation of paired series from windowed sums (0 when either is flat in the window)."""
    n = len(x)
    if n < window:
        return np.full(n, np.nan)
    k = float(window)
    mx = window_sums(x, window) / k
    my = window_sums(y, window) / k
    exx = window_sums(x * x, window) / k
    eyy = window_sums(y * y, window) / k
    exy = window_sums(x * y, window) / k
    vx = exx - mx * mx
    vy = eyy - my * my
    cov = exy - mx * my
    flat = (vx <= 1e-12 * np.maximum(exx, 1e-300)) | (vy <= 1e-12 * np.maximum(eyy, 1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(flat, 0.0, cov / np.sqrt(vx * vy))
    corr[: window - 1] = np.nan
    return np.clip(corr, -1.0, 1.0)


def _rolling_slope(y: np.ndarray, window: int) -> np.ndarray:
    """OLS slope of ``y`` on bar index over the trailing window (units of y per bar)."""
    n = len(y)
    if n < window:
        return np.full(n, np.nan)
    t = np.arange(window, dtype=np.float64)
    t -= t.mean()
    w = _windows(y, window)
    slope = (w - w.mean(axis=1, keepdims=True)) @ t / float(t @ t)
    return _place(n, window, slope)


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) > k:
        out[k:] = x[:-k]
    return out


# --------------------------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------------------------
def segment_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    periods_per_year: float,
) -> np.ndarray:
    """The 44 features of one contiguous segment: ``(n, 44)`` float64, NaN during each column's warm-up.

    See ``docs/FEATURES.md`` for every definition; columns follow :data:`FEATURE_NAMES`.
    """
    n = len(close)
    cols: dict[str, np.ndarray] = {}
    logp = np.log(close)
    r1 = np.full(n, np.nan)
    if n > 1:
        r1[1:] = np.diff(logp)
    # -- returns
    for k in (1, 4, 12, 24, 48, 168):
        cols[f"ret_{k}"] = logp - _lag(logp, k)
    # -- momentum
    rsi14 = rsi(close, 14)
    cols["rsi_14"] = rsi14
    cols["rsi_14_norm"] = (rsi14 - 50.0) / 50.0
    ema_fast = ema(close, 2.0 / 13.0)
    ema_slow = ema(close, 2.0 / 27.0)
    macd = ema_fast - ema_slow
    macd[:25] = np.nan
    signal = ema(macd, 2.0 / 10.0, start=25)
    signal[:33] = np.nan
    cols["macd_pct"] = 100.0 * macd / close
    cols["macd_signal_pct"] = 100.0 * signal / close
    cols["macd_hist_pct"] = 100.0 * (macd - signal) / close
    lo14 = rolling_min(low, 14)
    hi14 = rolling_max(high, 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        stoch_k = 100.0 * (close - lo14) / (hi14 - lo14)
    stoch_k = np.where(hi14 - lo14 == 0, 50.0, stoch_k)
    stoch_k[: min(n, 13)] = np.nan
    cols["stoch_k"] = stoch_k
    cols["stoch_d"] = rolling_mean(np.nan_to_num(stoch_k, nan=0.0), 3)
    cols["stoch_d"][: min(n, 15)] = np.nan
    cols["roc_12"] = 100.0 * (close / _lag(close, 12) - 1.0)
    # -- volatility
    atr14 = wilder_atr(high, low, close, 14)
    cols["atr_14"] = atr14
    cols["atr_14_pct"] = 100.0 * atr14 / close
    mid20 = rolling_mean(close, 20)
    sd20 = rolling_std(close, 20, ddof=0)
    upper = mid20 + 2.0 * sd20
    lower = mid20 - 2.0 * sd20
    cols["bb_upper_dist"] = (upper - close) / close
    cols["bb_lower_dist"] = (close - lower) / close
    cols["bb_width"] = (upper - lower) / mid20
    ann = np.sqrt(periods_per_year)
    r1z = np.nan_to_num(r1, nan=0.0)
    rv12 = rolling_std(r1z, 12, ddof=1) * ann
    rv24 = rolling_std(r1z, 24, ddof=1) * ann
    rv168 = rolling_std(r1z, 168, ddof=1) * ann
    rv12[: min(n, 12)] = np.nan
    rv24[: min(n, 24)] = np.nan
    rv168[: min(n, 168)] = np.nan
    cols["rvol_12"] = rv12
    cols["rvol_24"] = rv24
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["vol_ratio_24_168"] = np.where(rv168 > 0, rv24 / rv168, 1.0)
    cols["vol_ratio_24_168"][np.isnan(rv168)] = np.nan
    # -- volume
    signed = np.where(np.concatenate([[False], close[1:] < close[:-1]]), -volume, volume)
    obv = np.cumsum(signed)
    vsum24 = rolling_sum(volume, 24)
    vmean24 = vsum24 / 24.0
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["obv_norm_24"] = np.where(vsum24 > 0, (obv - _lag(obv, 24)) / vsum24, 0.0)
        cols["obv_norm_24"][np.isnan(_lag(obv, 24)) | np.isnan(vsum24)] = np.nan
        cols["obv_slope_24"] = np.where(vmean24 > 0, _rolling_slope(obv, 24) / vmean24, 0.0)
        cols["obv_slope_24"][np.isnan(vmean24)] = np.nan
        typical = (high + low + close) / 3.0
        vwap = rolling_sum(typical * volume, 24) / vsum24
        cols["vwap_dev_24"] = np.where(vsum24 > 0, close / vwap - 1.0, 0.0)
        cols["vwap_dev_24"][np.isnan(vsum24)] = np.nan
        cols["volume_ma_ratio_24"] = np.where(vmean24 > 0, volume / vmean24, 1.0)
        cols["volume_ma_ratio_24"][np.isnan(vmean24)] = np.nan
        vm12 = rolling_mean(volume, 12)
        vm48 = rolling_mean(volume, 48)
        cols["volume_trend_12_48"] = np.where(vm48 > 0, vm12 / vm48 - 1.0, 0.0)
        cols["volume_trend_12_48"][np.isnan(vm48)] = np.nan
        vsd24 = rolling_std(volume, 24, ddof=0)
        cols["volume_zscore_24"] = np.where(vsd24 > 0, (volume - vmean24) / vsd24, 0.0)
        cols["volume_zscore_24"][np.isnan(vsd24)] = np.nan
    # -- candle structure
    rng = high - low
    cols["hl_ratio"] = high / low - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["close_position"] = np.where(rng > 0, (close - low) / rng, 0.5)
    prev_close = _lag(close, 1)
    open_gap = open_ / prev_close - 1.0
    cols["gap_up"] = np.maximum(open_gap, 0.0)
    cols["gap_down"] = np.maximum(-open_gap, 0.0)
    cols["gap_up"][np.isnan(open_gap)] = np.nan
    cols["gap_down"][np.isnan(open_gap)] = np.nan
    cols["upper_shadow"] = (high - np.maximum(open_, close)) / close
    cols["lower_shadow"] = (np.minimum(open_, close) - low) / close
    cols["body"] = close / open_ - 1.0
    lo24 = rolling_min(low, 24)
    hi24 = rolling_max(high, 24)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["range_position_24"] = np.where(hi24 - lo24 > 0, (close - lo24) / (hi24 - lo24), 0.5)
    cols["range_position_24"][np.isnan(hi24)] = np.nan
    # -- statistics over the 168 trailing one-bar returns (indices t-167..t, all inside the segment)
    r_tail = r1[1:]  # returns from index 1 on; window of 168 ending at t needs t >= 168
    skew, kurt = _rolling_moments(r_tail, 168)
    cols["skew_168"] = np.concatenate([[np.nan], skew])[:n] if n else skew
    cols["kurt_168"] = np.concatenate([[np.nan], kurt])[:n] if n else kurt
    for lag in (1, 4):
        # corr(r_s, r_{s-lag}) over the 168-lag pairs whose both returns lie in the trailing 168 returns
        pairs = 168 - lag
        x = r_tail[lag:]
        y = r_tail[:-lag] if len(r_tail) > lag else r_tail[:0]
        corr = _rolling_corr(x, y, pairs)
        out = np.full(n, np.nan)
        if len(corr):
            out[1 + lag :] = corr
        cols[f"autocorr_{lag}_168"] = out
    # Hurst exponent by the variance-ratio method: Var(k-bar return) = k^{2H} Var(1-bar return), k = 4
    r4 = logp - _lag(logp, 4)
    m1 = rolling_mean(np.nan_to_num(r1, nan=0.0) ** 2, 168)
    m4 = rolling_mean(np.nan_to_num(r4, nan=0.0) ** 2, 165)
    with np.errstate(divide="ignore", invalid="ignore"):
        hurst = np.where((m1 > 0) & (m4 > 0), 0.5 * np.log(m4 / m1) / np.log(4.0), 0.5)
    hurst = np.clip(hurst, 0.0, 1.0)
    hurst[: min(n, 168)] = np.nan
    cols["hurst_168"] = hurst
    # mean reversion: -beta of r_t on (p_{t-1} - mean p) over the trailing 168 (Dickey-Fuller regression slope)
    plag = _lag(logp, 1)
    mr = np.full(n, np.nan)
    if n > 168:
        px = plag[1:] - logp[0]
        ry = r1[1:]
        k = 168.0
        mx = window_sums(px, 168) / k
        my = window_sums(ry, 168) / k
        vx = window_sums(px * px, 168) / k - mx * mx
        cxy = window_sums(px * ry, 168) / k - mx * my
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = np.where(vx > 1e-14, cxy / vx, 0.0)
        mr[168:] = -beta[167:]
    cols["mean_reversion_168"] = mr
    for w in (24, 168):
        mu = rolling_mean(close, w)
        sd = rolling_std(close, w, ddof=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, (close - mu) / sd, 0.0)
        z[np.isnan(sd)] = np.nan
        cols[f"zscore_{w}"] = z
    out = np.empty((n, N_FEATURES), dtype=np.float64)
    for j, (name, warm) in enumerate(FEATURE_SPECS):
        col = cols[name]
        col[: min(n, warm)] = np.nan
        out[:, j] = col
    return out


def compute_features(bars: Bars) -> FeatureTable:
    """Run :func:`segment_features` on every contiguous segment of ``bars`` (gaps restart every window)."""
    n = len(bars)
    values = np.full((n, N_FEATURES), np.nan)
    gap = bars.gap_before
    starts = np.flatnonzero(np.concatenate([[True], gap[1:]])) if n else np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], n)
    o, h, lo, c, v = bars.open, bars.high, bars.low, bars.close, bars.volume
    ppy = bars.timeframe.periods_per_year
    position = np.zeros(n, dtype=np.int64)
    for s, e in zip(starts, ends, strict=True):
        values[s:e] = segment_features(o[s:e], h[s:e], lo[s:e], c[s:e], v[s:e], ppy)
        position[s:e] = np.arange(e - s)
    valid = position >= MAX_WARMUP
    valid &= np.isfinite(values).all(axis=1)
    return FeatureTable(bars.timestamps_ns, values, FEATURE_NAMES, valid, position)
