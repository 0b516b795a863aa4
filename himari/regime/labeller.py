"""Rule-based regime labeller (the ground truth for supervision and evaluation), trailing windows only.

Inputs per bar (each from bars ``<= t`` of the bar's own contiguous segment, see ``himari.features.technical``):

* ``vol``   = realized volatility of the last ``vol_window`` one-bar log returns (annualized),
* ``trend`` = ``|r_{t-k..t}| / (sigma_1 sqrt(k))`` with ``k = trend_window`` — the absolute k-bar return in units of
  its own noise (a t-statistic of the drift),
* ``ret``   = the last ``crash_window``-bar log return.

Each is turned into its percentile among the trailing ``pct_window`` bars (causal, no full-sample statistic), then:

    CRISIS   if vol_pct >= crisis_vol_pct and ret_pct <= crisis_ret_pct
    HIGH_VOL elif vol_pct >= high_vol_pct
    TRENDING elif trend_pct >= trend_pct_threshold
    LOW_VOL  otherwise

Rows where an input is still warming up get label ``-1`` (unknown).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pydantic import Field, model_validator

from himari.config import FrozenConfig
from himari.data.bars import Bars
from himari.features.normalize import rolling_percentile
from himari.features.technical import rolling_std

REGIME_NAMES: tuple[str, ...] = ("LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS")
LOW_VOL, TRENDING, HIGH_VOL, CRISIS = range(4)
UNKNOWN = -1


class LabellerConfig(FrozenConfig):
    vol_window: int = Field(24, ge=4, le=2000)
    trend_window: int = Field(72, ge=4, le=2000)
    crash_window: int = Field(24, ge=1, le=2000)
    pct_window: int = Field(2160, ge=50, le=100_000, description="bars in the trailing percentile window (90 days of 1h)")
    pct_min_periods: int = Field(500, ge=10)
    high_vol_pct: float = Field(0.75, gt=0.0, lt=1.0)
    crisis_vol_pct: float = Field(0.90, gt=0.0, lt=1.0)
    crisis_ret_pct: float = Field(0.10, gt=0.0, lt=1.0)
    trend_pct_threshold: float = Field(0.70, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> LabellerConfig:
        if self.pct_min_periods > self.pct_window:
            raise ValueError(f"pct_min_periods ({self.pct_min_periods}) must be <= pct_window ({self.pct_window})")
        return self


class RegimeInputs(NamedTuple):
    vol: np.ndarray  # annualized realized vol
    trend: np.ndarray  # |k-bar return| / (sigma sqrt k)
    ret: np.ndarray  # crash_window-bar log return


def regime_inputs(bars: Bars, config: LabellerConfig) -> RegimeInputs:
    """Per-segment trailing vol / trend / return (NaN in warm-up and right after gaps)."""
    n = len(bars)
    vol = np.full(n, np.nan)
    trend = np.full(n, np.nan)
    ret = np.full(n, np.nan)
    logp = np.log(bars.close)
    starts = np.flatnonzero(np.concatenate([[True], bars.gap_before[1:]])) if n else np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], n)
    ann = np.sqrt(bars.timeframe.periods_per_year)
    vw, tw, cw = config.vol_window, config.trend_window, config.crash_window
    for s, e in zip(starts, ends, strict=True):
        lp = logp[s:e]
        m = e - s
        r1 = np.zeros(m)
        r1[1:] = np.diff(lp)
        sd = rolling_std(r1, vw, ddof=1)
        sd[: min(m, vw)] = np.nan  # the window must hold vw real returns (index 0 has none)
        vol[s:e] = sd * ann
        sd_t = rolling_std(r1, tw, ddof=1)
        sd_t[: min(m, tw)] = np.nan
        if m > tw:
            k_ret = np.full(m, np.nan)
            k_ret[tw:] = lp[tw:] - lp[:-tw]
            with np.errstate(divide="ignore", invalid="ignore"):
                trend[s:e] = np.where(sd_t > 0, np.abs(k_ret) / (sd_t * np.sqrt(tw)), 0.0)
            trend[s:e][np.isnan(sd_t)] = np.nan
        if m > cw:
            ret[s + cw : e] = lp[cw:] - lp[:-cw]
    return RegimeInputs(vol, trend, ret)


def label_from_inputs(inputs: RegimeInputs, config: LabellerConfig) -> np.ndarray:
    """Integer labels (T,) in {-1, 0..3} from the trailing percentiles of the inputs."""
    stacked = np.column_stack([inputs.vol, inputs.trend, inputs.ret])
    pct = rolling_percentile(stacked, config.pct_window, config.pct_min_periods)
    vol_p, trend_p, ret_p = pct[:, 0], pct[:, 1], pct[:, 2]
    labels = np.full(len(vol_p), LOW_VOL, dtype=np.int64)
    labels[trend_p >= config.trend_pct_threshold] = TRENDING
    labels[vol_p >= config.high_vol_pct] = HIGH_VOL
    labels[(vol_p >= config.crisis_vol_pct) & (ret_p <= config.crisis_ret_pct)] = CRISIS
    unknown = ~(np.isfinite(vol_p) & np.isfinite(trend_p) & np.isfinite(ret_p))
    # the percentile skips NaN rows: a row whose own input is NaN (after a gap) is unknown too
    unknown |= ~(np.isfinite(inputs.vol) & np.isfinite(inputs.trend) & np.isfinite(inputs.ret))
    labels[unknown] = UNKNOWN
    return labels


def label_regimes(bars: Bars, config: LabellerConfig | None = None) -> np.ndarray:
    """Rule labels (T,) for ``bars``; ``-1`` during warm-up. Causal: row t uses bars <= t only."""
    cfg = config or LabellerConfig()
    return label_from_inputs(regime_inputs(bars, cfg), cfg)
