"""Shared data preparation for every trainer (PPO and the offline models).

``prepare_training_data`` loads the bars of each symbol, fits one :class:`~himari.tactical.pipeline.TacticalPipeline`
per symbol on ``[train_start, train_end)`` only, transforms the whole loaded span with it (causal: row t depends on
bars <= t) and aligns the symbols into one :class:`~himari.env.market.MarketData`. Episodes are then confined to bar
ranges of that market:

* training episodes pay only moves inside ``train_range`` = bars in ``[train_start, train_end)``;
* validation episodes pay only moves inside ``val_range`` = bars in ``[train_end, val_end)``; their observation
  windows may reach back before ``train_end`` (past data, warm-up only), never forward.

Nothing at or after ``val_end`` is loaded, so no test data can reach a fit or a model selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from himari.data.bars import Bars, to_utc_timestamp
from himari.data.bundled import resolve_data_path
from himari.data.loaders import load_bars
from himari.env.market import MarketData
from himari.errors import ConfigError, DataError
from himari.tactical.pipeline import TacticalConfig, TacticalFrame, TacticalPipeline
from himari.utils.io import sha256_array, sha256_file

DEFAULT_WARMUP_BARS = 2000  # history loaded before train_start for features, normalizers and the regime model


@dataclass
class TrainingData:
    """Everything a trainer needs for one (train, validation) split."""

    symbols: tuple[str, ...]
    bars: dict[str, Bars]  # loaded span per symbol: [train_start - warm-up, val_end)
    pipelines: dict[str, TacticalPipeline]  # fitted on [train_start, train_end) only
    frames: dict[str, TacticalFrame]
    market: MarketData  # all symbols aligned on one time axis over the loaded span
    train_range: tuple[int, int]  # bar index range [lo, hi) of the training window in ``market``
    val_range: tuple[int, int]  # bar index range [lo, hi) of the validation window (empty when val_end is None)
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    val_end: pd.Timestamp | None
    data_files: dict[str, Path]  # symbol -> file it was read from
    data_sha256: dict[str, str]  # symbol -> sha256 of that file
    market_sha256: str  # hash of the aligned prices, features and regimes actually used

    @property
    def timeframe(self) -> str:
        return str(self.market.timeframe)

    def describe(self) -> dict[str, Any]:
        return {
            "symbols": list(self.symbols),
            "train_start": str(self.train_start),
            "train_end": str(self.train_end),
            "val_end": None if self.val_end is None else str(self.val_end),
            "train_bars": self.train_range[1] - self.train_range[0],
            "val_bars": self.val_range[1] - self.val_range[0],
            "n_features": self.market.num_features,
            "timeframe": self.timeframe,
            "data_sha256": self.data_sha256,
            "market_sha256": self.market_sha256,
        }


def _timestamp(value: object, name: str) -> pd.Timestamp:
    ts = to_utc_timestamp(value)  # type: ignore[arg-type]
    if ts is None:
        raise ConfigError(f"{name} is required")
    return ts


def prepare_training_data(
    data_specs: Sequence[str | Path | Bars],
    train_start: object,
    train_end: object,
    val_end: object = None,
    tactical_config: TacticalConfig | dict[str, Any] | None = None,
    warmup_bars: int = DEFAULT_WARMUP_BARS,
    join: str = "union",
) -> TrainingData:
    """Load, fit on train only, transform, align. ``data_specs``: bundled names (``BTCUSDT``), paths, or Bars."""
    if not data_specs:
        raise ConfigError("at least one --data is required")
    t0, t1 = _timestamp(train_start, "train_start"), _timestamp(train_end, "train_end")
    t2 = None if val_end is None else _timestamp(val_end, "val_end")
    if t1 <= t0:
        raise ConfigError(f"train_end {t1} must be after train_start {t0}")
    if t2 is not None and t2 <= t1:
        raise ConfigError(f"val_end {t2} must be after train_end {t1}")
    cfg = tactical_config if isinstance(tactical_config, TacticalConfig) else TacticalConfig.parse(tactical_config or {})
    stop = t2 if t2 is not None else t1
    bars_by_symbol: dict[str, Bars] = {}
    files: dict[str, Path] = {}
    for spec in data_specs:
        if isinstance(spec, Bars):
            bars, path = spec, None
        else:
            path = resolve_data_path(spec)
            bars = load_bars(path)
        symbol = bars.symbol or (Path(str(spec)).stem if path is not None else f"asset{len(bars_by_symbol)}")
        if symbol in bars_by_symbol:
            raise ConfigError(f"symbol {symbol} given twice in --data")
        before = bars.between(None, t0)
        first = before.timestamps_ns[-warmup_bars] if len(before) >= warmup_bars else (
            before.timestamps_ns[0] if len(before) else None
        )
        span = bars.between(None if first is None else pd.Timestamp(first, tz="UTC"), stop)
        if len(span.between(t0, t1)) == 0:
            raise DataError(f"no bars of {symbol} in the training window [{t0}, {t1})", bars.source or None)
        if t2 is not None and len(span.between(t1, t2)) == 0:
            raise DataError(f"no bars of {symbol} in the validation window [{t1}, {t2})", bars.source or None)
        bars_by_symbol[symbol] = span
        if path is not None:
            files[symbol] = path
    pipelines: dict[str, TacticalPipeline] = {}
    frames: dict[str, TacticalFrame] = {}
    for symbol, bars in bars_by_symbol.items():
        pipelines[symbol] = TacticalPipeline(cfg).fit(bars, t0, t1)
        frames[symbol] = pipelines[symbol].transform(bars)
    symbols = tuple(bars_by_symbol)
    market = MarketData.from_frames(
        [bars_by_symbol[s] for s in symbols], [frames[s] for s in symbols], join=join  # type: ignore[arg-type]
    )
    train_range = (market.index_of(t0), market.index_of(t1))
    val_range = (train_range[1], market.num_bars if t2 is not None else train_range[1])
    return TrainingData(
        symbols=symbols,
        bars=bars_by_symbol,
        pipelines=pipelines,
        frames=frames,
        market=market,
        train_range=train_range,
        val_range=val_range,
        train_start=t0,
        train_end=t1,
        val_end=t2,
        data_files=files,
        data_sha256={s: sha256_file(p) for s, p in files.items()},
        market_sha256=sha256_array(market.timestamps_ns, market.close, market.features, market.regime_posterior),
    )


def synthetic_market(
    pipelines: Sequence[TacticalPipeline], n_bars: int, seed: int, scenario_offset: int = 0
) -> MarketData:
    """A synthetic market with one scenario per pipeline (``himari.data.synth``, the seeds' scenario mix), seen
    through the given *already fitted* tactical pipelines (so features and regimes mean what they mean on real data).
    Used for synthetic pre-training."""
    from himari.data.synth import SynthConfig, generate_batch

    n_assets = len(pipelines)
    batch = generate_batch(SynthConfig(n_scenarios=n_assets + scenario_offset, n_bars=int(n_bars)), seed=int(seed))
    bars = [batch.to_bars(scenario_offset + a) for a in range(n_assets)]
    frames = [p.transform(b) for p, b in zip(pipelines, bars, strict=True)]
    return MarketData.from_frames(bars, frames)  # type: ignore[arg-type]


