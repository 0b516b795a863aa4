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

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from himari.config import FrozenConfig
from himari.data.bars import Bars, to_utc_timestamp
from himari.errors import DataError, LeakageError, RunDirError
from himari.features.ekf import EKFParams, ekf_filter, fit_ekf_mle
from himari.features.kalman import KalmanParams, fit_kalman_mle, kalman_filter
from himari.features.normalize import FitWindow, FrozenStandardizer, SpectralNormalizer, rolling_percentile
from himari.features.representation import ConsensusAEConfig, ConsensusAutoencoder
from himari.features.technical import FEATURE_NAMES, compute_features
from himari.regime.labeller import REGIME_NAMES, LabellerConfig, label_from_inputs, regime_inputs
from himari.regime.student_t_hmm import StudentTHMM, map_states_by_means
from himari.utils.io import atomic_write_bytes, atomic_write_json, read_json, sha256_array

FILTER_FEATURE_NAMES: tuple[str, ...] = ("kf_level_dev", "kf_slope", "ekf_vol", "ekf_level_dev")
PIPELINE_FILE = "tactical_pipeline.json"
AUTOENCODER_FILE = "tactical_autoencoder.safetensors"
PIPELINE_VERSION = 2


class TacticalConfig(FrozenConfig):
    """Configuration of the tactical inputs (features, normalizer, regime model)."""

    normalizer: Literal["percentile", "zscore", "spectral"] = "percentile"
    percentile_window: int = Field(500, ge=20, le=100_000)
    percentile_min_periods: int | None = Field(None, ge=10, description="None = percentile_window // 2")
    zscore_clip: float = Field(8.0, gt=0)
    spectral_window: int = Field(64, ge=8, le=4096)
    include_filters: bool = True
    hmm_fit: Literal["supervised", "em"] = "supervised"
    hmm_dof: float | None = Field(None, gt=0.5, le=500, description="fixed Student-t dof; None = estimated (ECM)")
    hmm_em_iters: int = Field(15, ge=1, le=500)
    labeller: LabellerConfig = LabellerConfig()
    autoencoder: ConsensusAEConfig | None = Field(
        None, description="consensus autoencoder codes of the trailing feature window (himari.features."
        "representation), appended to or replacing the features; None = off",
    )

    @model_validator(mode="after")
    def _check(self) -> TacticalConfig:
        if self.percentile_min_periods is not None and self.percentile_min_periods > self.percentile_window:
            raise ValueError("percentile_min_periods must be <= percentile_window")
        return self

    @property
    def percentile_min_obs(self) -> int:
        """Observations the rolling percentile needs (``percentile_min_periods`` or half the window)."""
        return self.percentile_min_periods if self.percentile_min_periods is not None else self.percentile_window // 2


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
    timeframe_seconds: int
    autoencoder: ConsensusAutoencoder | None = None


def _ns(value: object, name: str) -> int:
    ts = to_utc_timestamp(value)  # type: ignore[arg-type]
    if ts is None:
        raise DataError(f"TacticalPipeline: {name} is required")
    return int(ts.value)


def hmm_observations(bars: Bars, labeller: LabellerConfig, with_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """HMM observations (T, 3) and rule labels (T,). Like the labeller, the observations are relative to a trailing
    window (``pct_window`` bars) so that regimes mean the same in calm and wild years:

    * ``log(vol_t) - mean(log vol over the trailing window)``  (relative volatility level),
    * the trend t-stat ``|r_k| / (sigma sqrt k)`` (already scale-free),
    * ``ret_t / std(ret over the trailing window)`` (the crash-window return in units of its recent spread).

    Trailing statistics skip NaN rows (gaps) and need ``pct_min_periods`` observations.
    """
    import pandas as pd

    inputs = regime_inputs(bars, labeller)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_vol = np.log(np.maximum(inputs.vol, 1e-12))
    log_vol[np.isnan(inputs.vol)] = np.nan
    roll = pd.DataFrame({"lv": log_vol, "ret": inputs.ret}).rolling(labeller.pct_window, min_periods=labeller.pct_min_periods)
    mean = roll.mean().to_numpy()
    std = roll.std().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_ret = np.where(std[:, 1] > 0, inputs.ret / std[:, 1], 0.0)
    rel_ret[~np.isfinite(std[:, 1]) | np.isnan(inputs.ret)] = np.nan
    obs = np.column_stack([log_vol - mean[:, 0], inputs.trend, rel_ret])
    return obs, (label_from_inputs(inputs, labeller) if with_labels else None)


@dataclass(frozen=True)
class _CachedInputs:
    tech_raw: np.ndarray | None  # (T, 44) raw features (fitted normalizers) or None
    tech_pct: np.ndarray | None  # (T, 44) float32 percentile features in (-1, 1) (percentile normalizer) or None
    tech_ok: np.ndarray  # (T,) technical windows complete
    hmm_obs: np.ndarray  # (T, 3) raw HMM observations


class _TransformCache:
    """Small LRU memo of the fit-independent transform inputs, keyed by the SHA-256 of the bars' timestamps and
    OHLCV arrays plus the config fields they depend on. Content-keyed, so a hit is exactly what would be recomputed;
    bounded to ``max_entries`` (a 64k-bar entry holds about 13 MB)."""

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _CachedInputs] = OrderedDict()

    @staticmethod
    def key(bars: Bars, cfg: TacticalConfig) -> str:
        frame = bars.frame
        digest = sha256_array(bars.timestamps_ns, frame.to_numpy(dtype=np.float64))
        relevant = {k: v for k, v in cfg.to_dict().items() if k in ("normalizer", "percentile_window", "percentile_min_periods", "labeller")}
        return f"{digest}:{bars.timeframe.seconds}:{sorted(relevant.items())}"

    def get(self, key: str) -> _CachedInputs | None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: str, value: _CachedInputs) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


_TRANSFORM_CACHE = _TransformCache()


def clear_transform_cache() -> None:
    """Drop the memoized transform inputs (tests, memory)."""
    _TRANSFORM_CACHE.clear()


class TacticalPipeline:
    """Fitted features + regime model; see module docstring and docs/ARCHITECTURE.md "Tactical inputs"."""

    def __init__(self, config: TacticalConfig | None = None) -> None:
        self.config = config or TacticalConfig()
        self._fitted: _Fitted | None = None

    # ------------------------------------------------------------------------------------------------------------
    @property
    def base_feature_names(self) -> tuple[str, ...]:
        """The normalized technical (and filter) features, before the autoencoder option."""
        return FEATURE_NAMES + (FILTER_FEATURE_NAMES if self.config.include_filters else ())

    @property
    def feature_names(self) -> tuple[str, ...]:
        ae = self.config.autoencoder
        if ae is None:
            return self.base_feature_names
        return ae.names() if ae.mode == "replace" else self.base_feature_names + ae.names()

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
        if cfg.include_filters:
            logp = np.log(train.close)
            kalman = fit_kalman_mle(logp, train.gap_before, trend=True)
            ekf = fit_ekf_mle(logp, train.gap_before)
        else:  # not used by transform; stored as zeros
            kalman = KalmanParams(0.0, 0.0, 0.0)
            ekf = EKFParams(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        values, _ = self._raw_features(history, (kalman, ekf))
        ts = history.timestamps_ns
        scaler: FrozenStandardizer | SpectralNormalizer | None = None
        if cfg.normalizer == "zscore":
            scaler = FrozenStandardizer.fit(values, ts, start_ns, end_ns, clip=cfg.zscore_clip)
        elif cfg.normalizer == "spectral":
            scaler = SpectralNormalizer.fit(values, ts, start_ns, end_ns, window=cfg.spectral_window, clip=cfg.zscore_clip)
        obs, labels = hmm_observations(history, cfg.labeller)
        assert labels is not None
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
        hmm.meta.update({"fit_window": window.to_dict(), "observations": ["rel_log_vol", "trend_tstat", "rel_crash_return"]})
        self._fitted = _Fitted(window, kalman, ekf, hmm_scaler, hmm, scaler, bars.timeframe.seconds)
        if cfg.autoencoder is not None:  # fitted on the fit window's rows of the (already fitted) base features
            base = self._transform_base(history)
            self._fitted.autoencoder = ConsensusAutoencoder.fit(base.features, base.valid, in_train, cfg.autoencoder)
        return self

    def transform(self, bars: Bars, eval_start: object = None) -> TacticalFrame:
        """Causal features and regime posterior for every bar. With ``eval_start`` (the first bar whose outputs will
        be evaluated), raise :class:`LeakageError` if it lies before the end of the fit window.

        The fit-independent parts (the 44 technical features and, with the percentile normalizer, their
        percentiles; the HMM observations) are memoized per bar content (see :class:`_TransformCache`), so repeated
        calls on the same bars (backtests, walk-forward windows) only redo the fitted filters and the HMM filter.
        """
        fitted = self._require()
        if eval_start is not None:
            fitted.fit_window.check_evaluation_start(_ns(eval_start, "eval_start"), "TacticalPipeline")
        base = self._transform_base(bars)
        return self.with_autoencoder(base)

    def with_autoencoder(self, base: TacticalFrame) -> TacticalFrame:
        """``base`` (the normalized features) with the autoencoder option applied: codes of each causal window
        appended or replacing the features; a row is valid when every row of its window is. Identity when off."""
        ae = self._require().autoencoder
        if ae is None:
            return base
        codes, good = ae.encode(base.features, base.valid)
        ok = base.valid & good
        parts = [codes] if ae.config.mode == "replace" else [base.features, codes]
        features = np.where(ok[:, None], np.concatenate(parts, axis=1), 0.0).astype(np.float32)
        return TacticalFrame(base.timestamps_ns, features, self.feature_names, base.regime_posterior, ok)

    def _transform_base(self, bars: Bars) -> TacticalFrame:
        """:meth:`transform` without the autoencoder option."""
        fitted = self._require()
        if bars.timeframe.seconds != fitted.timeframe_seconds:
            raise DataError(
                f"TacticalPipeline was fitted on {fitted.timeframe_seconds}s bars but got {bars.timeframe} bars "
                f"({bars.symbol}): windows and annualization would not match",
                bars.source or None,
            )
        cfg = self.config
        key = _TRANSFORM_CACHE.key(bars, cfg)
        cached = _TRANSFORM_CACHE.get(key)
        if cached is None:
            table = compute_features(bars)
            tech_ok = table.valid & np.isfinite(table.values).all(axis=1)
            tech_pct = None
            if cfg.normalizer == "percentile":
                pct = rolling_percentile(table.values, cfg.percentile_window, cfg.percentile_min_obs)
                tech_pct = (2.0 * pct - 1.0).astype(np.float32)
            obs, _ = hmm_observations(bars, cfg.labeller, with_labels=False)
            cached = _CachedInputs(table.values if tech_pct is None else None, tech_pct, tech_ok, obs)
            _TRANSFORM_CACHE.put(key, cached)
        if cfg.normalizer == "percentile":
            assert cached.tech_pct is not None
            parts = [cached.tech_pct]
            ok = cached.tech_ok & np.isfinite(cached.tech_pct).all(axis=1)
            if cfg.include_filters:
                filt = self._filter_features(bars, fitted.kalman, fitted.ekf)
                fp = 2.0 * rolling_percentile(filt, cfg.percentile_window, cfg.percentile_min_obs) - 1.0
                parts.append(fp.astype(np.float32))
                ok &= np.isfinite(filt).all(axis=1) & np.isfinite(fp).all(axis=1)
            normed = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        else:
            assert cached.tech_raw is not None and fitted.feature_scaler is not None
            values = cached.tech_raw
            if cfg.include_filters:
                values = np.concatenate([values, self._filter_features(bars, fitted.kalman, fitted.ekf)], axis=1)
            normed = fitted.feature_scaler.transform(values)
            ok = cached.tech_ok & np.isfinite(values).all(axis=1) & np.isfinite(normed).all(axis=1)
        features = np.where(ok[:, None], np.nan_to_num(normed, nan=0.0), 0.0).astype(np.float32)
        z = fitted.hmm_scaler.transform(cached.hmm_obs)
        posterior = fitted.hmm.regime_posterior(z, bars.gap_before).astype(np.float32)
        ok &= np.isfinite(z).all(axis=1)
        return TacticalFrame(bars.timestamps_ns, features, self.base_feature_names, posterior, ok)

    def regime_observations(self, bars: Bars) -> tuple[np.ndarray, np.ndarray]:
        """Standardized HMM observations (T, 3) (frozen training scaler) and rule labels (T,) of ``bars``."""
        obs, labels = hmm_observations(bars, self.config.labeller)
        assert labels is not None
        return self._require().hmm_scaler.transform(obs), labels


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
            "timeframe_seconds": f.timeframe_seconds,
            "kalman": f.kalman._asdict(),
            "ekf": f.ekf._asdict(),
            "hmm_scaler": f.hmm_scaler.state(),
            "hmm": f.hmm.to_dict(),
            "feature_scaler": None if f.feature_scaler is None else {
                "kind": type(f.feature_scaler).__name__, **f.feature_scaler.state()
            },
            "autoencoder": None if f.autoencoder is None else {
                "file": AUTOENCODER_FILE, "n_features": f.autoencoder.n_features,
                "sha256": _tensors_sha256(f.autoencoder.tensors()),
            },
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tactical_pipeline.json`` (atomic; plain JSON, no pickle)."""
        path = Path(directory) / PIPELINE_FILE
        ae = self._require().autoencoder
        if ae is not None:  # weights first: a reader never sees a pipeline file without its weights
            from safetensors.torch import save as st_save

            atomic_write_bytes(Path(directory) / AUTOENCODER_FILE, st_save(ae.tensors()))
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
            int(payload["timeframe_seconds"]),
            _load_autoencoder(path, pipe.config, payload.get("autoencoder")),
        )
        return pipe


def _tensors_sha256(tensors: dict[str, Any]) -> str:
    return sha256_array(*(tensors[k].numpy() for k in sorted(tensors)))


def _load_autoencoder(path: Path, config: TacticalConfig, entry: dict[str, Any] | None) -> ConsensusAutoencoder | None:
    """The autoencoder saved beside ``path`` (safetensors), checked against the pipeline file's SHA-256."""
    if config.autoencoder is None:
        if entry is not None:
            raise RunDirError(f"{path}: autoencoder weights recorded but the config has no autoencoder")
        return None
    if not isinstance(entry, dict) or entry.get("file") != AUTOENCODER_FILE:
        raise RunDirError(f"{path}: the config has an autoencoder but the file records no weights")
    weights = path.parent / AUTOENCODER_FILE
    if not weights.exists():
        raise RunDirError(f"{weights}: autoencoder weights missing")
    if weights.is_symlink():  # a bundle is untrusted: its files stay inside it
        raise RunDirError(f"{weights}: is a symbolic link; autoencoder weights must be a plain file")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{weights}: not a readable safetensors file ({exc})") from None
    if _tensors_sha256(tensors) != entry.get("sha256"):
        raise RunDirError(f"{weights}: SHA-256 differs from the one recorded in {path.name}")
    try:
        return ConsensusAutoencoder.from_tensors(config.autoencoder, int(entry["n_features"]), tensors)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise RunDirError(f"{weights}: weights do not match the autoencoder config ({str(exc).splitlines()[0]})") from None


__all__ = ["FILTER_FEATURE_NAMES", "REGIME_NAMES", "LeakageError", "TacticalConfig", "TacticalFrame", "TacticalPipeline"]
