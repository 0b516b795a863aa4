"""Tables the report derives from per-bar series: calendar-month returns and the list of round-trip trades.

Plain NumPy on arrays (no pandas): the report calls these on the strategy's net returns and held positions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class MonthlyReturns(NamedTuple):
    """Compounded return per calendar month (UTC), ``returns[i, m]`` for ``years[i]`` and month ``m`` (0 = Jan).

    A month without any bar is NaN. ``year_total[i]`` compounds the year's bars (NaN when it has none).
    """

    years: np.ndarray  # (Y,) int
    returns: np.ndarray  # (Y, 12) simple returns
    year_total: np.ndarray  # (Y,)


def monthly_returns(timestamps_ns: np.ndarray, returns: np.ndarray) -> MonthlyReturns:
    """``R_{y,m} = prod_{t in month (y, m)} (1 + r_t) - 1`` over the bars whose open time falls in that month."""
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    r = np.asarray(returns, dtype=np.float64)
    if ts.size == 0:
        return MonthlyReturns(np.zeros(0, np.int64), np.zeros((0, 12)), np.zeros(0))
    month_index = ts.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    first_year = int(month_index.min() // 12)
    years = np.arange(first_year, int(month_index.max() // 12) + 1)
    slot = month_index - first_year * 12
    log_growth = np.zeros(years.size * 12)
    counts = np.zeros(years.size * 12, dtype=np.int64)
    np.add.at(log_growth, slot, np.log1p(np.maximum(r, -1.0 + 1e-300)))
    np.add.at(counts, slot, 1)
    monthly = np.where(counts > 0, np.expm1(log_growth), np.nan).reshape(years.size, 12)
    year_counts = counts.reshape(years.size, 12).sum(axis=1)
    year_total = np.where(year_counts > 0, np.expm1(log_growth.reshape(years.size, 12).sum(axis=1)), np.nan)
    return MonthlyReturns(years + 1970, monthly, year_total)


class Trade(NamedTuple):
    """A round trip: a maximal run of bars ``[first_bar, last_bar]`` holding a position of one sign."""

    asset: int
    side: int  # +1 long, -1 short
    first_bar: int  # first bar held (its open is the entry fill time)
    last_bar: int  # last bar held (the position is closed or flipped at the next bar's open)
    mean_abs_position: float  # mean |position| over the held bars, fraction of equity
    trade_return: float  # compounded strategy net return over the held bars (+ the exit bar's fee), NaN if unknown
    asset_move: float  # close[last_bar] / close[first_bar - 1] - 1 (NaN when first_bar == 0)


def trade_list(positions: np.ndarray, returns: np.ndarray | None = None, close: np.ndarray | None = None) -> list[Trade]:
    """Round trips from the per-bar held positions ``positions[t]`` (T,) or (T, A).

    A trade opens at the first bar a position of a new sign is held and ends at the last bar of that sign (a flip
    ends one trade and starts the next). With one asset, ``trade_return`` compounds the strategy's net returns over
    the held bars, plus the next bar when the position goes flat there (that bar carries the exit fee); with several
    assets a trade's own return is not separable from the portfolio's and is NaN. ``asset_move`` uses ``close`` of
    the first asset, so it is given for one asset only.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 1:
        pos = pos[:, None]
    n, n_assets = pos.shape
    single = n_assets == 1
    r = None if returns is None or not single else np.asarray(returns, dtype=np.float64)
    c = None if close is None or not single else np.asarray(close, dtype=np.float64)
    trades: list[Trade] = []
    for a in range(n_assets):
        sign = np.sign(np.nan_to_num(pos[:, a]))
        change = np.flatnonzero(np.diff(sign)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [n]]) - 1
        for first, last in zip(starts, ends, strict=True):
            side = int(sign[first])
            if side == 0:
                continue
            held = pos[first : last + 1, a]
            trade_return = float("nan")
            if r is not None:
                stop = last + 2 if last + 1 < n and sign[last + 1] == 0 else last + 1
                trade_return = float(np.prod(1.0 + r[first:stop]) - 1.0)
            move = float("nan")
            if c is not None and first > 0 and c[first - 1] > 0:
                move = float(c[last] / c[first - 1] - 1.0)
            trades.append(Trade(a, side, int(first), int(last), float(np.abs(held).mean()), trade_return, move))
    trades.sort(key=lambda tr: (tr.first_bar, tr.asset))
    return trades
