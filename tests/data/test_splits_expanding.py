"""Expanding walk-forward windows: every window trains from the first start; tests still follow each other."""

from __future__ import annotations

import pandas as pd

from himari.backtest.wfo import WFOConfig
from himari.data.splits import walk_forward_windows


def test_expanding_windows_train_from_the_start() -> None:
    rolling = walk_forward_windows("2022-01-01", "2023-01-01", 6, 1, 1, 1)
    expanding = walk_forward_windows("2022-01-01", "2023-01-01", 6, 1, 1, 1, expanding=True)
    assert [w.test for w in rolling] == [w.test for w in expanding] and len(expanding) == 5
    assert all(w.train.start == pd.Timestamp("2022-01-01", tz="UTC") for w in expanding)
    assert [w.train.end for w in expanding] == [w.train.end for w in rolling]
    assert rolling[-1].train.start > expanding[-1].train.start
    cfg = WFOConfig.parse({"expanding_train": True, "first_train_start": "2021-06-01", "test_start": "2022-01-01",
                           "test_end": "2022-04-01"})
    assert {w.train.start for w in cfg.windows()} == {pd.Timestamp("2021-06-01", tz="UTC")}
