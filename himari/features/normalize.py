"""Causal normalizers for feature matrices ``(T, F)``.

* :func:`rolling_percentile` — percentile rank of ``x_t`` among the trailing ``window`` rows (500 by default),
  ``p_t = (#{x_s < x_t} + (#{x_s = x_t} + 1)/2) / n`` over the non-NaN ``x_s``, ``s in [t - window + 1, t]`` (the
  "average" rank of pandas). Stateless and causal; nothing to fit. NaN until ``min_periods`` observations exist.
* :class:`FrozenStandardizer` — mean/std fitted on a training window, then frozen: ``z = clip((x - mu)/sd)``.
* :class:`SpectralNormalizer` — causal frequency-domain normalizer: the trailing ``window`` values are demeaned,
  transformed (rFFT), divided by the training-window mean amplitude spectrum (spectral whitening) and transformed
  back; the output is the **last** sample, so only data ``<= t`` is used. Because the division is by a frozen
  spectrum, the map is a fixed causal FIR filter whose taps are computed once.

Fitted normalizers record their fit window (:class:`FitWindow`) and raise :class:`~himari.errors.LeakageError` when
asked to serve an evaluation period that starts before the fit window ends (the evaluation rows would be scaled with
statistics of their own future).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from himari.errors import DataError, LeakageError


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class FitWindow:
    """Half-open ``[start_ns, end_ns)`` UTC window the statistics were fitted on."""

    start_ns: int
    end_ns: int

    def check_evaluation_start(self, eval_start_ns: int | None, what: str) -> None:
        """Raise :class:`LeakageError` when an evaluation starting at ``eval_start_ns`` overlaps the fit window."""
        if eval_start_ns is not None and int(eval_start_ns) < self.end_ns:
            raise LeakageError(
                f"{what} was fitted on [{_iso(self.start_ns)}, {_iso(self.end_ns)}) but is asked to serve an "
                f"evaluation starting {_iso(int(eval_start_ns))}, before the fit window ends"
            )

    def select(self, timestamps_ns: np.ndarray) -> np.ndarray:
        mask = (timestamps_ns >= self.start_ns) & (timestamps_ns < self.end_ns)
        return mask

    def to_dict(self) -> dict[str, Any]:
        return {"start_ns": int(self.start_ns), "end_ns": int(self.end_ns), "start": _iso(self.start_ns), "end": _iso(self.end_ns)}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FitWindow:
        return cls(int(payload["start_ns"]), int(payload["end_ns"]))


def rolling_percentile(values: np.ndarray, window: int = 500, min_periods: int | None = None) -> np.ndarray:
    """Trailing percentile rank in [0, 1] per column (see module docstring); NaN input rows are skipped."""
    if values.ndim == 1:
        return rolling_percentile(values[:, None], window, min_periods)[:, 0]
    if window < 2:
        raise DataError(f"rolling_percentile: window must be >= 2, got {window}")
    mp = window if min_periods is None else int(min_periods)
    frame = pd.DataFrame(values)
    ranks = frame.rolling(window, min_periods=mp).rank(pct=False, method="average")
    counts = frame.notna().astype(np.float64).rolling(window, min_periods=1).sum()
    # pandas "average" rank r counts #{<} + (#{=}+1)/2, so p = r / n lies in (0, 1]; centre it: (r - 1/2) / n
    out = (ranks.to_numpy() - 0.5) / counts.to_numpy()
    return out


@dataclass
class FrozenStandardizer:
    """``z = clip((x - mean) / std, -clip, clip)`` with mean/std fitted on a training window then frozen."""

    mean: np.ndarray
    std: np.ndarray
    fit_window: FitWindow
    clip: float = 8.0

    @classmethod
    def fit(
        cls, values: np.ndarray, timestamps_ns: np.ndarray, start_ns: int, end_ns: int, clip: float = 8.0
    ) -> FrozenStandardizer:
        """Fit on the finite rows of ``values`` whose timestamps lie in ``[start_ns, end_ns)``."""
        window = FitWindow(int(start_ns), int(end_ns))
        rows = values[window.select(timestamps_ns)]
        if len(rows) < 2:
            raise DataError(f"FrozenStandardizer: fewer than 2 rows in fit window {window.to_dict()}")
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(rows, axis=0)
            std = np.nanstd(rows, axis=0)
        bad = ~np.isfinite(mean)
        if bad.any():
            raise DataError(f"FrozenStandardizer: column(s) {np.flatnonzero(bad).tolist()} have no finite value in the fit window")
        std = np.where(std > 0, std, 1.0)
        return cls(mean=mean, std=std, fit_window=window, clip=clip)

    def transform(self, values: np.ndarray, eval_start_ns: int | None = None) -> np.ndarray:
        self.fit_window.check_evaluation_start(eval_start_ns, "FrozenStandardizer")
        return np.clip((values - self.mean) / self.std, -self.clip, self.clip)

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "fit_window": self.fit_window.to_dict(), "clip": self.clip}

    @classmethod
    def from_state(cls, payload: dict[str, Any]) -> FrozenStandardizer:
        return cls(
            np.asarray(payload["mean"], dtype=np.float64),
            np.asarray(payload["std"], dtype=np.float64),
            FitWindow.from_dict(payload["fit_window"]),
            float(payload["clip"]),
        )


def _causal_windows(values: np.ndarray, window: int) -> np.ndarray:
    """``(T - window + 1, window, F)`` trailing windows of a ``(T, F)`` array (row j ends at j + window - 1)."""
    return sliding_window_view(values, window, axis=0).transpose(0, 2, 1)


def whitening_taps(amplitude: np.ndarray, window: int) -> np.ndarray:
    """FIR taps ``h`` (window, F) with ``out_t = sum_k h_k x_{t-window+1+k}`` equal to the last sample of
    ``irfft(rfft(w - mean(w)) / amplitude)`` for the trailing window ``w`` (a linear map of ``w``)."""
    eye = np.eye(window) - 1.0 / window  # column k: e_k demeaned
    spectra = np.fft.rfft(eye, axis=0)  # (bins, window)
    taps = np.empty((window, amplitude.shape[1]))
    for f in range(amplitude.shape[1]):
        taps[:, f] = np.fft.irfft(spectra / amplitude[:, f : f + 1], n=window, axis=0)[-1]
    return taps


@dataclass
class SpectralNormalizer:
    """Causal spectral whitening over a trailing window with a training-window amplitude spectrum (frozen)."""

    amplitude: np.ndarray  # (window // 2 + 1, F)
    window: int
    fit_window: FitWindow
    clip: float = 8.0

    @classmethod
    def fit(
        cls, values: np.ndarray, timestamps_ns: np.ndarray, start_ns: int, end_ns: int, window: int = 64, clip: float = 8.0
    ) -> SpectralNormalizer:
        """Mean amplitude spectrum of the demeaned complete windows lying inside the fit window."""
        fw = FitWindow(int(start_ns), int(end_ns))
        rows = values[fw.select(timestamps_ns)]
        if len(rows) < window:
            raise DataError(f"SpectralNormalizer: fit window holds {len(rows)} rows, fewer than window={window}")
        wins = _causal_windows(rows, window)
        finite = np.isfinite(wins).all(axis=(1, 2))
        wins = wins[finite]
        if len(wins) == 0:
            raise DataError("SpectralNormalizer: no complete (NaN-free) window in the fit window")
        demeaned = wins - wins.mean(axis=1, keepdims=True)
        amp = np.abs(np.fft.rfft(demeaned, axis=1)).mean(axis=0)  # (bins, F)
        floor = np.maximum(amp.max(axis=0, keepdims=True) * 1e-6, 1e-12)
        amp = np.maximum(amp, floor)
        return cls(amplitude=amp, window=window, fit_window=fw, clip=clip)

    def transform(self, values: np.ndarray, eval_start_ns: int | None = None) -> np.ndarray:
        """Whitened series (T, F); NaN for the first ``window - 1`` rows and wherever a window holds a NaN."""
        self.fit_window.check_evaluation_start(eval_start_ns, "SpectralNormalizer")
        t, f = values.shape
        out = np.full((t, f), np.nan)
        if t < self.window:
            return out
        taps = whitening_taps(self.amplitude, self.window)
        wins = _causal_windows(values, self.window)
        # scale so a white input of unit variance keeps roughly unit variance
        out[self.window - 1 :] = np.einsum("jwf,wf->jf", wins, taps) * np.sqrt(self.window)
        return np.clip(out, -self.clip, self.clip)

    def state(self) -> dict[str, Any]:
        return {"amplitude": self.amplitude.tolist(), "window": self.window, "fit_window": self.fit_window.to_dict(), "clip": self.clip}

    @classmethod
    def from_state(cls, payload: dict[str, Any]) -> SpectralNormalizer:
        return cls(
            np.asarray(payload["amplitude"], dtype=np.float64),
            int(payload["window"]),
            FitWindow.from_dict(payload["fit_window"]),
            float(payload["clip"]),
        )
