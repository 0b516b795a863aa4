"""The fitted tactical pipeline: bars -> normalized causal features + online regime posterior.

``fit(bars, train_start, train_end)`` uses bars with timestamps ``< train_end`` only (earlier bars serve as warm-up
history) and fits, on rows in ``[train_start, train_end)``:

1. Kalman local-linear-trend noise variances (MLE on log price) and EKF volatility parameters;
2. the feature normalizer (``percentile``: nothing to fit, trailing window; ``zscore``: frozen mean/std;
   ``spectral``: frozen amplitude spectrum);
3. the regime model: rule labels (trailing percentiles) -> frozen standardizer of the HMM observations
   (log vol, trend t-stat, 24-bar return) -> Student-t HMM, supervised from the labels (default) or refined by EM.

``transform(bars)`` is causal: row t depends on bars ``<= t`` only (tested by truncation at many cut points).
Features are float32, NaN-free (invalid rows hold 0 and ``valid=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field

from himari.config import FrozenConfig
from himari.data.bars import Bars, to_utc_timestamp
from himari.errors import DataError, LeakageError, RunDirError
from himari.features.ekf import EKFParams, ekf_filter, fit_ekf_mle
from himari.features.kalman import KalmanParams, fit_kalman_mle, kalman_filter
from himari.features.normalize import FitWindow, FrozenStandardizer, SpectralNormalizer, rolling_percentile
from himari.features.technical import FEATURE_NAMES, compute_features
from himari.regime.labeller import REGIME_NAMES, LabellerConfig, label_from_inputs, regime_inputs
from himari.regime.student_t_hmm import StudentTHMM, map_states_by_means
from himari.utils.io import atomic_write_json, read_json

FILTER_FEATURE_NAMES: tuple[str, ...] = ("kf_level_dev", "kf_slope", "ekf_vol", "ekf_level_dev")
PIPELINE_FILE = "tactical_pipeline.json"
PIPELINE_VERSION = 1


class TacticalConfig(FrozenConfig):
    """Configuration of the tactical inputs (features, normalizer, regime model)."""

    normalizer: Literal["percentile", "zscore", "spectral"] = "percentile"
    percentile_window: int = Field(500, ge=20, le=100_000)
    percentile_min_periods: int = Field(250, ge=10)
    zscore_clip: float = Field(8.0, gt=0)
    spectral_window: int = Field(64, ge=8, le=4096)
    include_filters: bool = True
    hmm_fit: Literal["supervised", "em"] = "supervised"
    hmm_dof: float | None = Field(None, gt=0.5, le=500, description="fixed Student-t dof; None = estimated (ECM)")
    hmm_em_iters: int = Field(15, ge=1, le=500)
    labeller: LabellerConfig = LabellerConfig()


class TacticalFrame(NamedTuple):
    timestamps_ns: np.ndarray  # (T,) int64
    features: np.ndarray  # (T, F) float32, NaN-free
    feature_names: tuple[str, ...]
    regime_posterior: np.ndarray  # (T, 4) float32, order REGIME_NAMES
    valid: np.ndarray  # (T,) bool


@dataclass
class _Fitted:
    fit_window: FitWindow
    kalman: KalmanParams
    ekf: EKFParams
    hmm_scaler: FrozenStandardizer
    hmm: StudentTHMM
    feature_scaler: FrozenStandardizer | SpectralNormalizer | None


def _ns(value: object, name: str) -> int:
    ts = to_utc_timestamp(value)  # type: ignore[arg-type]
    if ts is None:
        raise DataError(f"TacticalPipeline: {name} is required")
    return int(ts.value)


def hmm_observations(bars: Bars, labeller: LabellerConfig) -> tuple[np.ndarray, np.ndarray]:
    """Raw HMM observations (T, 3): log annualized vol, trend t-stat, crash-window return; and rule labels (T,)."""
    inputs = regime_inputs(bars, labeller)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_vol = np.log(np.maximum(inputs.vol, 1e-8))
    log_vol[np.isnan(inputs.vol)] = np.nan
    obs = np.column_stack([log_vol, inputs.trend, inputs.ret])
    return obs, label_from_inputs(inputs, labeller)


class TacticalPipeline:
    """Fitted features + regime model; see module docstring and docs/ARCHITECTURE.md "Tactical inputs"."""

    def __init__(self, config: TacticalConfig | None = None) -> None:
        self.config = config or TacticalConfig()
        self._fitted: _Fitted | None = None

    # ------------------------------------------------------------------------------------------------------------
    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURE_NAMES + (FILTER_FEATURE_NAMES if self.config.include_filters else ())

    @property
    def fit_window(self) -> FitWindow:
        return self._require().fit_window

    @property
    def hmm(self) -> StudentTHMM:
        return self._require().hmm

    def _require(self) -> _Fitted:
        if self._fitted is None:
            raise RunDirError("TacticalPipeline is not fitted: call fit() or load()")
        return self._fitted

    # ------------------------------------------------------------------------------------------------------------
    def _filter_features(self, bars: Bars, kalman: KalmanParams, ekf: EKFParams) -> np.ndarray:
        logp = np.log(bars.close)
        gap = bars.gap_before
        kf = kalman_filter(logp, kalman, gap, trend=True)
        ek = ekf_filter(logp, ekf, gap)
        ann = np.sqrt(bars.timeframe.periods_per_year)
        out = np.column_stack([
            logp - kf.level,
            kf.slope * 1e4,  # basis points per bar
            np.sqrt(np.exp(ek.log_var)) * ann,
            logp - ek.level,
        ])
        # the first bars of a segment carry the prior: treat as warm-up (24 bars)
        pos = np.zeros(len(bars), dtype=np.int64)
        seg_start = np.flatnonzero(np.concatenate([[True], gap[1:]])) if len(bars) else np.zeros(0, dtype=np.int64)
        for s, e in zip(seg_start, np.append(seg_start[1:], len(bars)), strict=True):
            pos[s:e] = np.arange(e - s)
        out[pos < 24] = np.nan
        return out

    def _raw_features(self, bars: Bars, fitted_filters: tuple[KalmanParams, EKFParams] | None) -> tuple[np.ndarray, np.ndarray]:
        table = compute_features(bars)
        values = table.values
        if self.config.include_filters and fitted_filters is not None:
            values = np.concatenate([values, self._filter_features(bars, *fitted_filters)], axis=1)
        return values, table.valid

    # ------------------------------------------------------------------------------------------------------------
    def fit(self, bars: Bars, train_start: object, train_end: object) -> TacticalPipeline:
        """Fit on ``[train_start, train_end)``; bars at or after ``train_end`` are never looked at."""
        cfg = self.config
        start_ns, end_ns = _ns(train_start, "train_start"), _ns(train_end, "train_end")
        if end_ns <= start_ns:
            raise DataError(f"TacticalPipeline.fit: train_end {train_end} is not after train_start {train_start}")
        history = bars.between(None, to_utc_timestamp(train_end))
        window = FitWindow(start_ns, end_ns)
        in_train = window.select(history.timestamps_ns)
        if in_train.sum() < 1000:
            raise DataError(
                f"TacticalPipeline.fit: only {int(in_train.sum())} bars of {bars.symbol} in the training window "
                f"[{window.to_dict()['start']}, {window.to_dict()['end']}); need >= 1000",
                bars.source or None,
            )
        train = history.with_frame(history.frame.loc[in_train])
        logp = np.log(train.close)
        kalman = fit_kalman_mle(logp, train.gap_before, trend=True)
        ekf = fit_ekf_mle(logp, train.gap_before)
        values, _ = self._raw_features(history, (kalman, ekf))
        ts = history.timestamps_ns
        scaler: FrozenStandardizer | SpectralNormalizer | None = None
        if cfg.normalizer == "zscore":
            scaler = FrozenStandardizer.fit(values, ts, start_ns, end_ns, clip=cfg.zscore_clip)
        elif cfg.normalizer == "spectral":
            scaler = SpectralNormalizer.fit(values, ts, start_ns, end_ns, window=cfg.spectral_window, clip=cfg.zscore_clip)
        obs, labels = hmm_observations(history, cfg.labeller)
        hmm_scaler = FrozenStandardizer.fit(obs, ts, start_ns, end_ns, clip=8.0)
        z = hmm_scaler.transform(obs)
        z_tr, lab_tr, gap_tr = z[in_train], labels[in_train], history.gap_before[in_train]
        gap_tr = gap_tr.copy()
        if len(gap_tr):
            gap_tr[0] = True
        hmm = StudentTHMM.fit_supervised(z_tr, lab_tr, 4, dof=cfg.hmm_dof, segment_start=gap_tr)
        if cfg.hmm_fit == "em":
            hmm.fit_em(z_tr, gap_tr, n_iter=cfg.hmm_em_iters, estimate_dof=cfg.hmm_dof is None)
            hmm.state_to_regime = map_states_by_means(hmm.means, vol_col=0, trend_col=1, ret_col=2)
        hmm.meta.update({"fit_window": window.to_dict(), "observations": ["log_vol", "trend_tstat", "crash_return"]})
        self._fitted = _Fitted(window, kalman, ekf, hmm_scaler, hmm, scaler)
        return self

    def transform(self, bars: Bars, eval_start: object = None) -> TacticalFrame:
        """Causal features and regime posterior for every bar. With ``eval_start`` (the first bar whose outputs will
        be evaluated), raise :class:`LeakageError` if it lies before the end of the fit window."""
        fitted = self._require()
        if eval_start is not None:
            fitted.fit_window.check_evaluation_start(_ns(eval_start, "eval_start"), "TacticalPipeline")
        cfg = self.config
        values, valid = self._raw_features(bars, (fitted.kalman, fitted.ekf))
        if cfg.normalizer == "percentile":
            pct = rolling_percentile(values, cfg.percentile_window, cfg.percentile_min_periods)
            normed = 2.0 * pct - 1.0
        else:
            assert fitted.feature_scaler is not None
            normed = fitted.feature_scaler.transform(values)
        ok = np.isfinite(normed).all(axis=1) & valid & np.isfinite(values).all(axis=1)
        features = np.where(ok[:, None], np.nan_to_num(normed, nan=0.0), 0.0).astype(np.float32)
        obs, _ = hmm_observations(bars, cfg.labeller)
        z = fitted.hmm_scaler.transform(obs)
        gap = bars.gap_before.copy()
        posterior = fitted.hmm.regime_posterior(z, gap).astype(np.float32)
        ok &= np.isfinite(z).all(axis=1)
        return TacticalFrame(bars.timestamps_ns, features, self.feature_names, posterior, ok)

    def regime_labels(self, bars: Bars) -> np.ndarray:
        """Rule labels (T,) of ``bars`` under this pipeline's labeller config (-1 = warm-up)."""
        return hmm_observations(bars, self.config.labeller)[1]

    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        f = self._require()
        return {
            "kind": "tactical_pipeline",
            "version": PIPELINE_VERSION,
            "config": self.config.to_dict(),
            "feature_names": list(self.feature_names),
            "regime_names": list(REGIME_NAMES),
            "fit_window": f.fit_window.to_dict(),
            "kalman": f.kalman._asdict(),
            "ekf": f.ekf._asdict(),
            "hmm_scaler": f.hmm_scaler.state(),
            "hmm": f.hmm.to_dict(),
            "feature_scaler": None if f.feature_scaler is None else {
                "kind": type(f.feature_scaler).__name__, **f.feature_scaler.state()
            },
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tactical_pipeline.json`` (atomic; plain JSON, no pickle)."""
        path = Path(directory) / PIPELINE_FILE
        atomic_write_json(path, self.state_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TacticalPipeline:
        path = Path(directory)
        if path.is_dir():
            path = path / PIPELINE_FILE
        if not path.exists():
            raise RunDirError(f"{path}: no fitted tactical pipeline here (expected {PIPELINE_FILE})")
        payload = read_json(path)
        if payload.get("kind") != "tactical_pipeline":
            raise RunDirError(f"{path}: not a tactical pipeline file (kind={payload.get('kind')!r})")
        if payload.get("version") != PIPELINE_VERSION:
            raise RunDirError(f"{path}: pipeline version {payload.get('version')} != supported {PIPELINE_VERSION}")
        pipe = cls(TacticalConfig.parse(payload["config"]))
        if list(pipe.feature_names) != payload["feature_names"]:
            raise RunDirError(f"{path}: feature names differ from this version of himari")
        scaler_state = payload["feature_scaler"]
        scaler: FrozenStandardizer | SpectralNormalizer | None = None
        if scaler_state is not None:
            kind = scaler_state.pop("kind")
            scaler = (FrozenStandardizer if kind == "FrozenStandardizer" else SpectralNormalizer).from_state(scaler_state)
        pipe._fitted = _Fitted(
            FitWindow.from_dict(payload["fit_window"]),
            KalmanParams(**payload["kalman"]),
            EKFParams(**payload["ekf"]),
            FrozenStandardizer.from_state(payload["hmm_scaler"]),
            StudentTHMM.from_dict(payload["hmm"], str(path)),
            scaler,
        )
        return pipe


__all__ = ["FILTER_FEATURE_NAMES", "REGIME_NAMES", "LeakageError", "TacticalConfig", "TacticalFrame", "TacticalPipeline"]
