"""Compiled (numba) kernels behind :func:`himari.env.sim.step` and :func:`himari.env.sim.observe`.

One fused pass per episode instead of ~150 small NumPy calls per step: at N = 1 (the backtester and paper-trading
path) NumPy's per-call overhead dominated, and at large N the temporaries of the vectorized form did. The
arithmetic is exactly the accounting documented in :mod:`himari.env.execution` (mark to market, rebalance with fees
and slippage, funding) in the same order of operations; ``tests/env`` checks it against the independent plain-loop
reference (``tests/env/reference.py``), the NumPy execution kernels and the torch simulator.

Everything here is a pure function of plain arrays (no configs, no state objects): :mod:`himari.env.sim` unpacks
its configs into scalars. Kernels are compiled on first use (a few seconds) and cached on disk — next to this file,
else in the user's cache folder, or where ``NUMBA_CACHE_DIR`` points; where none is writable (a read-only container)
they are compiled once per process instead. They run on the calling thread (no numba threading layer, so they never
compete with torch's threads).
"""

from __future__ import annotations

import numpy as np

from himari.utils.jit import njit

# action modes of step_kernel (params[P_MODE])
MODE_DISCRETE, MODE_TARGET = 0.0, 1.0


# columns of MarketData.execution_table (himari.env.market.EXEC_COLUMNS)
_GAP, _INTRA, _TOTAL, _OPEN, _CLOSE, _VOL, _FILLABLE, _VALID = range(8)
# params vector of step_kernel
(
    P_MODE,
    P_HOLD_FLAT,
    P_REBALANCE,
    P_CAP,
    P_LO,
    P_MAX_GROSS,
    P_INVALID_FLAT,
    P_NEXT_OPEN,
    P_FUNDING,
    P_FEE,
    P_SLIPPAGE,
    P_VOL_SLIPPAGE,
    P_RUIN,
) = range(13)
N_PARAMS = 13
# rows of the per-episode float output of step_kernel
(
    O_EQUITY,
    O_PEAK,
    O_GROWTH_PRE,
    O_GROWTH_POST,
    O_DRAWDOWN,
    O_PREV_DRAWDOWN,
    O_FEE,
    O_SLIPPAGE,
    O_FUNDING,
    O_TURNOVER,
) = range(10)
# rows of the per-episode bool output
B_FLAT, B_TERMINATED, B_TRUNCATED, B_WIPED = range(4)
# rows of the per-asset output
A_POSITION, A_ENTRY, A_TARGET, A_FILL_PRICE, A_TRADED = range(5)


@njit(nogil=True, error_model="numpy")
def step_kernel(
    t: np.ndarray,
    steps: np.ndarray,
    length: np.ndarray,
    equity: np.ndarray,
    peak_equity: np.ndarray,
    position: np.ndarray,
    entry_price: np.ndarray,
    time_in_position: np.ndarray,
    act: np.ndarray,
    target_in: np.ndarray,
    params: np.ndarray,
    table: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One bar for N episodes (the state arrays of :class:`himari.env.sim.SimState`).

    ``act``: int (N, A) HOLD/LONG/SHORT codes (params[P_MODE] == MODE_DISCRETE), else ``target_in`` (N, A): targets
    before the gross exposure cap. ``params``: see ``P_*``; ``table``: ``MarketData.execution_table``.
    Returns per-episode floats (10, N) (rows ``O_*``; growths are gross, the caller takes logs vectorized), bools
    (4, N) (rows ``B_*``), per-asset floats (5, N, A) (rows ``A_*``) and time in position (N, A) int64.

    Written as flat scalar loops (no helper calls or array temporaries inside the episode loop, which cost numba
    reference counting per call); the price moves are himari.env.execution.mark_to_market, the fill is
    rebalance, the funding is funding.
    """
    n_env, a_n = position.shape
    discrete = params[P_MODE] == MODE_DISCRETE
    hold_flat = params[P_HOLD_FLAT] != 0.0
    rebal = params[P_REBALANCE] != 0.0
    cap = params[P_CAP]
    lo = params[P_LO]
    max_gross = params[P_MAX_GROSS]
    invalid_flat = params[P_INVALID_FLAT] != 0.0
    next_open = params[P_NEXT_OPEN] != 0.0
    rate = params[P_FUNDING]
    fee_rate = params[P_FEE]
    slippage_rate = params[P_SLIPPAGE]
    vol_coef = params[P_VOL_SLIPPAGE]
    ruin = params[P_RUIN]
    pre_col = _GAP if next_open else _TOTAL
    price_col = _OPEN if next_open else _CLOSE
    out = np.empty((10, n_env))
    flags = np.empty((4, n_env), dtype=np.bool_)
    per_asset = np.empty((5, n_env, a_n))
    new_tip = np.empty((n_env, a_n), dtype=np.int64)
    m1 = np.empty((n_env, a_n))  # position after the pre-fill move
    for i in range(n_env):
        ti = t[i]
        t1 = ti + 1
        # 1. the move before the fill (close[t] -> open[t+1], or all of bar t+1 for close fills)
        acc = 0.0
        for a in range(a_n):
            acc += position[i, a] * (table[t1, a, pre_col] - 1.0)
        g1 = 1.0 + acc
        if g1 > 0.0:
            eq1 = equity[i] * g1
            for a in range(a_n):
                m1[i, a] = position[i, a] * table[t1, a, pre_col] / g1
        else:
            g1 = 0.0
            eq1 = 0.0
            for a in range(a_n):
                m1[i, a] = 0.0
        fund_cost = 0.0
        if rate != 0.0 and not next_open:
            acc = 0.0
            for a in range(a_n):
                acc += m1[i, a]
            fund_cost = eq1 * acc * rate
            eq_f = eq1 - fund_cost
            for a in range(a_n):
                m1[i, a] = m1[i, a] * (eq1 / eq_f) if eq_f > 0.0 else 0.0
            eq1 = max(eq_f, 0.0)
        # 2. the order: action -> target, gross cap, invalid inputs -> flat (or keep)
        gross = 0.0
        for a in range(a_n):
            cur = m1[i, a]
            if discrete:
                code = act[i, a]
                if code == 1:
                    tg = cap if rebal or cur <= 0.0 else cur
                elif code == 2:
                    tg = lo if rebal or lo >= 0.0 or cur >= 0.0 else cur
                else:
                    tg = 0.0 if hold_flat else cur
            else:
                tg = target_in[i, a]
            per_asset[A_TARGET, i, a] = tg
            gross += abs(tg)
        scale = min(1.0, max_gross / max(gross, 1e-12)) if max_gross > 0.0 else 1.0
        # 3. rebalance at the fill price (himari.env.execution.rebalance); unfillable -> no trade
        costs = 0.0
        fee_sum = 0.0
        slip_sum = 0.0
        to_sum = 0.0
        for a in range(a_n):
            tg = per_asset[A_TARGET, i, a] * scale if max_gross > 0.0 else per_asset[A_TARGET, i, a]
            if table[ti, a, _VALID] == 0.0:
                tg = 0.0 if invalid_flat else m1[i, a]
            per_asset[A_TARGET, i, a] = tg
            d = tg - m1[i, a] if table[ti, a, _FILLABLE] != 0.0 else 0.0
            side = (d > 0.0) - (d < 0.0)
            s = slippage_rate + vol_coef * table[ti, a, _VOL]
            notional = abs(d) * eq1
            slip_cost = notional * s
            fee = fee_rate * notional * (1.0 + side * s)
            costs += slip_cost + fee
            fee_sum += fee
            slip_sum += slip_cost
            to_sum += abs(d)
            per_asset[A_TRADED, i, a] = abs(d)
            per_asset[A_FILL_PRICE, i, a] = table[t1, a, price_col] * (1.0 + side * s)
            per_asset[A_POSITION, i, a] = m1[i, a] + d  # holding / pre-trade equity, divided below
        eq2 = eq1 - costs
        # account bookkeeping on the filled position
        m1_abs = 0.0
        fill_abs = 0.0
        for a in range(a_n):
            p = per_asset[A_POSITION, i, a] * eq1 / eq2 if eq2 > 0.0 else 0.0
            per_asset[A_POSITION, i, a] = p
            old = m1[i, a]
            m1_abs += abs(old)
            fill_abs += abs(p)
            if p == 0.0:
                per_asset[A_ENTRY, i, a] = 0.0
                new_tip[i, a] = 0
            elif (p > 0.0) != (old > 0.0) or old == 0.0:  # sign changed: a new entry
                per_asset[A_ENTRY, i, a] = per_asset[A_FILL_PRICE, i, a]
                new_tip[i, a] = 1
            else:
                per_asset[A_ENTRY, i, a] = entry_price[i, a]
                new_tip[i, a] = time_in_position[i, a] + 1
        # 4. the move after the fill (open -> close of bar t+1) and funding (open fills)
        g2 = 1.0
        eq3 = eq2
        if next_open:
            acc = 0.0
            for a in range(a_n):
                acc += per_asset[A_POSITION, i, a] * (table[t1, a, _INTRA] - 1.0)
            g2 = 1.0 + acc
            if g2 > 0.0:
                eq3 = eq2 * g2
                for a in range(a_n):
                    per_asset[A_POSITION, i, a] = per_asset[A_POSITION, i, a] * table[t1, a, _INTRA] / g2
            else:
                g2 = 0.0
                eq3 = 0.0
                for a in range(a_n):
                    per_asset[A_POSITION, i, a] = 0.0
            if rate != 0.0:
                acc = 0.0
                for a in range(a_n):
                    acc += per_asset[A_POSITION, i, a]
                fund_cost = eq3 * acc * rate
                eq_f = eq3 - fund_cost
                for a in range(a_n):
                    per_asset[A_POSITION, i, a] = (
                        per_asset[A_POSITION, i, a] * (eq3 / eq_f) if eq_f > 0.0 else 0.0
                    )
                eq3 = eq_f
        eq_final = max(eq3, 0.0)
        pk = max(peak_equity[i], eq_final)
        out[O_EQUITY, i] = eq_final
        out[O_PEAK, i] = pk
        out[O_GROWTH_PRE, i] = g1
        out[O_GROWTH_POST, i] = g2
        out[O_DRAWDOWN, i] = 1.0 - eq_final / pk
        out[O_PREV_DRAWDOWN, i] = 1.0 - equity[i] / peak_equity[i]
        out[O_FEE, i] = fee_sum
        out[O_SLIPPAGE, i] = slip_sum
        out[O_FUNDING, i] = fund_cost
        out[O_TURNOVER, i] = to_sum
        flags[B_FLAT, i] = m1_abs == 0.0 and fill_abs == 0.0
        term = eq_final < ruin
        flags[B_TERMINATED, i] = term
        flags[B_TRUNCATED, i] = steps[i] + 1 >= length[i] and not term
        flags[B_WIPED, i] = g1 == 0.0 or g2 == 0.0
    return out, flags, per_asset, new_tip


# params vector of observe_kernel
Q_INV_LENGTH, Q_BASE_CONSTANT, Q_BASE_POSITION, Q_TARGET_VOL, Q_SQRT_PPY, Q_MAX_POSITION = range(6)
N_OBSERVE_PARAMS = 6


@njit(nogil=True, error_model="numpy", inline="always")
def _observe_row(
    i: int,
    ti: int,
    window: int,
    flat_f: np.ndarray,
    flat_r: np.ndarray,
    row_f: int,
    row_r: int,
    position: np.ndarray,
    entry_price: np.ndarray,
    time_in_position: np.ndarray,
    equity: np.ndarray,
    peak_equity: np.ndarray,
    table: np.ndarray,
    params: np.ndarray,
    out_f: np.ndarray,
    out_r: np.ndarray,
    account: np.ndarray,
    log_args: np.ndarray,
) -> None:
    """Observation row i of an episode at decision bar ``ti`` (see :func:`observe_kernel`)."""
    src_f = (ti - window + 1) * row_f
    for j in range(window * row_f):
        out_f[i, j] = flat_f[src_f + j]
    src_r = (ti - window + 1) * row_r
    for j in range(window * row_r):
        out_r[i, j] = flat_r[src_r + j]
    eq = equity[i]
    dd = 1.0 - eq / peak_equity[i]
    for a in range(position.shape[1]):
        p = position[i, a]
        e = entry_price[i, a]
        log_args[0, i, a] = table[ti, a, _CLOSE] / e if e > 0.0 and p != 0.0 else 1.0
        log_args[1, i, a] = max(eq, 1e-300)
        if params[Q_BASE_CONSTANT] != 0.0:
            base = params[Q_BASE_POSITION]
        else:
            sigma_annual = table[ti, a, _VOL] * params[Q_SQRT_PPY]
            base = min(max(params[Q_TARGET_VOL] / max(sigma_annual, 1e-6), 0.0), params[Q_MAX_POSITION])
        account[i, a, 0] = p
        account[i, a, 2] = time_in_position[i, a] * params[Q_INV_LENGTH]
        account[i, a, 4] = dd
        account[i, a, 5] = base


@njit(nogil=True, error_model="numpy")
def observe_kernel(
    window: int,
    features: np.ndarray,
    regime: np.ndarray,
    table: np.ndarray,
    params: np.ndarray,
    t: np.ndarray,
    position: np.ndarray,
    entry_price: np.ndarray,
    time_in_position: np.ndarray,
    equity: np.ndarray,
    peak_equity: np.ndarray,
    out_f: np.ndarray,
    out_r: np.ndarray,
    account: np.ndarray,
    log_args: np.ndarray,
    pair: bool,
    renewed: np.ndarray,
    t2: np.ndarray,
    position2: np.ndarray,
    entry_price2: np.ndarray,
    time_in_position2: np.ndarray,
    equity2: np.ndarray,
    peak_equity2: np.ndarray,
    out_f2: np.ndarray,
    out_r2: np.ndarray,
    account2: np.ndarray,
    log_args2: np.ndarray,
) -> None:
    """Writes features ``out_f`` (N, W*A*F) and regime ``out_r`` (N, W*A*R) of bars t-W+1..t, and the account
    (N, A, 6) float32 in the order of :data:`himari.env.protocol.ACCOUNT_FIELDS` — except the two logarithms, which
    the caller takes vectorized from ``log_args`` (2, N, A) float64 = (mark / entry price where a position is
    held, else 1; equity floored at 1e-300): unrealized_pnl = sign(position) * log(log_args[0]) and
    equity_log = log(log_args[1]). ``params``: see ``Q_*``.

    ``pair=True`` (auto-reset): also writes the observation of the second state (``*2``) into the ``*2`` outputs,
    which differs from the first only in the ``renewed`` rows (restarted episodes): elsewhere the row just written
    is copied while it is still in cache. With ``pair=False`` the ``*2`` arguments are ignored.

    ``features``/``regime`` are (T, A, F)/(T, A, R) C-contiguous, so an episode's window is one contiguous block.
    The outputs are allocated by the caller (NumPy asks for transparent huge pages on large arrays, which makes
    the first touch of a 35 MB observation several times cheaper than 4 kB page faults).
    """
    n_env, a_n = position.shape
    t_len = features.shape[0]
    row_f = features.shape[1] * features.shape[2]
    row_r = regime.shape[1] * regime.shape[2]
    flat_f = features.reshape(t_len * row_f)
    flat_r = regime.reshape(t_len * row_r)
    for i in range(n_env):
        _observe_row(
            i, t[i], window, flat_f, flat_r, row_f, row_r, position, entry_price, time_in_position, equity,
            peak_equity, table, params, out_f, out_r, account, log_args,
        )  # fmt: skip
        if not pair:
            continue
        if renewed[i]:
            _observe_row(
                i, t2[i], window, flat_f, flat_r, row_f, row_r, position2, entry_price2, time_in_position2,
                equity2, peak_equity2, table, params, out_f2, out_r2, account2, log_args2,
            )  # fmt: skip
        else:
            for j in range(out_f.shape[1]):
                out_f2[i, j] = out_f[i, j]
            for j in range(out_r.shape[1]):
                out_r2[i, j] = out_r[i, j]
            for a in range(a_n):
                for k in range(account.shape[2]):
                    account2[i, a, k] = account[i, a, k]
                log_args2[0, i, a] = log_args[0, i, a]
                log_args2[1, i, a] = log_args[1, i, a]
