import itertools

from himari.data.loaders import load_bars
from himari.data.splits import walk_forward_windows


def test_bundled_btc_loads_with_documented_gaps(btc_bars):
    assert len(btc_bars) == 64524
    assert int(btc_bars.gap_before.sum()) == 28
    assert str(btc_bars.timeframe) == "1h"


def test_walk_forward_windows_tile_test_months():
    windows = walk_forward_windows("2020-01-01", "2021-01-01", 6, 1, 1, 1)
    assert len(windows) == 5
    for prev, nxt in itertools.pairwise(windows):
        assert prev.test.end == nxt.test.start
        assert prev.train.end == prev.validation.start and prev.validation.end == prev.test.start


def test_load_bars_names_row_of_duplicate(tmp_path):
    path = tmp_path / "x-1h.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2021-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2021-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
    )
    import pytest

    from himari.errors import DataError

    with pytest.raises(DataError, match=r"line 3 \(row 2\): duplicate timestamp"):
        load_bars(path)
