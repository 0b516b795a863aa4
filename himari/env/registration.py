"""Gymnasium ids for the trading environment: ``import himari.env.registration`` and then
``gymnasium.make("himari/Trading-v0")`` (or ``gymnasium.make_vec(..., num_envs=N)``), like gym-anytrading's
``stocks-v0``. Without the import, ``gymnasium.make("himari.env.registration:himari/Trading-v0")`` works too.

Ids: ``himari/Trading-v0`` (keyword ``data``, default the bundled BTCUSDT) and one per bundled dataset,
``himari/BTCUSDT-v0``, ``himari/ETHUSDT-v0``, ``himari/SOLUSDT-v0``. Keywords of :func:`make_env` pass through
``gymnasium.make(id, **kwargs)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

from himari.env.gym_env import HimariEnv, HimariVectorEnv
from himari.env.market import MarketData
from himari.env.sim import SimConfig

BUNDLED_IDS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def _market(data: Any, start: Any, end: Any, tactical: str | Path | None) -> MarketData:
    """MarketData for one symbol: basic causal features, or a fitted tactical pipeline's (``tactical`` = a
    ``himari regime fit`` directory or a run with a bundle) features and regime posterior."""
    from himari.data.loaders import as_bars
    from himari.tactical.locate import find_tactical_pipeline

    bars = as_bars(data)
    if start is not None or end is not None:
        bars = bars.between(start, end)
    if tactical is None:
        return MarketData.from_frames([bars])
    pipe = find_tactical_pipeline(tactical, bars.symbol)
    return MarketData.from_frames([bars], [pipe.transform(bars, eval_start=start)])


def _config(config: SimConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> SimConfig:
    if isinstance(config, SimConfig):
        return config.replace(**overrides) if overrides else config
    return SimConfig.parse(config or {}, **overrides)


def make_env(
    data: Any = "BTCUSDT",
    start: Any = None,
    end: Any = None,
    tactical: str | Path | None = None,
    config: SimConfig | dict[str, Any] | None = None,
    dict_obs: bool = False,
    **sim_overrides: Any,
) -> HimariEnv:
    """A :class:`HimariEnv` on ``data`` (bundled name, file path, :class:`Bars` or pandas OHLCV DataFrame)
    restricted to ``[start, end)``. ``config`` / keyword overrides are :class:`SimConfig` fields (``window``,
    ``episode_length``, ``action_kind``, ``reward``, ``costs``...); costs are on by default.

    With ``tactical`` the features are transformed by a pipeline fitted earlier, and ``start`` must not precede
    its fit end (``LeakageError`` otherwise)."""
    return HimariEnv(_market(data, start, end, tactical), _config(config, sim_overrides), dict_obs=dict_obs)


def make_vector_env(
    num_envs: int = 8,
    data: Any = "BTCUSDT",
    start: Any = None,
    end: Any = None,
    tactical: str | Path | None = None,
    config: SimConfig | dict[str, Any] | None = None,
    dict_obs: bool = False,
    seed: int = 0,
    **sim_overrides: Any,
) -> HimariVectorEnv:
    """``num_envs`` episodes stepped together by the vectorized kernel (see :func:`make_env` for the keywords)."""
    return HimariVectorEnv(_market(data, start, end, tactical), _config(config, sim_overrides), num_envs,
                           seed=seed, dict_obs=dict_obs)


def register_envs() -> None:
    """Register the ``himari/...`` ids (idempotent)."""
    ids = {"himari/Trading-v0": {}, **{f"himari/{name}-v0": {"data": name} for name in BUNDLED_IDS}}
    for env_id, kwargs in ids.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=f"{__name__}:make_env", vector_entry_point=f"{__name__}:make_vector_env",
                     kwargs=kwargs, disable_env_checker=False)


register_envs()
