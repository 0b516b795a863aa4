"""Rule labeller: trailing-only (truncation invariant), sensible on a synthetic volatility switch."""

from __future__ import annotations

import numpy as np

from himari.regime.labeller import CRISIS, HIGH_VOL, LOW_VOL, UNKNOWN, LabellerConfig, label_regimes
from tests.features.helpers import synthetic_bars

CFG = LabellerConfig(pct_window=600, pct_min_periods=200)


def test_truncation_invariance() -> None:
    bars = synthetic_bars(2500, seed=11, gaps=(900,))
    full = label_regimes(bars, CFG)
    for cut in (10, 250, 899, 900, 1200, 2000, len(bars)):
        np.testing.assert_array_equal(label_regimes(bars.head(cut), CFG), full[:cut])


def test_labels_follow_volatility() -> None:
    bars = synthetic_bars(4000, seed=12)
    lab = label_regimes(bars, CFG)
    assert (lab[:250] == UNKNOWN).all()
    vol_block = (np.arange(len(bars)) // 500) % 2 == 1  # helper: odd 500-bar blocks have ~4x the volatility
    known = lab >= 0
    high = np.isin(lab, [HIGH_VOL, CRISIS])
    # shortly after each switch the trailing window sees the change: high-vol labels concentrate in high-vol blocks
    assert high[known & vol_block].mean() > 3 * high[known & ~vol_block].mean()
    assert set(np.unique(lab[known])) <= {0, 1, 2, 3}
    assert (lab[known] == LOW_VOL).mean() > 0.2


def test_gap_makes_inputs_unknown() -> None:
    bars = synthetic_bars(1500, seed=13, gaps=(1000,))
    lab = label_regimes(bars, CFG)
    gap = int(np.flatnonzero(bars.gap_before)[0])
    assert (lab[gap : gap + 24] == UNKNOWN).all()  # the 24-bar vol window restarts after the gap
