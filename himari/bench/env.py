"""``himari bench env``: simulator throughput (env-steps/s) beside the simplest NumPy loop doing the same arithmetic.

For each configuration (single asset / three assets; N = 1, 1024, 4096 parallel episodes) it times
:class:`himari.env.sim.SimVecEnv.step` with random discrete actions (default costs, pnl reward, auto-reset) and
:func:`plain_numpy_loop`: the same per-step arithmetic written as bare vectorized NumPy with no validation,
configs, info dictionary or auto-reset bookkeeping — the floor the simulator is compared against (target: >= 0.5x).
One env-step is one episode advancing one bar, so steps/s = N * iterations / seconds.
"""

from __future__ import annotations

import time
import warnings

import click
import numpy as np

from himari.env.market import MarketData
from himari.env.sim import SimConfig, SimVecEnv

SIZES: tuple[int, ...] = (1, 1024, 4096)


def synthetic_market(n_assets: int, n_bars: int = 20_000, n_features: int = 44, seed: int = 0) -> MarketData:
    """A random-walk market with ``n_features`` float32 features (the tactical set has 44)."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, (n_bars, n_assets))
    close = 100.0 * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    ts = np.arange(n_bars, dtype=np.int64) * 3_600_000_000_000
    feats = rng.normal(size=(n_bars, n_assets, n_features)).astype(np.float32)
    post = rng.dirichlet(np.ones(4), size=(n_bars, n_assets)).astype(np.float32)
    return MarketData.from_arrays(ts, open_, high, low, close, features=feats, regime_posterior=post)


def plain_numpy_loop(
    market: MarketData, num_envs: int, steps: int, window: int, episode_length: int, seed: int = 0
) -> float:
    """The simplest vectorized loop doing the simulator's arithmetic; returns seconds for ``steps`` iterations.

    Per step: discrete action -> target, close->open move, fees + volatility-scaled slippage at the open fill,
    open->close move, net log-return reward, drawdown, episode end and re-draw of finished episodes' starts,
    and the observation gather (features and regime windows, account fields).
    """
    rng = np.random.default_rng(seed)
    n, a = num_envs, market.num_assets
    hi = market.num_bars - episode_length - 1
    t = rng.integers(window, hi, n)
    steps_in = np.zeros(n, np.int64)
    pos = np.zeros((n, a))
    eq = np.ones(n)
    peak = np.ones(n)
    fee, slip0, coef = 1e-3, 2e-4, 0.05
    gap, intra, vol = market.gap_return, market.intrabar_return, market.volatility
    feats, post = market.features, market.regime_posterior
    offs = np.arange(1 - window, 1)
    actions = rng.integers(0, 3, (16, n, a))
    start = time.perf_counter()
    for k in range(steps):
        act = actions[k % 16]
        target = np.where(act == 1, 1.0, np.where(act == 2, -1.0, pos))
        g = np.exp(gap[t + 1])
        growth = 1.0 + (pos * (g - 1.0)).sum(1)
        pos = pos * g / growth[:, None]
        e1 = eq * growth
        dp = target - pos
        s = slip0 + coef * vol[t]
        cost = (np.abs(dp) * (s + fee * (1.0 + np.sign(dp) * s))).sum(1) * e1
        e2 = e1 - cost
        pos = target * (e1 / e2)[:, None]
        g = np.exp(intra[t + 1])
        growth = 1.0 + (pos * (g - 1.0)).sum(1)
        pos = pos * g / growth[:, None]
        e3 = e2 * growth
        reward = np.log(e3 / eq)  # noqa: F841 - computed as the simulator does
        peak = np.maximum(peak, e3)
        eq = e3
        steps_in += 1
        t = t + 1
        done = steps_in >= episode_length
        if done.any():
            t = np.where(done, rng.integers(window, hi, n), t)
            eq, peak, steps_in = (
                np.where(done, 1.0, eq),
                np.where(done, 1.0, peak),
                np.where(done, 0, steps_in),
            )
            pos = np.where(done[:, None], 0.0, pos)
        idx = t[:, None] + offs
        _obs = (
            feats[idx],
            post[idx],
            np.stack([pos, np.broadcast_to((1 - eq / peak)[:, None], pos.shape)], -1),
        )
    return time.perf_counter() - start


def _time_sim(market: MarketData, config: SimConfig, num_envs: int, steps: int, seed: int = 0) -> float:
    env = SimVecEnv(market, config, num_envs, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, (16, num_envs, market.num_assets))
    start = time.perf_counter()
    for k in range(steps):
        env.step(actions[k % 16])
    return time.perf_counter() - start


def _time_torch(market: MarketData, config: SimConfig, num_envs: int, steps: int, device: str) -> float:
    import torch

    from himari.env.torch_sim import TorchSimVecEnv

    env = TorchSimVecEnv(market, config, num_envs, seed=0, device=device)
    env.reset()
    gen = torch.Generator(device=env.device).manual_seed(0)
    actions = torch.randint(0, 3, (16, num_envs, market.num_assets), generator=gen, device=env.device)
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for k in range(steps):
        env.step(actions[k % 16])
    sync()
    return time.perf_counter() - start


def time_gym_anytrading(window: int = 10, min_seconds: float = 1.0, n_bars: int = 50_000, seed: int = 0) -> float:
    """Steps/s of gym-anytrading's ``stocks-v0`` (one per-step Python environment, ``window`` bars of its two
    signal features) on a random-walk price series; needs ``pip install gym-anytrading``."""
    import gym_anytrading  # noqa: F401  (registers stocks-v0)
    import gymnasium as gym
    import pandas as pd

    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
    frame = pd.DataFrame({"Open": close, "High": close, "Low": close, "Close": close, "Volume": 1.0})
    with warnings.catch_warnings():  # its env checker warns that observations share memory (they are views)
        warnings.simplefilter("ignore")
        env = gym.make("stocks-v0", df=frame, window_size=window, frame_bound=(window, n_bars))
        env.reset(seed=seed)
        env.step(0)
        env.step(1)
    actions = [int(x) for x in rng.integers(0, 2, 1000)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        steps += len(actions)
    return steps / (time.perf_counter() - start)


def observation_bytes(window: int, n_features: int, n_assets: int) -> int:
    """Bytes of one episode's observation (float32 features, regime posterior and account fields)."""
    from himari.env.protocol import ACCOUNT_FIELDS, REGIME_NAMES

    return 4 * n_assets * (window * (n_features + len(REGIME_NAMES)) + len(ACCOUNT_FIELDS))


def run_env_bench(
    sizes: tuple[int, ...] = SIZES,
    window: int = 16,
    n_features: int = 44,
    min_seconds: float = 1.0,
    episode_length: int = 256,
    torch_device: str | None = None,
    gym_anytrading: bool = False,
) -> dict[str, float]:
    """Env-steps/s of the simulator and of the plain NumPy loop; keys ``single_n1``, ``multi_n4096``,
    ``numpy_single_n1``, ... and ``ratio_<cfg>`` = simulator / plain loop; ``gym_anytrading`` (steps/s of
    gym-anytrading's stocks-v0 with the same window) when asked."""
    out: dict[str, float] = {}
    # warm-up: compiled kernels loaded, caches and clocks settled before the first measured configuration
    warm = synthetic_market(1, n_bars=2_000, n_features=n_features)
    warm_cfg = SimConfig(window=window, episode_length=64)
    _time_sim(warm, warm_cfg, 1, 500)
    plain_numpy_loop(warm, 1, 500, window, 64)
    if gym_anytrading:
        out["gym_anytrading"] = time_gym_anytrading(window, min_seconds)
    config = SimConfig(window=window, episode_length=episode_length)
    for label, n_assets in (("single", 1), ("multi", 3)):
        market = synthetic_market(n_assets, n_features=n_features)
        for n in sizes:
            # calibrate the number of iterations to about min_seconds
            per_step = _time_sim(market, config, n, 5) / 5
            steps = max(5, int(min_seconds / max(per_step, 1e-7)))
            sim_s = _time_sim(market, config, n, steps)
            loop_s = plain_numpy_loop(market, n, steps, window, episode_length)
            name = f"{label}_n{n}"
            out[name] = n * steps / sim_s
            out[f"numpy_{name}"] = n * steps / loop_s
            out[f"ratio_{name}"] = loop_s / sim_s
            if torch_device is not None:
                _time_torch(market, config, n, 3, torch_device)  # warm-up (CUDA context, kernels)
                out[f"torch_{name}"] = n * steps / _time_torch(market, config, n, steps, torch_device)
    return out


def register_bench(group: click.Group) -> None:
    @group.command("env")
    @click.option("--window", default=16, show_default=True, help="Observation window W (bars).")
    @click.option("--features", "n_features", default=44, show_default=True, help="Features per asset F.")
    @click.option("--seconds", "min_seconds", default=1.0, show_default=True, help="Time per configuration.")
    @click.option("--sizes", default="1,1024,4096", show_default=True, help="Comma-separated N values.")
    @click.option(
        "--torch-device", default=None, help="Also time the torch simulator on this device (cpu, cuda)."
    )
    @click.option(
        "--gym-anytrading",
        "gym_anytrading",
        is_flag=True,
        help="Also time gym-anytrading's stocks-v0 with the same window (pip install gym-anytrading).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object {config: env-steps/s}.")
    def env_bench(
        window: int,
        n_features: int,
        min_seconds: float,
        sizes: str,
        torch_device: str | None,
        gym_anytrading: bool,
        as_json: bool,
    ) -> None:
        """Simulator env-steps/s for N = 1, 1024, 4096 (single and 3-asset) beside a plain NumPy loop."""
        from himari.utils.io import to_json

        ns = tuple(int(x) for x in sizes.split(",") if x.strip())
        from himari.utils.threads import configure_torch_threads

        configure_torch_threads()
        if gym_anytrading:
            try:
                import gym_anytrading as _  # noqa: F401
            except ImportError as exc:
                raise click.ClickException("--gym-anytrading needs: pip install gym-anytrading") from exc
        res = run_env_bench(
            ns, window, n_features, min_seconds, torch_device=torch_device, gym_anytrading=gym_anytrading
        )
        if as_json:
            click.echo(to_json({k: round(v, 1) for k, v in res.items() if not k.startswith("ratio_")}))
            return
        click.echo(
            f"window={window} features={n_features}  (env-steps/s; ratio = simulator / plain NumPy loop)\n"
            f"observation per env-step: {observation_bytes(window, n_features, 1):,} bytes single, "
            f"{observation_bytes(window, n_features, 3):,} bytes 3-asset"
        )
        for key in res:
            if key.startswith(("numpy_", "ratio_", "torch_")) or key == "gym_anytrading":
                continue
            line = f"{key:>14}: {res[key]:>14,.0f}   numpy loop: {res['numpy_' + key]:>14,.0f}"
            line += f"   ratio {res['ratio_' + key]:.2f}"
            if "torch_" + key in res:
                line += f"   torch ({torch_device}): {res['torch_' + key]:>14,.0f}"
            click.echo(line)
        if "gym_anytrading" in res:
            g = res["gym_anytrading"]
            best = max(v for k, v in res.items() if k.startswith(("single_", "multi_")))
            click.echo(
                f"gym-anytrading stocks-v0 (window={window}, 2 features, 1 env): {g:,.0f} steps/s; "
                f"best simulator figure above = {best / g:.1f}x"
            )
