"""K3 causal data augmentation and K8 rare-event injection: augmented copies of the training bars, seen through
the run's fitted tactical pipelines, mixed into training by a :class:`MixtureVecEnv`.

Both rewrite a bar series through its *relative moves* ``m_t(x) = log(x_t / c_{t-1})`` for x in (open, high, low,
close) and rebuild prices with :func:`rebuild_prices` (``c'_t = c'_{t-1} e^{m_t(c)}``, ``x'_t = c'_{t-1} e^{m_t(x)}``),
so each new bar depends on its own move and the previous new close only (no future information), and OHLC order
holds whenever it holds for the moves (scaling by k > 0 keeps it). Features and regimes are then *recomputed* from
the new bars by the fitted pipelines (causal transforms), not perturbed on their own. Only bars before the end of
the training range are used: the validation period is neither read nor rewritten.

* :func:`augment_bars` (K3): moves scaled by one factor per block of bars (volatility regime change), volume scaled.
* :func:`splice_segments` (K8): the moves of synthetic stress segments (:mod:`himari.data.synth`) replace the real
  moves at chosen bars; the real moves continue after each segment from the new price level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from himari.agents.ppo.methods.config import AugmentConfig, RareEventConfig
from himari.agents.ppo.methods.curriculum import PooledSimVecEnv
from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.env.protocol import Observation, StepResult
from himari.env.sim import SimConfig, SimVecEnv, start_range
from himari.errors import ConfigError


@dataclass(frozen=True)
class AugmentSource:
    """The bars a run's market was built from and the fitted tactical pipelines (one per asset, same order)."""

    bars: Sequence[Bars]
    pipelines: Sequence[Any]


def relative_moves(bars: Bars) -> np.ndarray:
    """(T, 4) log moves of open, high, low, close relative to the previous close (bar 0: relative to its open)."""
    prev = np.concatenate([[bars.open[0]], bars.close[:-1]])
    return np.log(np.stack([bars.open, bars.high, bars.low, bars.close], axis=1) / prev[:, None])


def rebuild_prices(first_prev_close: float, moves: np.ndarray) -> np.ndarray:
    """(T, 4) open, high, low, close from relative moves (see the module docstring)."""
    log_close = np.log(first_prev_close) + np.cumsum(moves[:, 3])
    prev = np.concatenate([[np.log(first_prev_close)], log_close[:-1]])
    return np.exp(prev[:, None] + moves)


def _with_prices(bars: Bars, ohlc: np.ndarray, volume: np.ndarray, source: str) -> Bars:
    ohlc = ohlc.copy()
    ohlc[:, 1] = np.maximum(ohlc[:, 1], ohlc[:, [0, 3]].max(axis=1))  # float rounding only
    ohlc[:, 2] = np.minimum(ohlc[:, 2], ohlc[:, [0, 3]].min(axis=1))
    return Bars.from_arrays(bars.timestamps_ns.astype("datetime64[ns]"), ohlc[:, 0], ohlc[:, 1], ohlc[:, 2],
                            ohlc[:, 3], volume, symbol=bars.symbol, timeframe=bars.timeframe, source=source)


def block_factors(n_bars: int, block: int, lows: Sequence[float], highs: Sequence[float],
                  rng: np.random.Generator) -> np.ndarray:
    """(n_bars, K) factors ~ U[lows[k], highs[k]], one row per block of ``block`` bars. Drawn block by block (a row
    of K per block), so the factors of the first bars do not depend on how many bars follow (truncation
    invariance)."""
    lo, hi = np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64)
    draws = lo + (hi - lo) * rng.random(size=(-(-n_bars // block), lo.size))
    return np.repeat(draws, block, axis=0)[:n_bars]


def augment_bars(bars: Sequence[Bars], config: AugmentConfig, rng: np.random.Generator) -> list[Bars]:
    """K3: the assets' bars with every relative move scaled by a per-block factor (the same for every asset, which
    keeps their co-movement) and volume scaled by another."""
    n = len(bars[0])
    factors = block_factors(n, config.block_bars, (config.vol_scale_low, config.volume_scale_low),
                            (config.vol_scale_high, config.volume_scale_high), rng)
    k, kv = factors[:, 0], factors[:, 1]
    out = []
    for b in bars:
        moves = relative_moves(b) * k[:, None]
        out.append(_with_prices(b, rebuild_prices(b.open[0], moves), b.volume * kv, f"augmented:{b.source}"))
    return out


def stress_segments(config: RareEventConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``segments`` synthetic stress segments: (S, L, 4) relative moves and (S, L) volume relative to the scenario's
    median, each the ``segment_bars`` window with the lowest return of one scenario of the configured families."""
    from himari.data.synth import SynthConfig, generate_batch

    length = config.segment_bars
    synth = SynthConfig(n_scenarios=config.segments, n_bars=max(4 * length, 500),
                        mix={f: 1.0 for f in config.families})
    batch = generate_batch(synth, seed)
    moves, volumes = [], []
    for i in range(batch.n_scenarios):
        log_close = np.log(batch.close[i])
        window_return = log_close[length:] - log_close[:-length]  # window (j, j+length] ending at j+length
        j = int(np.argmin(window_return)) + 1
        prev = batch.close[i, j - 1: j - 1 + length]
        ohlc = np.stack([batch.open[i], batch.high[i], batch.low[i], batch.close[i]], axis=1)[j: j + length]
        moves.append(np.log(ohlc / prev[:, None]))
        volumes.append(batch.volume[i, j: j + length] / np.median(batch.volume[i]))
    return np.stack(moves), np.stack(volumes)


def segment_positions(lo: int, hi: int, segments: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """One start per equal slot of [lo, hi), uniform inside the slot so the segment fits (segments never overlap)."""
    slot = (hi - lo) // segments
    if slot < length:
        raise ConfigError(f"rare_events: {segments} segments of {length} bars do not fit in {hi - lo} training bars")
    return np.array([lo + s * slot + int(rng.integers(0, slot - length + 1)) for s in range(segments)], np.int64)


def splice_segments(bars: Sequence[Bars], positions: np.ndarray, moves: np.ndarray, volumes: np.ndarray,
                    volume_reference: float | None = None) -> list[Bars]:
    """K8: the assets' bars with segment ``i``'s moves (and relative volume times the asset's median volume)
    replacing the real ones at bars ``[positions[i], positions[i] + L)`` (market-wide: every asset)."""
    out = []
    for b in bars:
        m = relative_moves(b)
        vol = b.volume.copy()
        ref = float(np.median(b.volume)) if volume_reference is None else volume_reference
        for p, seg, rel in zip(positions, moves, volumes, strict=True):
            m[p: p + seg.shape[0]] = seg
            vol[p: p + seg.shape[0]] = rel * ref
        out.append(_with_prices(b, rebuild_prices(b.open[0], m), vol, f"rare-events:{b.source}"))
    return out


def augmented_market(source: AugmentSource, market: MarketData, end_index: int, make_bars: Any) -> MarketData:
    """The market of ``make_bars(bars truncated before end_index)`` through the fitted pipelines; checks the
    source is the market's (same timestamps)."""
    if len(source.bars) != market.num_assets:
        raise ConfigError(f"augmentation source has {len(source.bars)} assets, the market {market.num_assets}")
    stamp = market.timestamps_ns[end_index - 1]
    cut = []
    for b in source.bars:
        n = int(np.searchsorted(b.timestamps_ns, stamp, side="right"))
        cut.append(b.head(n))
    new_bars = make_bars(cut)
    frames = [p.transform(b) for p, b in zip(source.pipelines, new_bars, strict=True)]
    out = MarketData.from_frames(new_bars, frames)
    if not np.array_equal(out.timestamps_ns, market.timestamps_ns[: out.num_bars]):
        raise ConfigError("augmentation source bars do not match the training market's bars")
    return out


class MixtureVecEnv:
    """Several vectorized envs stepped as one (rows concatenated in order): the trainer sees ``sum(num_envs)``
    episodes, a share of which runs on augmented markets."""

    def __init__(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)
        first = self.envs[0]
        for name in ("num_assets", "action_kind", "window", "n_features", "n_regimes", "n_account"):
            values = {getattr(e, name) for e in self.envs}
            if len(values) != 1:
                raise ConfigError(f"mixture env: sub-environments differ in {name}: {sorted(map(str, values))}")
            setattr(self, name, getattr(first, name))
        self.sizes = [e.num_envs for e in self.envs]
        self.num_envs = sum(self.sizes)
        self._edges = np.concatenate([[0], np.cumsum(self.sizes)])

    @staticmethod
    def _cat_obs(parts: Sequence[Observation]) -> Observation:
        return Observation(*(np.concatenate(x, axis=0) for x in zip(*parts, strict=True)))

    def reset(self, seed: int | None = None) -> Observation:
        if seed is None:
            return self._cat_obs([e.reset() for e in self.envs])
        seeds = np.random.SeedSequence(int(seed)).generate_state(len(self.envs), dtype=np.uint32)
        return self._cat_obs([e.reset(seed=int(s) & 0x7FFFFFFF) for e, s in zip(self.envs, seeds, strict=True)])

    def step(self, action: np.ndarray) -> StepResult:
        results = [e.step(action[a:b]) for e, a, b in zip(self.envs, self._edges[:-1], self._edges[1:], strict=True)]
        info = {}
        for key in results[0].info:
            values = [r.info.get(key) for r in results]
            if all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in values):
                info[key] = np.concatenate(values, axis=0)
        return StepResult(
            obs=self._cat_obs([r.obs for r in results]),
            reward=np.concatenate([r.reward for r in results]),
            terminated=np.concatenate([r.terminated for r in results]),
            truncated=np.concatenate([r.truncated for r in results]),
            final_obs=self._cat_obs([r.final_obs for r in results]),
            info=info,
        )


def split_envs(num_envs: int, rate: float) -> tuple[int, int]:
    """(real, augmented) environment counts: ``round(rate · N)`` augmented, at least one of each."""
    if num_envs < 2:
        raise ConfigError("augmentation / rare events need num_envs >= 2 (a share of the episodes runs on them)")
    n_aug = min(num_envs - 1, max(1, round(rate * num_envs)))
    return num_envs - n_aug, n_aug


def segment_start_pool(market: MarketData, sim: SimConfig, lo: int, hi: int, positions: np.ndarray,
                       length: int) -> np.ndarray:
    """Episode starts in the valid range whose episode covers one injected segment entirely (or starts in it)."""
    first, last = start_range(market, sim, lo, hi, sim.episode_length)
    span = min(length, sim.episode_length)
    pool = [np.arange(max(first, p + span - sim.episode_length), min(last, p + 1)) for p in positions]
    out = np.unique(np.concatenate(pool)).astype(np.int64)
    if out.size == 0:
        raise ConfigError("rare_events: no episode start covers an injected segment")
    return out


def mixture_env(market: MarketData, sim: SimConfig, train_range: tuple[int, int], num_envs: int, seed: int,
                make_real: Any, augment: AugmentConfig | None, rare: RareEventConfig | None,
                source: AugmentSource | None) -> tuple[MixtureVecEnv, SimVecEnv]:
    """The training env of a run with augmentation and/or rare events (see the module docstring), and its env on
    the real bars (``make_real(n)`` builds it with n episodes)."""
    from himari.utils.seeding import make_rng

    if source is None:
        raise ConfigError("ppo.augment / ppo.rare_events need the run's bars and fitted tactical pipelines: "
                          "pass augment_source to fit_ppo (himari train does; the walk-forward does not yet)")
    lo, hi = train_range
    envs: list[Any] = []
    n_real = num_envs
    seeds = np.random.SeedSequence([int(seed), 0xA06]).generate_state(4, dtype=np.uint32)
    if augment is not None:
        _, n_aug = split_envs(num_envs, augment.rate)
        rng = make_rng(int(seeds[0]))
        aug_market = augmented_market(source, market, hi, lambda b: augment_bars(b, augment, rng))
        envs.append(SimVecEnv(aug_market, sim, n_aug, seed=int(seeds[1]) & 0x7FFFFFFF, start_index=lo, end_index=hi))
        n_real -= n_aug
    if rare is not None:
        _, n_rare = split_envs(num_envs, rare.rate)
        rng = make_rng(int(seeds[2]))
        moves, volumes = stress_segments(rare, int(seeds[3]) & 0x7FFFFFFF)
        first, last = start_range(market, sim, lo, hi, sim.episode_length)
        positions = segment_positions(first, last + sim.episode_length, rare.segments, rare.segment_bars, rng)
        rare_market = augmented_market(source, market, hi,
                                       lambda b: splice_segments(b, positions, moves, volumes))
        env = PooledSimVecEnv(rare_market, sim, n_rare, seed=int(seeds[2]) & 0x7FFFFFFF, start_index=lo,
                              end_index=hi)
        env.set_pool(segment_start_pool(rare_market, sim, lo, hi, positions, rare.segment_bars))
        envs.append(env)
        n_real -= n_rare
    if n_real < 1:
        raise ConfigError("augment.rate + rare_events.rate leave no environment on the real bars")
    real = make_real(n_real)
    return MixtureVecEnv([real, *envs]), real
