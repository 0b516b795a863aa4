"""Calibration of the risk layer on a training window, reported on a later validation window only.

Fitted on bars with timestamps < ``train_end`` (never later):

- EVT threshold: among candidate threshold quantiles, the one whose GPD fit of the training losses' exceedances has
  the best Kolmogorov-Smirnov p-value (at least ``evt_min_exceedances`` exceedances); ξ and β are reported.
- Volatility cap: the ``vol_quantile`` quantile of the trailing ``cov_window_bars`` realized annualized volatility.

Validation (``train_end <= t < validation_end``): one-step-ahead VaR forecasts for a unit long and a unit short
position, each made from data before the bar it is tested on (EVT refit every ``evt_refit_every_bars`` bars on the
trailing ``evt_window_bars``; covariance/normal and historical over the trailing ``portfolio_var_window_bars``).
The whole stack is also replayed on the validation window with an always-long signal (gate activity, realized vol
and drawdown against buy-and-hold). Exceedance rates are compared with the nominal 1 - q by Kupiec's proportion-of-failures test (Kupiec 1995,
"Techniques for verifying the accuracy of risk measurement models"):

    LR = -2 ln[(1-p)^(N-x) p^x] + 2 ln[(1-x/N)^(N-x) (x/N)^x]  ~  χ²(1)

exceedance clustering by Christoffersen's (1998) independence test, and the ES forecasts by the ratio of realized mean loss on exceedance bars to the mean forecast ES (1 is ideal).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from himari.data.bars import Bars, to_utc_timestamp
from himari.errors import DataError
from himari.risk.config import RiskConfig
from himari.risk.evt import fit_pot, tail_risk, unit_losses
from himari.risk.manager import PositionManager
from himari.risk.portfolio_var import normal_quantile
from himari.sizing.context import DecisionContext, PolicySignal
from himari.sizing.sizer import SizingConfig

THRESHOLD_CANDIDATES = (0.90, 0.925, 0.95, 0.975)


def kupiec_pof(n_obs: int, n_exceed: int, level: float) -> tuple[float, float]:
    """Kupiec's POF likelihood ratio and its χ²(1) p-value for x exceedances in N forecasts of VaR_level."""
    p = 1.0 - level
    x, n = int(n_exceed), int(n_obs)
    if n <= 0:
        return math.nan, math.nan

    def loglik(prob: float) -> float:
        out = 0.0
        if n - x > 0:
            out += (n - x) * math.log1p(-prob) if prob < 1 else -math.inf
        if x > 0:
            out += x * math.log(prob) if prob > 0 else -math.inf
        return out

    lr = max(-2.0 * (loglik(p) - loglik(x / n)), 0.0)
    return lr, float(stats.chi2.sf(lr, 1))


def _xlogy(count: float, prob: float) -> float:
    return 0.0 if count == 0 else count * math.log(prob)


def christoffersen_independence(hits: np.ndarray) -> tuple[float, float]:
    """Christoffersen (1998) test that VaR exceedances do not cluster: LR_ind and its χ²(1) p-value.

    With n_ij the number of transitions from state i to j (1 = exceedance) in the hit sequence,
    ``LR = -2 ln[(1-π)^(n00+n10) π^(n01+n11)] + 2 ln[(1-π0)^n00 π0^n01 (1-π1)^n10 π1^n11]``,
    π0 = n01/(n00+n01), π1 = n11/(n10+n11), π = (n01+n11)/N.
    """
    h = np.asarray(hits, dtype=bool)
    if h.size < 2:
        return math.nan, math.nan
    prev, nxt = h[:-1], h[1:]
    n00 = float(np.sum(~prev & ~nxt))
    n01 = float(np.sum(~prev & nxt))
    n10 = float(np.sum(prev & ~nxt))
    n11 = float(np.sum(prev & nxt))
    total = n00 + n01 + n10 + n11
    pi = (n01 + n11) / total
    pi0 = n01 / (n00 + n01) if n00 + n01 > 0 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 > 0 else 0.0
    restricted = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    unrestricted = _xlogy(n00, 1 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1 - pi1) + _xlogy(n11, pi1)
    lr = max(-2.0 * (restricted - unrestricted), 0.0)
    return lr, float(stats.chi2.sf(lr, 1))


def select_threshold(
    losses: np.ndarray, candidates: tuple[float, ...], min_exceedances: int
) -> dict[str, Any]:
    """Fit POT/GPD at each candidate threshold quantile; choose the best KS goodness of fit."""
    x = losses[np.isfinite(losses)]
    rows = []
    for q in candidates:
        if x.size * (1 - q) < min_exceedances:
            continue
        u, xi, beta, n_u = fit_pot(x, q)
        excess = x[x > u] - u
        ks = stats.kstest(excess, "genpareto", args=(xi, 0.0, beta))
        rows.append(
            {
                "threshold_quantile": q,
                "threshold": u,
                "xi": xi,
                "beta": beta,
                "n_exceed": n_u,
                "ks_pvalue": float(ks.pvalue),
            }
        )
    if not rows:
        raise DataError(
            f"training window has {x.size} finite returns: too few for a GPD fit with {min_exceedances} exceedances"
        )
    best = max(rows, key=lambda r: r["ks_pvalue"])
    return {"chosen": best, "candidates": rows}


def _var_backtest(losses: np.ndarray, var: np.ndarray, es: np.ndarray | None, level: float) -> dict[str, Any]:
    ok = np.isfinite(losses) & np.isfinite(var)
    n = int(ok.sum())
    hits = ok & (losses > var)
    x = int(hits.sum())
    lr, pvalue = kupiec_pof(n, x, level)
    lr_ind, p_ind = christoffersen_independence(hits[ok])
    out: dict[str, Any] = {
        "n_forecasts": n,
        "n_exceedances": x,
        "exceedance_rate": x / n if n else math.nan,
        "nominal_rate": 1.0 - level,
        "kupiec_lr": lr,
        "kupiec_pvalue": pvalue,
        "christoffersen_lr": lr_ind,
        "christoffersen_pvalue": p_ind,
    }
    if es is not None:
        out["es_ratio"] = float(losses[hits].mean() / es[hits].mean()) if x else math.nan
    return out


def rolling_evt_forecasts(
    returns: np.ndarray, start: int, stop: int, cfg: RiskConfig
) -> dict[str, np.ndarray]:
    """VaR/ES forecasts for bars start..stop-1 from data strictly before each bar, refit every K bars."""
    n = stop - start
    out = {k: np.full(n, np.nan) for k in ("var_long", "es_long", "var_short", "es_short")}
    fit: tuple[Any, Any] | None = None
    for i in range(n):
        t = start + i
        if fit is None or i % cfg.evt_refit_every_bars == 0:
            history = returns[max(0, t - cfg.evt_window_bars) : t]
            long_l, short_l = unit_losses(history)
            args = (cfg.evt_level, cfg.evt_threshold_quantile, cfg.evt_min_exceedances, cfg.evt_min_bars)
            fit = (tail_risk(long_l, *args), tail_risk(short_l, *args))
        out["var_long"][i], out["es_long"][i] = fit[0].var, fit[0].es
        out["var_short"][i], out["es_short"][i] = fit[1].var, fit[1].es
    return out


def rolling_window_var(
    returns: np.ndarray, start: int, stop: int, window: int, level: float
) -> dict[str, np.ndarray]:
    """Normal (zero-mean, sample σ) and historical VaR for unit long/short from the ``window`` bars before each bar."""
    lo = start - window
    if lo < 0:
        raise DataError(f"need {window} bars of history before the validation window, have {start}")
    hist = sliding_window_view(returns[lo : stop - 1], window)  # row i = bars (start+i-window) .. (start+i-1)
    long_l, short_l = unit_losses(hist)
    with np.errstate(invalid="ignore"):
        sigma = np.nanstd(hist, axis=1, ddof=1)
    z = normal_quantile(level)
    enough = np.isfinite(hist).sum(1) >= max(10, window // 2)
    res = {
        "normal": np.where(enough, z * sigma, np.nan),
        "hist_long": np.where(enough, np.nanquantile(long_l, level, axis=1), np.nan),
        "hist_short": np.where(enough, np.nanquantile(short_l, level, axis=1), np.nan),
    }
    return res


def _max_drawdown(log_returns: np.ndarray) -> float:
    equity = np.exp(np.cumsum(np.nan_to_num(log_returns)))
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return float((1.0 - equity / peak).max()) if equity.size else 0.0


def managed_long_replay(
    bars: Bars, start: int, stop: int, config: RiskConfig, history: int = 2000
) -> dict[str, Any]:
    """Run the sizing + risk stack on [start, stop) with an always-LONG signal, no regime scaling (posterior one-hot
    LOW_VOL) and the Kelly cap off: how often each gate binds, and the managed position's realized risk vs buy-and-hold.
    Decisions at t fill at t+1 and earn bar t+1's return.
    """
    returns = bars.log_returns()
    ts = bars.timestamps_ns
    # the Kelly cap judges the policy's signal, not the market: off here, so the market-risk gates show
    manager = PositionManager(SizingConfig(), config.replace(kelly_cap_enabled=False), (bars.symbol,))
    posterior = np.array([[1.0, 0.0, 0.0, 0.0]])
    equity, peak, position = 1.0, 1.0, np.zeros(1)
    strat = np.full(stop - start, np.nan)
    held = np.zeros(stop - start)
    binding: dict[str, int] = {}
    signal = PolicySignal("discrete", np.ones(1))
    for i, t in enumerate(range(start, stop)):
        ctx = DecisionContext(
            int(ts[t]),
            bars.timeframe,
            returns[max(0, t - history + 1) : t + 1, None],
            posterior,
            equity,
            position,
            peak,
            strategy_returns=strat[max(0, i - config.budget_window_bars) : i],
        )
        d = manager.decide(signal, ctx)
        binding[d.binding[0]] = binding.get(d.binding[0], 0) + 1
        held[i] = d.target[0]
        nxt = returns[t + 1] if t + 1 < len(returns) else math.nan
        pnl = float(d.target[0] * math.expm1(nxt)) if math.isfinite(nxt) else 0.0
        equity *= 1.0 + pnl
        strat[i] = math.log1p(pnl)
        peak = max(peak, equity)
        position = d.target
    ppy = bars.timeframe.periods_per_year
    hold = returns[start + 1 : stop + 1]
    n = stop - start
    return {
        "decisions": n,
        "binding_fraction": {k: v / n for k, v in sorted(binding.items())},
        "mean_abs_position": float(np.abs(held).mean()),
        "managed_vol_annual": float(np.nanstd(strat, ddof=1) * math.sqrt(ppy)),
        "buy_and_hold_vol_annual": float(np.nanstd(hold, ddof=1) * math.sqrt(ppy)),
        "managed_max_drawdown": _max_drawdown(strat),
        "buy_and_hold_max_drawdown": _max_drawdown(hold),
        "managed_total_log_return": float(np.nansum(strat)),
        "buy_and_hold_total_log_return": float(np.nansum(hold)),
    }


def calibrate(
    bars: Bars,
    train_end: object,
    validation_end: object | None = None,
    base: RiskConfig | None = None,
    train_start: object | None = None,
    vol_quantile: float = 0.75,
) -> tuple[RiskConfig, dict[str, Any]]:
    """Fit on [train_start, train_end), report on [train_end, validation_end); returns (config, report)."""
    base = base or RiskConfig()
    te = to_utc_timestamp(train_end)  # type: ignore[arg-type]
    ve = to_utc_timestamp(validation_end) if validation_end is not None else te + np.timedelta64(182, "D")  # type: ignore[arg-type,operator]
    ts0 = to_utc_timestamp(train_start) if train_start is not None else None  # type: ignore[arg-type]
    if te is None or ve is None or ve <= te:
        raise DataError(f"validation end {ve} must be after train end {te}")
    index = bars.frame.index
    returns = bars.log_returns()
    train_mask = index < te
    if ts0 is not None:
        train_mask &= index >= ts0
    train_idx = np.flatnonzero(train_mask)
    val_idx = np.flatnonzero((index >= te) & (index < ve))
    train_r = returns[train_idx]
    n_train = int(np.isfinite(train_r).sum())
    if n_train < max(500, base.evt_min_bars):
        raise DataError(
            f"training window before {te:%Y-%m-%d} has {n_train} finite returns; need at least 500",
            bars.source,
        )
    if val_idx.size < 50:
        raise DataError(
            f"validation window {te:%Y-%m-%d} -> {ve:%Y-%m-%d} has {val_idx.size} bars; need at least 50",
            bars.source,
        )
    if val_idx[0] != train_idx[-1] + 1 and ts0 is None:
        raise DataError("validation window does not follow the training window", bars.source)

    ppy = bars.timeframe.periods_per_year
    long_l, _ = unit_losses(train_r)
    threshold = select_threshold(long_l, THRESHOLD_CANDIDATES, base.evt_min_exceedances)
    w = base.cov_window_bars
    if train_r.size <= w:
        raise DataError(f"training window shorter than cov_window_bars={w}", bars.source)
    with np.errstate(invalid="ignore"):
        roll = np.nanstd(sliding_window_view(train_r, w), axis=1, ddof=1) * math.sqrt(ppy)
    roll = roll[np.isfinite(roll)]
    vol_cap = float(np.clip(np.quantile(roll, vol_quantile), 0.05, 5.0))
    realized = float(np.nanstd(train_r, ddof=1) * math.sqrt(ppy))
    config = base.replace(
        evt_threshold_quantile=threshold["chosen"]["threshold_quantile"], vol_cap_annual=round(vol_cap, 4)
    )

    # validation: forecasts for bar t use returns < t only
    start, stop = int(val_idx[0]), int(val_idx[-1]) + 1
    val_long, val_short = unit_losses(returns[start:stop])
    evt = rolling_evt_forecasts(returns, start, stop, config)
    win = rolling_window_var(
        returns, start, stop, config.portfolio_var_window_bars, config.portfolio_var_level
    )
    q_evt, q_pv = config.evt_level, config.portfolio_var_level
    report = {
        "symbol": bars.symbol,
        "timeframe": str(bars.timeframe),
        "train": {
            "start": str(index[train_idx[0]]),
            "end_exclusive": str(te),
            "bars": int(train_idx.size),
            "realized_vol_annual": realized,
            "evt_threshold": threshold,
            "vol_cap_annual": vol_cap,
            "vol_quantile": vol_quantile,
        },
        "validation": {
            "start": str(index[start]),
            "end_exclusive": str(ve),
            "bars": int(stop - start),
            "evt_long": _var_backtest(val_long, evt["var_long"], evt["es_long"], q_evt),
            "evt_short": _var_backtest(val_short, evt["var_short"], evt["es_short"], q_evt),
            "normal_long": _var_backtest(val_long, win["normal"], None, q_pv),
            "normal_short": _var_backtest(val_short, win["normal"], None, q_pv),
            "historical_long": _var_backtest(val_long, win["hist_long"], None, q_pv),
            "historical_short": _var_backtest(val_short, win["hist_short"], None, q_pv),
            "managed_long": managed_long_replay(bars, start, min(stop, len(returns) - 1), config),
        },
        "config": config.to_dict(),
    }
    return config, report


def format_report(report: dict[str, Any]) -> str:
    tr, va = report["train"], report["validation"]
    ch = tr["evt_threshold"]["chosen"]
    lines = [
        f"{report['symbol']} {report['timeframe']}",
        f"train      {tr['start'][:16]} -> {tr['end_exclusive'][:16]} ({tr['bars']} bars), realized vol {tr['realized_vol_annual']:.1%}/yr",
        f"  EVT      threshold quantile {ch['threshold_quantile']:.3f} (u={ch['threshold']:.4f}), xi={ch['xi']:.3f}, "
        f"beta={ch['beta']:.4f}, N_u={ch['n_exceed']}, KS p={ch['ks_pvalue']:.3f}",
        f"  vol cap  {tr['vol_cap_annual']:.1%}/yr (q{tr['vol_quantile']:.2f} of trailing realized vol)",
        f"validation {va['start'][:16]} -> {va['end_exclusive'][:16]} ({va['bars']} bars); VaR exceedances vs nominal:",
        f"  {'model':<18}{'N':>7}{'hits':>6}{'rate':>9}{'nominal':>9}{'Kupiec p':>10}{'indep p':>9}{'ES ratio':>10}",
    ]
    for key in (
        "evt_long",
        "evt_short",
        "normal_long",
        "normal_short",
        "historical_long",
        "historical_short",
    ):
        r = va[key]
        es = r.get("es_ratio")
        es_text = "" if es is None else ("n/a" if not np.isfinite(es) else f"{es:.2f}")
        lines.append(
            f"  {key:<18}{r['n_forecasts']:>7}{r['n_exceedances']:>6}{r['exceedance_rate']:>9.2%}{r['nominal_rate']:>9.2%}"
            f"{r['kupiec_pvalue']:>10.3f}{r['christoffersen_pvalue']:>9.3f}{es_text:>10}"
        )
    m = va["managed_long"]
    binds = ", ".join(f"{k} {v:.0%}" for k, v in sorted(m["binding_fraction"].items(), key=lambda kv: -kv[1]))
    lines += [
        "  always-long signal through sizing + risk (no regime scaling, Kelly cap off), fill at t+1:",
        f"    binding gate: {binds}",
        f"    mean |position| {m['mean_abs_position']:.2f}; vol {m['managed_vol_annual']:.1%}/yr vs buy-and-hold "
        f"{m['buy_and_hold_vol_annual']:.1%}; max drawdown {m['managed_max_drawdown']:.1%} vs "
        f"{m['buy_and_hold_max_drawdown']:.1%}",
    ]
    return "\n".join(lines)
