"""Performance metrics of a backtest from per-bar arrays (the keys of ``metrics.json``; see ``docs/METRICS.md``).

All inputs are per bar, aligned on the same T bars of the evaluation period:

- ``net_returns[t]``: simple return of equity over bar t, after fees, slippage and funding
  (``E_t = E_{t-1} (1 + r_t)``, ``E_0 = 1`` before the first bar).
- ``positions[t]``: the position held over bar t, signed, as a fraction of equity (``(T,)`` or ``(T, A)`` for
  several assets).
- ``turnover[t]``: notional traded at the fill that starts bar t, as a fraction of equity (``|Δposition|``).
- ``fees[t]``: costs paid at that fill (fees + slippage), as a fraction of equity, i.e. in the unit of
  ``net_returns`` (they are already included in ``net_returns``).

Annualization uses ``Timeframe.periods_per_year`` (365 days of 24/7 bars); no 252 or 8760 literal.
Sharpe and Sortino are arithmetic (mean of per-bar returns over their dispersion, times ``sqrt(periods_per_year)``)
with a zero risk-free rate, as is usual for crypto. Ratios that are undefined (zero variance with a non-zero mean,
zero drawdown with a non-zero return, one bar) are NaN, which ``himari.utils.io.to_json`` writes as ``null``;
they are never ``inf``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from himari.data.timeframe import Timeframe
from himari.env.protocol import ACTION_NAMES, HOLD, LONG, REGIME_NAMES, SHORT
from himari.errors import DataError

# Below this per-bar standard deviation a return series is treated as constant (ratios undefined, not inf).
ZERO_DISPERSION = 1e-12
# Positions smaller than this in magnitude count as flat.
FLAT_TOLERANCE = 1e-9


def _as_float_array(name: str, values: Any, length: int | None = None, allow_2d: bool = False) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0 or array.ndim > (2 if allow_2d else 1):
        shape = "(T,) or (T, A)" if allow_2d else "(T,)"
        raise DataError(f"metrics: field {name!r} must have shape {shape}, got {array.shape}")
    if length is not None and array.shape[0] != length:
        raise DataError(f"metrics: field {name!r} has {array.shape[0]} bars, expected {length} (as net_returns)")
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(f"metrics: field {name!r} is NaN or inf at bar {row}")
    return array


def equity_curve(net_returns: np.ndarray) -> np.ndarray:
    """Equity after each bar, ``E_t = prod_{s<=t} (1 + r_s)``, starting from 1 before bar 0. Shape (T,)."""
    return np.cumprod(1.0 + np.asarray(net_returns, dtype=np.float64))


def drawdown_curve(net_returns: np.ndarray) -> np.ndarray:
    """Drawdown after each bar, ``1 - E_t / max(1, max_{s<=t} E_s)`` (a fraction in [0, 1]). Shape (T,)."""
    equity = equity_curve(net_returns)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    return 1.0 - equity / peak


def sharpe_ratio(net_returns: np.ndarray, periods_per_year: float = 1.0) -> float:
    """Annualized arithmetic Sharpe ratio ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)``.

    0 for an all-zero series; NaN when fewer than two bars or zero dispersion with a non-zero mean (the ratio would
    be infinite). ``periods_per_year=1`` gives the per-bar Sharpe ratio used by the statistics module.
    """
    r = np.asarray(net_returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    mean = float(r.mean())
    std = float(r.std(ddof=1))
    if std <= ZERO_DISPERSION:
        return 0.0 if abs(mean) <= ZERO_DISPERSION else math.nan
    return mean / std * math.sqrt(periods_per_year)


def sortino_ratio(net_returns: np.ndarray, periods_per_year: float = 1.0) -> float:
    """Annualized Sortino ratio ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)``.

    Target return 0; the downside deviation averages over all bars (Sortino & Price 1994). 0 for an all-zero series,
    NaN when there is no downside and the mean is positive (infinite ratio) or with fewer than two bars.
    """
    r = np.asarray(net_returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    mean = float(r.mean())
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside <= ZERO_DISPERSION:
        return 0.0 if abs(mean) <= ZERO_DISPERSION else math.nan
    return mean / downside * math.sqrt(periods_per_year)


def rolling_sharpe(net_returns: np.ndarray, window_bars: int, periods_per_year: float) -> np.ndarray:
    """Trailing annualized Sharpe ratio over ``window_bars`` bars ending at each bar (NaN in warm-up). Shape (T,).

    Causal: row t uses bars ``t - window_bars + 1 .. t``. Computed from cumulative sums in O(T).
    """
    r = np.asarray(net_returns, dtype=np.float64)
    out = np.full(r.shape, np.nan)
    if window_bars < 2 or r.size < window_bars:
        return out
    c1 = np.concatenate([[0.0], np.cumsum(r)])
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])
    s1 = c1[window_bars:] - c1[:-window_bars]
    s2 = c2[window_bars:] - c2[:-window_bars]
    mean = s1 / window_bars
    var = np.maximum(s2 - window_bars * mean * mean, 0.0) / (window_bars - 1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(std > ZERO_DISPERSION, mean / std * math.sqrt(periods_per_year), np.nan)
    value = np.where((std <= ZERO_DISPERSION) & (np.abs(mean) <= ZERO_DISPERSION), 0.0, value)
    out[window_bars - 1 :] = value
    return out


def max_drawdown(net_returns: np.ndarray) -> float:
    """Largest peak-to-trough loss of equity, ``max_t (1 - E_t / peak_t)``, a positive fraction (0 = none)."""
    r = np.asarray(net_returns, dtype=np.float64)
    if r.size == 0:
        return 0.0
    return float(drawdown_curve(r).max())


def cagr(total_return: float, n_bars: int, periods_per_year: float) -> float:
    """Compound annual growth rate ``(1 + total_return) ** (periods_per_year / n_bars) - 1`` (-1 after ruin)."""
    if n_bars <= 0:
        return math.nan
    if total_return <= -1.0:
        return -1.0
    # in log space: (1 + R) ** k overflows a float for absurd inputs (e.g. prices of 1e300); the answer is then inf
    exponent = math.log1p(total_return) * (periods_per_year / n_bars)
    return math.inf if exponent > 709.0 else float(math.expm1(exponent))


def _gross_exposure(positions: np.ndarray) -> np.ndarray:
    return np.abs(positions) if positions.ndim == 1 else np.abs(positions).sum(axis=1)


def _position_signs(positions: np.ndarray) -> np.ndarray:
    """Sign of each position (-1, 0, +1) with |position| <= FLAT_TOLERANCE as flat; shape (T, A)."""
    p = positions if positions.ndim == 2 else positions[:, None]
    return np.where(p > FLAT_TOLERANCE, 1, np.where(p < -FLAT_TOLERANCE, -1, 0)).astype(np.int8)


def count_trades(positions: np.ndarray) -> tuple[int, int]:
    """``(n_trades, n_fills)`` of a position path (``(T,)`` or ``(T, A)``), summed over assets.

    A trade is an entry into a non-zero position: a bar whose position sign differs from the previous bar's and is
    not flat (a flip long -> short counts as one new trade). A fill is any bar where the position changes by more
    than ``FLAT_TOLERANCE``. The position before the first bar is flat.
    """
    p = positions if positions.ndim == 2 else positions[:, None]
    signs = _position_signs(p)
    prev = np.vstack([np.zeros((1, signs.shape[1]), dtype=np.int8), signs[:-1]])
    n_trades = int(((signs != prev) & (signs != 0)).sum())
    prev_pos = np.vstack([np.zeros((1, p.shape[1])), p[:-1]])
    n_fills = int((np.abs(p - prev_pos) > FLAT_TOLERANCE).sum())
    return n_trades, n_fills


def _action_codes(positions: np.ndarray, actions: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Per bar and asset action codes HOLD/LONG/SHORT, from ``actions`` or from the sign of the position."""
    if actions is not None:
        a = actions if actions.ndim == 2 else actions[:, None]
        return a.astype(np.int64), "actions"
    signs = _position_signs(positions)
    codes = np.where(signs > 0, LONG, np.where(signs < 0, SHORT, HOLD))
    return codes.astype(np.int64), "position_sign"


def _distribution(codes: np.ndarray) -> dict[str, float]:
    total = codes.size
    return {
        name: (float((codes == code).sum()) / total if total else 0.0)
        for code, name in enumerate(ACTION_NAMES)
    }


def _core_metrics(
    r: np.ndarray,
    gross: np.ndarray,
    turnover_per_bar: np.ndarray,
    fees_per_bar: np.ndarray,
    periods_per_year: float,
) -> dict[str, float]:
    """Return, risk and activity metrics of one return series (used for the whole period and per regime)."""
    n = int(r.size)
    years = n / periods_per_year
    equity = equity_curve(r)
    total_return = float(equity[-1] - 1.0)
    std = float(r.std(ddof=1)) if n >= 2 else math.nan
    mdd = max_drawdown(r)
    annual_return = cagr(total_return, n, periods_per_year)
    if mdd > ZERO_DISPERSION:
        calmar = annual_return / mdd
    else:
        calmar = 0.0 if abs(total_return) <= ZERO_DISPERSION else math.nan
    active = gross > FLAT_TOLERANCE
    n_active = int(active.sum())
    gains = float(r[r > 0].sum())
    losses = float(-r[r < 0].sum())
    if losses > 0:
        profit_factor = gains / losses
    else:
        profit_factor = 0.0 if gains == 0 else math.nan
    # Fees in units of initial equity: the fraction paid at bar t times the equity before bar t.
    equity_before = np.concatenate([[1.0], equity[:-1]])
    return {
        "total_return": total_return,
        "annual_return": annual_return,
        "annual_volatility": std * math.sqrt(periods_per_year) if n >= 2 else math.nan,
        "sharpe": sharpe_ratio(r, periods_per_year),
        "sortino": sortino_ratio(r, periods_per_year),
        "calmar": calmar,
        "max_drawdown": mdd,
        "win_rate": float((r[active] > 0).sum()) / n_active if n_active else math.nan,
        "profit_factor": profit_factor,
        "turnover": float(turnover_per_bar.sum()) / years,
        "exposure": n_active / n,
        "avg_gross_exposure": float(gross.mean()),
        "fees_paid": float((fees_per_bar * equity_before).sum()),
        "fees_annual": float(fees_per_bar.sum()) / years,
        "n_bars": n,
        "years": years,
    }


def compute_metrics(
    net_returns: np.ndarray,
    positions: np.ndarray,
    turnover: np.ndarray,
    fees: np.ndarray,
    timeframe: Timeframe | str,
    regimes: np.ndarray | None = None,
    actions: np.ndarray | None = None,
    benchmark: np.ndarray | None = None,
) -> dict[str, Any]:
    """The metrics of one backtest (the top level of ``metrics.json``). Every key is documented in docs/METRICS.md.

    Parameters are per-bar arrays over the same T bars (see the module docstring). ``positions``, ``turnover``,
    ``fees`` and ``actions`` may be ``(T, A)`` for several assets (turnover and fees are summed over assets, exposure
    uses the gross position ``sum_a |p_a|``). ``regimes`` holds regime codes (index into ``REGIME_NAMES``; negative =
    unknown, e.g. warm-up) per bar. ``actions`` holds HOLD/LONG/SHORT codes; without it the action distribution is
    derived from the position sign (flat counts as HOLD). ``benchmark`` holds the per-bar simple returns of a
    reference (usually buy-and-hold) for beta, correlation and the information ratio.

    Raises ``DataError`` for NaN/inf, mismatched lengths, an empty series or a return below -100%.
    """
    tf = Timeframe.parse(timeframe)
    ppy = tf.periods_per_year
    r = _as_float_array("net_returns", net_returns)
    n = int(r.size)
    if n == 0:
        raise DataError("metrics: field 'net_returns' is empty (no bars in the evaluation period)")
    if (r < -1.0).any():
        row = int(np.argmax(r < -1.0))
        raise DataError(f"metrics: field 'net_returns' is below -100% at bar {row} ({r[row]:.4g})")
    pos = _as_float_array("positions", positions, n, allow_2d=True)
    turn = _as_float_array("turnover", turnover, n, allow_2d=True)
    fee = _as_float_array("fees", fees, n, allow_2d=True)
    if (turn < 0).any() or (fee < 0).any():
        field = "turnover" if (turn < 0).any() else "fees"
        row = int(np.argwhere((turn if field == "turnover" else fee) < 0)[0][0])
        raise DataError(f"metrics: field {field!r} is negative at bar {row}")
    turn_bar = turn if turn.ndim == 1 else turn.sum(axis=1)
    fee_bar = fee if fee.ndim == 1 else fee.sum(axis=1)
    gross = _gross_exposure(pos)

    out: dict[str, Any] = {"timeframe": str(tf), "periods_per_year": ppy}
    out.update(_core_metrics(r, gross, turn_bar, fee_bar, ppy))
    n_trades, n_fills = count_trades(pos)
    out["n_trades"] = n_trades
    out["n_fills"] = n_fills
    out["avg_holding_bars"] = float((gross > FLAT_TOLERANCE).sum()) / n_trades if n_trades else math.nan

    act = None
    if actions is not None:
        act_f = _as_float_array("actions", actions, n, allow_2d=True)
        if not np.isin(act_f, (HOLD, LONG, SHORT)).all():
            row = int(np.argwhere(~np.isin(act_f, (HOLD, LONG, SHORT)))[0][0])
            raise DataError(f"metrics: field 'actions' holds a code other than HOLD/LONG/SHORT (0/1/2) at bar {row}")
        act = act_f.astype(np.int64)
    codes, source = _action_codes(pos, act)
    out["action_source"] = source
    out["action_distribution"] = _distribution(codes)

    if regimes is not None:
        reg = _as_float_array("regimes", regimes, n)
        if (reg != np.round(reg)).any() or (reg >= len(REGIME_NAMES)).any():
            row = int(np.argwhere((reg != np.round(reg)) | (reg >= len(REGIME_NAMES)))[0][0])
            raise DataError(f"metrics: field 'regimes' holds an invalid regime code at bar {row}: {reg[row]}")
        out["per_regime"] = per_regime_metrics(r, pos, turn_bar, fee_bar, reg.astype(np.int64), codes, ppy)

    if benchmark is not None:
        out["benchmark"] = benchmark_metrics(r, _as_float_array("benchmark", benchmark, n), ppy)
    return out


def per_regime_metrics(
    net_returns: np.ndarray,
    positions: np.ndarray,
    turnover_per_bar: np.ndarray,
    fees_per_bar: np.ndarray,
    regimes: np.ndarray,
    action_codes: np.ndarray,
    periods_per_year: float,
) -> dict[str, dict[str, Any]]:
    """Metrics restricted to the bars of each regime (bars with a negative code are left out).

    Per regime: ``share_of_bars``, ``n_bars``, ``total_return`` (compounded over that regime's bars only, as if the
    other bars did not exist), ``mean_return_per_bar``, ``sharpe`` (annualized), ``exposure``, ``avg_gross_exposure``,
    ``win_rate``, ``fees_per_bar_sum`` (sum of that regime's per-bar fee fractions) and ``actions`` (HOLD/LONG/SHORT
    shares). A regime without bars gets ``n_bars = 0`` and NaN ratios.
    """
    gross = _gross_exposure(positions)
    n = net_returns.size
    out: dict[str, dict[str, Any]] = {}
    for code, name in enumerate(REGIME_NAMES):
        mask = regimes == code
        k = int(mask.sum())
        if k == 0:
            out[name] = {"n_bars": 0, "share_of_bars": 0.0, "total_return": math.nan, "mean_return_per_bar": math.nan, "sharpe": math.nan, "exposure": math.nan,
                         "avg_gross_exposure": math.nan, "win_rate": math.nan, "fees_per_bar_sum": 0.0,
                         "actions": dict.fromkeys(ACTION_NAMES, math.nan)}
            continue
        r = net_returns[mask]
        core = _core_metrics(r, gross[mask], turnover_per_bar[mask], fees_per_bar[mask], periods_per_year)
        out[name] = {
            "n_bars": k,
            "share_of_bars": k / n,
            "total_return": core["total_return"],
            "mean_return_per_bar": float(r.mean()),
            "sharpe": core["sharpe"],
            "exposure": core["exposure"],
            "avg_gross_exposure": core["avg_gross_exposure"],
            "win_rate": core["win_rate"],
            "fees_per_bar_sum": float(fees_per_bar[mask].sum()),
            "actions": _distribution(action_codes[mask]),
        }
    return out


def benchmark_metrics(net_returns: np.ndarray, benchmark: np.ndarray, periods_per_year: float) -> dict[str, float]:
    """Strategy against a reference return series on the same bars.

    ``beta = cov(r, b) / var(b)``; ``correlation``; ``alpha_annual = (mean(r) - beta mean(b)) * periods_per_year``
    (arithmetic, zero risk-free rate); ``excess_annual_return = CAGR(r) - CAGR(b)``;
    ``information_ratio = mean(r - b) / std(r - b) * sqrt(periods_per_year)``.
    """
    r = net_returns
    b = benchmark
    n = r.size
    total_b = float(np.prod(1.0 + b) - 1.0)
    out = {
        "total_return": total_b,
        "annual_return": cagr(total_b, n, periods_per_year),
        "sharpe": sharpe_ratio(b, periods_per_year),
        "excess_annual_return": cagr(float(np.prod(1.0 + r) - 1.0), n, periods_per_year)
        - cagr(total_b, n, periods_per_year),
        "information_ratio": sharpe_ratio(r - b, periods_per_year),
        "beta": math.nan,
        "alpha_annual": math.nan,
        "correlation": math.nan,
    }
    if n >= 2:
        var_b = float(b.var(ddof=1))
        if var_b > ZERO_DISPERSION**2:
            beta = float(np.cov(r, b, ddof=1)[0, 1]) / var_b
            out["beta"] = beta
            out["alpha_annual"] = (float(r.mean()) - beta * float(b.mean())) * periods_per_year
            if float(r.std(ddof=1)) > ZERO_DISPERSION:
                out["correlation"] = float(np.corrcoef(r, b)[0, 1])
    return out


