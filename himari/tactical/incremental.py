"""Bar-by-bar tactical inputs: :class:`TacticalStream` updates the fitted pipeline's state with one new bar and
returns that bar's row (normalized features, validity, regime posterior) without recomputing the history.

What each part keeps and how it matches :meth:`TacticalPipeline.transform` (``tests/tactical/test_incremental.py``
checks the rows on the bundled BTCUSDT hourly data):

* **44 technical features**: the kernel :func:`~himari.features.technical.segment_features` runs on the last
  ``WINDOW_BARS`` (256) bars of the current segment (every window, lags included, spans at most 169 bars); the 7
  recursive columns (Wilder RSI/ATR, MACD EMAs) are recomputed with the kernel's own arithmetic over the last
  ``TAIL_BARS`` (512), where they have forgotten their start (``(1 - alpha)^n`` with ``alpha >= 1/14``: below
  ``1e-16``). The row equals the full-history row up to float64 roundoff of the cumulative sums (~1e-12 relative).
* **Kalman / EKF filter features**: :func:`~himari.features.kalman.kalman_step` and
  :func:`~himari.features.ekf.ekf_step`, the batch recursions one bar at a time (bit-equal).
* **Normalizer**: percentile ranks of the new raw row among the trailing ``percentile_window`` raw rows (the same
  average-rank formula as pandas' rolling rank: integer counts, so equal ranks give equal floats); the z-score and
  spectral normalizers are applied to the trailing rows they need.
* **Regime**: the HMM observations (relative log volatility, trend t-stat, relative crash return) from the tail and
  two ring buffers of ``pct_window`` values, then one step of the Student-t HMM forward filter
  (:meth:`~himari.regime.student_t_hmm.StudentTHMM.filter_step`, the batch recursion one bar at a time). The
  trailing mean/std are computed directly over the window, where the batch uses pandas' running add/remove sums
  over the whole history, so the posterior agrees to float64 roundoff (tested to 1e-6; bit-equal in float32 on
  the tested data), not by construction.

The state (tail bars, ring buffers, filter states, HMM posterior) is saved as ``tactical_stream.json`` (scalars)
plus ``tactical_stream.npz`` (arrays, loaded with ``allow_pickle=False``); a saved stream only loads next to the
pipeline it was built from (checked by the pipeline's SHA-256).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.errors import DataError, RunDirError
from himari.features.ekf import EKFState, ekf_step
from himari.features.kalman import KalmanState, kalman_step
from himari.features.normalize import SpectralNormalizer
from himari.features.technical import (
    FEATURE_NAMES,
    MAX_WARMUP,
    compute_features,
    ema,
    rolling_std,
    rsi,
    segment_features,
    wilder_atr,
)
from himari.regime.labeller import regime_inputs
from himari.tactical.pipeline import TacticalPipeline, hmm_observations
from himari.utils.io import atomic_write_bytes, atomic_write_json, read_json

TAIL_BARS = 512  # bars of the current segment the recursive features see (see module docstring)
WINDOW_BARS = 256  # bars the windowed features see: every window, lags included, spans <= 169 bars
RECURSIVE_FEATURES = ("rsi_14", "rsi_14_norm", "macd_pct", "macd_signal_pct", "macd_hist_pct", "atr_14", "atr_14_pct")
FILTER_WARMUP = 24  # the pipeline treats a segment's first 24 filter outputs as warm-up
STREAM_VERSION = 1
STATE_JSON = "tactical_stream.json"
STATE_NPZ = "tactical_stream.npz"


class TacticalRow(NamedTuple):
    """One bar's tactical inputs (one row of :class:`~himari.tactical.pipeline.TacticalFrame`)."""

    timestamp_ns: int
    features: np.ndarray  # (F,) float32, 0 where not valid
    regime_posterior: np.ndarray  # (4,) float32, order REGIME_NAMES
    valid: bool


def pipeline_fingerprint(pipeline: TacticalPipeline) -> str:
    """SHA-256 of the fitted pipeline's JSON state: a saved stream belongs to exactly one pipeline."""
    payload = json.dumps(pipeline.state_dict(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _percentile_last(buffer: np.ndarray, min_periods: int) -> np.ndarray:
    """Average-rank percentile of the last row of ``buffer (n, F)`` among its non-NaN rows (per column), centred
    as in :func:`himari.features.normalize.rolling_percentile`: ``(rank - 1/2) / count``; NaN below
    ``min_periods`` observations or where the value is NaN."""
    x = buffer[-1]
    finite = ~np.isnan(buffer)
    count = finite.sum(axis=0).astype(np.float64)
    less = (buffer < x).sum(axis=0).astype(np.float64)
    equal = (buffer == x).sum(axis=0).astype(np.float64)
    rank = less + (equal + 1.0) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (rank - 0.5) / count
    out[np.isnan(x) | (count < min_periods)] = np.nan
    return out


def _window_moments(values: np.ndarray, min_periods: int) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the non-NaN entries (NaN below ``min_periods``), as pandas' rolling."""
    finite = values[~np.isnan(values)]
    if len(finite) < min_periods or len(finite) < 2:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std(ddof=1))


_RECURSIVE_INDEX = np.array([FEATURE_NAMES.index(name) for name in RECURSIVE_FEATURES])


def _recursive_features(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """The last row of the :data:`RECURSIVE_FEATURES` columns, with the arithmetic of ``segment_features`` over the
    same (longer) tail, so they equal what the kernel gives there; the windowed columns need only the short tail."""
    rsi14 = rsi(close, 14)
    macd = ema(close, 2.0 / 13.0) - ema(close, 2.0 / 27.0)
    macd[:25] = np.nan
    signal = ema(macd, 2.0 / 10.0, start=25)
    signal[:33] = np.nan
    atr14 = wilder_atr(high, low, close, 14)
    return np.array([
        rsi14[-1], ((rsi14 - 50.0) / 50.0)[-1],
        (100.0 * macd / close)[-1], (100.0 * signal / close)[-1], (100.0 * (macd - signal) / close)[-1],
        atr14[-1], (100.0 * atr14 / close)[-1],
    ])


class TacticalStream:
    """A fitted :class:`TacticalPipeline`'s inputs, updated one bar at a time (see module docstring).

    Build it from the history already seen (:meth:`from_history`), then call
    :meth:`update` with each new bar in time order.
    """

    def __init__(self, pipeline: TacticalPipeline) -> None:
        fitted = pipeline._require()
        self.pipeline = pipeline
        self.config = pipeline.config
        self._fitted = fitted
        timeframe = Timeframe.from_seconds(int(fitted.timeframe_seconds))
        self.timeframe_ns = timeframe.nanoseconds
        self.periods_per_year = timeframe.periods_per_year
        cfg = self.config
        self.raw_window = cfg.percentile_window
        if cfg.normalizer == "spectral":
            assert isinstance(fitted.feature_scaler, SpectralNormalizer)
            self.raw_window = max(self.raw_window, fitted.feature_scaler.window)
        self.n_raw = len(pipeline.base_feature_names)
        # autoencoder option: the trailing base feature rows and their validity (oldest first)
        self.ae = fitted.autoencoder
        ae_window = 0 if self.ae is None else self.ae.config.window
        self.ae_rows = np.zeros((ae_window, self.n_raw), dtype=np.float32)
        self.ae_ok = np.zeros(ae_window, dtype=bool)
        lab = cfg.labeller
        self.regime_window = lab.pct_window
        # state
        self.last_ts: int | None = None
        self.segment_position = -1  # index of the last bar within its segment
        self.tail = np.zeros((5, 0))  # (5, <= TAIL_BARS) open, high, low, close, volume of the current segment
        self.raw = np.full((self.raw_window, self.n_raw), np.nan)  # trailing raw feature rows (oldest first)
        self.log_vol = np.full(self.regime_window, np.nan)  # trailing HMM inputs (oldest first)
        self.crash_ret = np.full(self.regime_window, np.nan)
        self.kalman: KalmanState | None = None
        self.ekf: EKFState | None = None
        self.alpha: np.ndarray | None = None  # HMM state posterior after the last bar
        self.bars_seen = 0

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_history(cls, pipeline: TacticalPipeline, bars: Bars) -> TacticalStream:
        """The state after ``bars`` (the history already seen), computed with the batch code."""
        stream = cls(pipeline)
        fitted = stream._fitted
        if len(bars) == 0:
            return stream
        if bars.timeframe.seconds != fitted.timeframe_seconds:
            raise DataError(
                f"TacticalStream: pipeline fitted on {fitted.timeframe_seconds}s bars, history has {bars.timeframe}",
                bars.source or None,
            )
        cfg = stream.config
        table = compute_features(bars)
        n = len(bars)
        gap = bars.gap_before
        seg_start = int(np.flatnonzero(np.concatenate([[True], gap[1:]]))[-1])
        stream.segment_position = n - 1 - seg_start
        ohlcv = np.column_stack([bars.open, bars.high, bars.low, bars.close, bars.volume])
        stream.tail = np.ascontiguousarray(ohlcv[max(seg_start, n - TAIL_BARS):].T)
        raw = table.values
        if cfg.include_filters:
            raw = np.concatenate([raw, pipeline._filter_features(bars, fitted.kalman, fitted.ekf)], axis=1)
            logp = np.log(bars.close[seg_start:]).tolist()
            kal: KalmanState | None = None
            ekf: EKFState | None = None
            for i, y in enumerate(logp):
                kal = kalman_step(kal, y, fitted.kalman, i == 0, trend=True)
                ekf = ekf_step(ekf, y, fitted.ekf, i == 0)
            stream.kalman, stream.ekf = kal, ekf
        keep = min(n, stream.raw_window)
        stream.raw[-keep:] = raw[-keep:]
        inputs = regime_inputs(bars, cfg.labeller)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_vol = np.log(np.maximum(inputs.vol, 1e-12))
        log_vol[np.isnan(inputs.vol)] = np.nan
        keep = min(n, stream.regime_window)
        stream.log_vol[-keep:] = log_vol[-keep:]
        stream.crash_ret[-keep:] = inputs.ret[-keep:]
        obs, _ = hmm_observations(bars, cfg.labeller, with_labels=False)
        z = fitted.hmm_scaler.transform(obs)
        stream.alpha = fitted.hmm.filter(z, gap).posterior[-1].copy()
        if stream.ae is not None:
            base = pipeline._transform_base(bars)
            keep = min(n, len(stream.ae_ok))
            stream.ae_rows[len(stream.ae_ok) - keep:] = base.features[-keep:]
            stream.ae_ok[len(stream.ae_ok) - keep:] = base.valid[-keep:]
        stream.last_ts = int(bars.timestamps_ns[-1])
        stream.bars_seen = n
        return stream

    # ------------------------------------------------------------------------------------------------ update
    def update(self, timestamp_ns: int, open_: float, high: float, low: float, close: float, volume: float) -> TacticalRow:
        """Fold in the bar opening at ``timestamp_ns`` (UTC ns) and return its row. Bars must come in time order; a
        bar that does not directly follow the previous one starts a new segment (a gap, as in ``Bars``)."""
        ts = int(timestamp_ns)
        values = (float(open_), float(high), float(low), float(close), float(volume))
        if not all(np.isfinite(values)) or min(values[:4]) <= 0.0 or values[4] < 0.0:
            raise DataError(f"TacticalStream.update: bar at {ts} ns has a non-finite or non-positive field "
                            f"(open, high, low, close, volume) = {values}")
        if self.last_ts is not None and ts <= self.last_ts:
            raise DataError(f"TacticalStream.update: bar at {ts} ns is not after the last bar ({self.last_ts} ns)")
        gap = self.last_ts is None or ts - self.last_ts != self.timeframe_ns
        fitted, cfg = self._fitted, self.config
        bar = np.asarray(values)
        # buffers are shifted in place (no per-bar allocation: large temporaries cost page faults on every bar)
        if gap:
            self.tail = bar[:, None].copy()
            self.segment_position = 0
        elif self.tail.shape[1] < TAIL_BARS:
            self.tail = np.concatenate([self.tail, bar[:, None]], axis=1)
            self.segment_position += 1
        else:
            self.tail[:, :-1] = self.tail[:, 1:]
            self.tail[:, -1] = bar
            self.segment_position += 1
        pos = self.segment_position
        h, lo, c = self.tail[1], self.tail[2], self.tail[3]
        short = self.tail[:, -WINDOW_BARS:]
        tech = segment_features(*short, self.periods_per_year)[-1]
        if self.tail.shape[1] > WINDOW_BARS:
            tech[_RECURSIVE_INDEX] = _recursive_features(h, lo, c)
        tech_ok = pos >= MAX_WARMUP and bool(np.isfinite(tech).all())
        logp_tail = np.log(c)
        y = float(logp_tail[-1])
        parts = [tech]
        if cfg.include_filters:
            self.kalman = kalman_step(self.kalman, y, fitted.kalman, gap, trend=True)
            self.ekf = ekf_step(self.ekf, y, fitted.ekf, gap)
            filt = self._filter_row(logp_tail[-1:], pos)
            parts.append(filt)
        raw_row = np.concatenate(parts)
        self.raw[:-1] = self.raw[1:]
        self.raw[-1] = raw_row
        if cfg.normalizer == "percentile":
            pct = 2.0 * _percentile_last(self.raw, cfg.percentile_min_obs) - 1.0
            normed = pct.astype(np.float32)
            ok = tech_ok and bool(np.isfinite(normed).all()) and bool(np.isfinite(raw_row).all())
        else:
            assert fitted.feature_scaler is not None
            if isinstance(fitted.feature_scaler, SpectralNormalizer):
                normed = fitted.feature_scaler.transform(self.raw[-fitted.feature_scaler.window:])[-1]
            else:
                normed = fitted.feature_scaler.transform(raw_row[None, :])[0]
            ok = tech_ok and bool(np.isfinite(raw_row).all()) and bool(np.isfinite(normed).all())
        features = (np.nan_to_num(normed, nan=0.0) if ok else np.zeros(self.n_raw)).astype(np.float32)
        z = self._regime_observation(logp_tail, pos)
        self.alpha = fitted.hmm.filter_step(self.alpha, z, gap)
        posterior = fitted.hmm.regime_of_states(self.alpha).astype(np.float32)
        ok = ok and bool(np.isfinite(z).all())
        if self.ae is not None:
            features, ok = self._autoencode(features, ok)
        self.last_ts = ts
        self.bars_seen += 1
        return TacticalRow(ts, features, posterior, ok)

    def update_bars(self, bars: Bars) -> list[TacticalRow]:
        """:meth:`update` for each bar of ``bars`` in order."""
        return [
            self.update(int(t), o, h, lo, c, v)
            for t, o, h, lo, c, v in zip(
                bars.timestamps_ns.tolist(), bars.open.tolist(), bars.high.tolist(), bars.low.tolist(),
                bars.close.tolist(), bars.volume.tolist(), strict=True,
            )
        ]

    def _autoencode(self, features: np.ndarray, ok: bool) -> tuple[np.ndarray, bool]:
        """The autoencoder option on the new base row (as ``TacticalPipeline.with_autoencoder``)."""
        assert self.ae is not None
        self.ae_rows[:-1] = self.ae_rows[1:]
        self.ae_rows[-1] = features
        self.ae_ok[:-1] = self.ae_ok[1:]
        self.ae_ok[-1] = ok
        ok = bool(self.ae_ok.all())
        n_out = len(self.pipeline.feature_names)
        if not ok:
            return np.zeros(n_out, dtype=np.float32), False
        codes = self.ae.encode_window(self.ae_rows)
        parts = [codes] if self.ae.config.mode == "replace" else [features, codes]
        return np.concatenate(parts).astype(np.float32), True

    def _filter_row(self, logp: np.ndarray, pos: int) -> np.ndarray:
        """The 4 filter features of the last bar, with the arithmetic of ``TacticalPipeline._filter_features``."""
        assert self.kalman is not None and self.ekf is not None
        if pos < FILTER_WARMUP:
            return np.full(4, np.nan)
        ann = np.sqrt(self.periods_per_year)
        level = np.array([self.kalman.m])
        slope = np.array([self.kalman.b])
        ek_level = np.array([self.ekf.m])
        ek_logv = np.array([self.ekf.h])
        return np.concatenate([logp - level, slope * 1e4, np.sqrt(np.exp(ek_logv)) * ann, logp - ek_level])

    def _regime_observation(self, logp_tail: np.ndarray, pos: int) -> np.ndarray:
        """Standardized HMM observation (3,) of the last bar (see ``hmm_observations``); updates the ring buffers."""
        lab = self.config.labeller
        vw, tw, cw = lab.vol_window, lab.trend_window, lab.crash_window
        m = len(logp_tail)
        r1 = np.zeros(m)
        r1[1:] = np.diff(logp_tail)
        ann = np.sqrt(self.periods_per_year)
        # the last window only (pos >= w: it holds w real returns, never the segment's first bar)
        vol = float(rolling_std(r1[-vw:], vw, ddof=1)[-1]) * ann if pos >= vw else float("nan")
        trend = float("nan")
        if pos >= tw:
            sd_t = float(rolling_std(r1[-tw:], tw, ddof=1)[-1])
            k_ret = logp_tail[-1] - logp_tail[-1 - tw]
            trend = float(np.abs(k_ret) / (sd_t * np.sqrt(tw))) if sd_t > 0 else 0.0
        ret = float(logp_tail[-1] - logp_tail[-1 - cw]) if pos >= cw else float("nan")
        log_vol = float(np.log(np.maximum(vol, 1e-12))) if not np.isnan(vol) else float("nan")
        self.log_vol[:-1] = self.log_vol[1:]
        self.log_vol[-1] = log_vol
        self.crash_ret[:-1] = self.crash_ret[1:]
        self.crash_ret[-1] = ret
        mean_lv, _ = _window_moments(self.log_vol, lab.pct_min_periods)
        _, std_ret = _window_moments(self.crash_ret, lab.pct_min_periods)
        if not np.isfinite(std_ret) or np.isnan(ret):
            rel_ret = float("nan")
        else:
            rel_ret = ret / std_ret if std_ret > 0 else 0.0
        obs = np.array([[log_vol - mean_lv, trend, rel_ret]])
        return self._fitted.hmm_scaler.transform(obs)[0]

    # ------------------------------------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able scalars, arrays) of the stream state."""
        meta = {
            "kind": "tactical_stream",
            "version": STREAM_VERSION,
            "pipeline_sha256": pipeline_fingerprint(self.pipeline),
            "tail_bars": TAIL_BARS,
            "last_ts": self.last_ts,
            "segment_position": self.segment_position,
            "bars_seen": self.bars_seen,
            "kalman": None if self.kalman is None else list(self.kalman),
            "ekf": None if self.ekf is None else list(self.ekf),
        }
        arrays = {"tail": self.tail, "raw": self.raw, "log_vol": self.log_vol, "crash_ret": self.crash_ret,
                  "alpha": np.zeros(0) if self.alpha is None else self.alpha,
                  "ae_rows": self.ae_rows, "ae_ok": self.ae_ok}
        return meta, arrays

    def save(self, directory: str | Path) -> Path:
        """Write ``tactical_stream.npz`` then ``tactical_stream.json`` atomically (no pickle)."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        meta, arrays = self.state()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(root / STATE_NPZ, buffer.getvalue())
        atomic_write_json(root / STATE_JSON, meta)
        return root / STATE_JSON

    @classmethod
    def load(cls, directory: str | Path, pipeline: TacticalPipeline) -> TacticalStream:
        """The stream saved in ``directory``; ``pipeline`` must be the one it was built from."""
        root = Path(directory)
        meta_path, npz_path = root / STATE_JSON, root / STATE_NPZ
        if not meta_path.exists() or not npz_path.exists():
            raise RunDirError(f"{root}: a saved tactical stream needs {STATE_JSON} and {STATE_NPZ}")
        meta = read_json(meta_path)
        if meta.get("kind") != "tactical_stream" or meta.get("version") != STREAM_VERSION:
            raise RunDirError(f"{meta_path}: not a version-{STREAM_VERSION} tactical stream")
        if meta.get("tail_bars") != TAIL_BARS:
            raise RunDirError(f"{meta_path}: saved with tail_bars={meta.get('tail_bars')}, this version uses {TAIL_BARS}")
        if meta.get("pipeline_sha256") != pipeline_fingerprint(pipeline):
            raise RunDirError(f"{meta_path}: saved for another fitted pipeline (SHA-256 differs)")
        stream = cls(pipeline)
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        expected = {"raw": stream.raw.shape, "log_vol": stream.log_vol.shape, "crash_ret": stream.crash_ret.shape}
        for key, shape in expected.items():
            if arrays.get(key) is None or arrays[key].shape != shape:
                raise RunDirError(f"{npz_path}: array {key!r} missing or not of shape {shape}")
        stream.tail = np.ascontiguousarray(arrays["tail"], dtype=np.float64).reshape(5, -1)
        stream.raw = arrays["raw"].astype(np.float64)
        stream.log_vol = arrays["log_vol"].astype(np.float64)
        stream.crash_ret = arrays["crash_ret"].astype(np.float64)
        stream.alpha = arrays["alpha"].astype(np.float64) if arrays["alpha"].size else None
        if stream.ae is not None:
            if arrays.get("ae_rows") is None or arrays["ae_rows"].shape != stream.ae_rows.shape:
                raise RunDirError(f"{npz_path}: array 'ae_rows' missing or not of shape {stream.ae_rows.shape}")
            stream.ae_rows = arrays["ae_rows"].astype(np.float32)
            stream.ae_ok = arrays["ae_ok"].astype(bool)
        stream.last_ts = None if meta["last_ts"] is None else int(meta["last_ts"])
        stream.segment_position = int(meta["segment_position"])
        stream.bars_seen = int(meta["bars_seen"])
        stream.kalman = None if meta["kalman"] is None else KalmanState(*meta["kalman"][:5], int(meta["kalman"][5]))
        stream.ekf = None if meta["ekf"] is None else EKFState(*meta["ekf"])
        return stream


__all__ = ["TAIL_BARS", "TacticalRow", "TacticalStream", "pipeline_fingerprint"]
