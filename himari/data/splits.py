"""Date-based splits and the walk-forward window generator.

All windows are half-open ``[start, end)`` in UTC. A walk-forward window has consecutive train, validation and test
periods; windows advance by ``step_months``. The test periods of successive windows (with step == test length) tile
the out-of-sample span without overlap, so their stitched results form one out-of-sample equity curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from himari.data.bars import to_utc_timestamp
from himari.errors import ConfigError


@dataclass(frozen=True)
class DateSplit:
    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ConfigError(f"split end {self.end} must be after start {self.start}")

    def __str__(self) -> str:
        return f"[{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d})"


@dataclass(frozen=True)
class WalkForwardWindow:
    index: int
    train: DateSplit
    validation: DateSplit
    test: DateSplit

    def as_dict(self) -> dict[str, str | int]:
        return {
            "index": self.index,
            "train_start": self.train.start.isoformat(),
            "train_end": self.train.end.isoformat(),
            "validation_start": self.validation.start.isoformat(),
            "validation_end": self.validation.end.isoformat(),
            "test_start": self.test.start.isoformat(),
            "test_end": self.test.end.isoformat(),
        }


def walk_forward_windows(
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    train_months: int = 6,
    validation_months: int = 1,
    test_months: int = 1,
    step_months: int = 1,
    max_windows: int | None = None,
    expanding: bool = False,
) -> list[WalkForwardWindow]:
    """Rolling windows: train ``[s, s+train)``, validation next, test next; ``s`` advances by ``step_months``.

    ``start`` is the first training bar; the last window's test period ends at or before ``end``. ``expanding``:
    every window trains from ``start`` (the training period grows by ``step_months`` per window; the first one is
    ``train_months`` long).
    """
    if min(train_months, validation_months, test_months, step_months) <= 0:
        raise ConfigError("walk-forward month lengths must be positive")
    s = to_utc_timestamp(start)
    e = to_utc_timestamp(end)
    assert s is not None and e is not None
    windows: list[WalkForwardWindow] = []
    offset = pd.DateOffset
    cursor = s
    while True:
        train_end = cursor + offset(months=train_months)
        val_end = train_end + offset(months=validation_months)
        test_end = val_end + offset(months=test_months)
        if test_end > e:
            break
        windows.append(
            WalkForwardWindow(
                index=len(windows),
                train=DateSplit(s if expanding else cursor, train_end),
                validation=DateSplit(train_end, val_end),
                test=DateSplit(val_end, test_end),
            )
        )
        if max_windows is not None and len(windows) >= max_windows:
            break
        cursor = cursor + offset(months=step_months)
    return windows


