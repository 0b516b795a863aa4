"""Learned and parametric market generators on real bars: fit (training bars only), generate bars, save/load, and
the synthetic market a PPO run pre-trains on (``PPOConfig.synthetic``).

* ``mjd``: the Merton jump-diffusion + GARCH(1,1) + regime-chain generator of :mod:`himari.data.synth` (one
  ``mixed`` scenario) with GARCH and jump parameters calibrated on the fit bars (:mod:`himari.data.calibrate`).
* ``timegan``: :class:`himari.data.timegan.TimeGAN` on the fit bars' rows (:mod:`himari.data.bar_rows`).
* ``tabddpm``: :class:`himari.data.tabddpm.TabDDPM` on the rows, conditioned on the bars' rule regime labels
  (:func:`himari.regime.labeller.label_regimes`: LOW_VOL, TRENDING, HIGH_VOL, CRISIS); ``crisis_boost`` enriches
  CRISIS spells in generated paths.

Everything a generator learns comes from the bars it is given; callers pass bars that end at their fit end.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from himari.data.bar_rows import rows_of_bars, rows_to_bars
from himari.data.bars import Bars
from himari.data.generators import METHODS, SyntheticSourceConfig, generator_config
from himari.env.market import MarketData
from himari.errors import ConfigError, DataError, RunDirError
from himari.utils.io import atomic_write_json, read_json, sha256_array

CRISIS = 3  # index of CRISIS in himari.regime.labeller's label order


@dataclass
class FittedGenerator:
    """A generator fitted on real bars, with the scale it generates at."""

    method: str
    model: Any  # TimeGAN | TabDDPM | SynthConfig (mjd, calibrated)
    timeframe: str
    start_price: float
    volume_scale: float
    fit_range: tuple[str, str]
    history: list[dict[str, float]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "timeframe": self.timeframe, "fit_range": list(self.fit_range),
                "start_price": self.start_price, "volume_scale": self.volume_scale}


def fit_generator(method: str, bars: Bars, seed: int = 0, size: str = "small", config: Any = None) -> FittedGenerator:
    """Fit ``method`` on ``bars`` (all of them: pass the fit window only)."""
    if method not in METHODS:
        raise ConfigError(f"unknown generator method {method!r}; known: {', '.join(METHODS)}")
    if len(bars) < 500:
        raise DataError(f"{method}: only {len(bars)} bars to fit on; need >= 500", bars.source or None)
    history: list[dict[str, float]] = []
    fit_range = (str(bars.start), str(bars.end))
    volume = bars.volume[bars.volume > 0]
    volume_scale = float(np.median(volume)) if len(volume) else 1.0
    start_price = float(bars.close[-1])
    if method == "mjd":
        from himari.data.calibrate import calibrate_from_bars
        from himari.data.synth import SynthConfig

        base = SynthConfig(n_scenarios=1, n_bars=2, mix={"mixed": 1.0}, timeframe=str(bars.timeframe))
        model: Any = calibrate_from_bars(bars).apply(base)
        return FittedGenerator(method, model, str(bars.timeframe), start_price, volume_scale, fit_range, history)
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    rows, ok = rows_of_bars(bars)
    cfg = config if config is not None else generator_config(method, size)  # type: ignore[arg-type]
    if method == "timegan":
        from himari.data.timegan import TimeGAN

        model = TimeGAN.fit(rows, ok, cfg, seed=seed, history=history)
    else:
        from himari.data.tabddpm import TabDDPM
        from himari.regime.labeller import label_regimes

        labels = np.where(ok, label_regimes(bars), -1)
        model = TabDDPM.fit(rows, labels, cfg, seed=seed, history=history)
    return FittedGenerator(method, model, str(bars.timeframe), start_price, volume_scale, fit_range, history)


def generate_bars(gen: FittedGenerator, n_bars: int, seed: int, symbol: str = "SYN", crisis_boost: float = 1.0,
                  start: str = "2021-01-01T00:00:00Z") -> Bars:
    """``n_bars`` synthetic bars from ``gen`` starting at its fit scale (last fit close, median volume)."""
    import pandas as pd

    if n_bars < 2:
        raise DataError(f"generate: n_bars must be >= 2, got {n_bars}")
    start_ns = int(pd.Timestamp(start).value)
    source = f"synthetic:{gen.method}:seed={seed}"
    if gen.method == "mjd":
        from himari.data.synth import generate_batch

        cfg = gen.model.replace(n_bars=n_bars, start=start, start_price=gen.start_price, symbol_prefix=symbol)
        bars = generate_batch(cfg, seed).to_bars(0)
        return Bars(frame=bars.frame, symbol=symbol, timeframe=bars.timeframe, source=source)
    if gen.method == "timegan":
        rows = gen.model.sample_rows(n_bars, seed)
    else:
        boost = None if crisis_boost == 1.0 else {CRISIS: float(crisis_boost)}
        rows, _ = gen.model.sample_path(n_bars, seed, boost=boost)
    return rows_to_bars(rows, gen.start_price, start_ns, gen.timeframe, symbol, seed, gen.volume_scale, source)


def save_generator(gen: FittedGenerator, directory: str | Path) -> Path:
    """``directory/generator.json`` (+ ``weights.safetensors`` for the learned methods), atomically."""
    root = Path(directory)
    scale = {"timeframe": gen.timeframe, "start_price": gen.start_price, "volume_scale": gen.volume_scale,
             "fit_range": list(gen.fit_range), "history": gen.history}
    if gen.method == "mjd":
        from himari.data.generator_io import FORMAT, MANIFEST

        return atomic_write_json(root / MANIFEST, {"format": FORMAT, "kind": "mjd", "config": gen.model.to_dict(),
                                                   "meta": scale})
    gen.model.meta.update(scale)
    return gen.model.save(root)


def load_generator(directory: str | Path) -> FittedGenerator:
    """A generator saved by :func:`save_generator` (kind read from ``generator.json``)."""
    from himari.data.generator_io import MANIFEST

    root = Path(directory)
    if not (root / MANIFEST).exists():
        raise RunDirError(f"{root}: no {MANIFEST} here (not a saved generator)")
    kind = read_json(root / MANIFEST).get("kind")
    if kind == "mjd":
        from himari.data.synth import SynthConfig

        payload = read_json(root / MANIFEST)
        model: Any = SynthConfig.parse(payload["config"])
        meta = payload.get("meta", {})
    elif kind == "timegan":
        from himari.data.timegan import TimeGAN

        model = TimeGAN.load(root)
        meta = model.meta
    elif kind == "tabddpm":
        from himari.data.tabddpm import TabDDPM

        model = TabDDPM.load(root)
        meta = model.meta
    else:
        raise RunDirError(f"{root / MANIFEST}: unknown generator kind {kind!r}; known: {', '.join(METHODS)}")
    try:
        return FittedGenerator(str(kind), model, str(meta["timeframe"]), float(meta["start_price"]),
                               float(meta["volume_scale"]), tuple(meta["fit_range"]), list(meta.get("history", [])))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{root / MANIFEST}: meta lacks the generation scale ({exc})") from None


# -------------------------------------------------------------------------------------------- PPO pre-training
def market_bars(market: MarketData, asset: int, lo: int, hi: int) -> Bars:
    """The bars of ``asset`` in the index range ``[lo, hi)`` of ``market`` (present bars; MarketData holds no
    volume: volume is set to 1)."""
    present = market.present[lo:hi, asset]
    idx = np.flatnonzero(present) + lo
    if len(idx) < 2:
        raise DataError(f"synthetic source: no bars of {market.symbols[asset]} in the training range")
    return Bars.from_arrays(
        market.timestamps_ns[idx].astype("datetime64[ns]"), market.open[idx, asset], market.high[idx, asset],
        market.low[idx, asset], market.close[idx, asset], np.ones(len(idx)), symbol=market.symbols[asset],
        timeframe=market.timeframe, source=f"market:{market.symbols[asset]}",
    )


class _GeneratorCache:
    """The last fitted generators by (method, size, seed, content of the fit bars): the candidates of one
    walk-forward window share one generator fit (bounded, content-keyed: a hit is exactly what a refit gives)."""

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, FittedGenerator] = OrderedDict()

    def get_or_fit(self, method: str, bars: Bars, seed: int, size: str) -> FittedGenerator:
        key = f"{method}:{size}:{seed}:" + sha256_array(bars.timestamps_ns, bars.frame.to_numpy(dtype=np.float64))
        hit = self.entries.get(key)
        if hit is None:
            hit = fit_generator(method, bars, seed=seed, size=size)
            self.entries[key] = hit
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return hit


_CACHE = _GeneratorCache()


def synthetic_source_market(source: SyntheticSourceConfig, market: MarketData, train_range: tuple[int, int],
                            seed: int) -> MarketData:
    """The synthetic market of ``PPOConfig.synthetic``: per asset, a generator fitted on the last
    ``max_fit_bars`` bars of ``train_range`` only, ``n_bars`` generated bars, and a tactical pipeline fitted on the
    synthetic bars (``source.tactical``) whose feature names must equal the run's."""
    import pandas as pd

    from himari.tactical.pipeline import TacticalConfig, TacticalPipeline
    from himari.utils.seeding import child_seeds

    lo, hi = train_range
    lo = max(lo, hi - source.max_fit_bars)
    tactical = TacticalConfig.parse(source.tactical)
    bars_list, frames = [], []
    sample_seeds = child_seeds(source.seed * 1_000_003 + int(seed), market.num_assets)
    for a in range(market.num_assets):
        real = market_bars(market, a, lo, hi)
        gen = _CACHE.get_or_fit(source.method, real, source.seed, source.size)
        syn = generate_bars(gen, source.n_bars, sample_seeds[a], symbol=market.symbols[a],
                            crisis_boost=source.crisis_boost)
        end = int(syn.timestamps_ns[-1]) + syn.timeframe.nanoseconds
        pipeline = TacticalPipeline(tactical).fit(syn, syn.index[0], pd.Timestamp(end, tz="UTC"))
        frame = pipeline.transform(syn)
        if frame.feature_names != market.feature_names:
            raise ConfigError(
                f"ppo.synthetic: the synthetic market's features ({len(frame.feature_names)}) differ from the run's "
                f"({len(market.feature_names)}); set ppo.synthetic.tactical to the run's tactical settings")
        bars_list.append(syn)
        frames.append(frame)
    return MarketData.from_frames(bars_list, frames)  # type: ignore[arg-type]


__all__ = ["FittedGenerator", "fit_generator", "generate_bars", "load_generator", "market_bars", "save_generator",
           "synthetic_source_market"]


# -------------------------------------------------------------------------------------------- quality report
REPORT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("discriminative", "disc. score", "{:.3f}"), ("predictive", "pred. MAE", "{:.3f}"),
    ("excess_kurtosis", "kurtosis", "{:.1f}"), ("acf_abs_1", "acf|r| 1", "{:.2f}"), ("acf_abs_24", "acf|r| 24", "{:.2f}"),
    ("leverage_1_24", "leverage", "{:+.3f}"), ("dd30_median", "30d DD med", "{:.1%}"), ("dd30_p90", "30d DD p90", "{:.1%}"),
    ("q001", "q0.1%", "{:+.2%}"), ("q999", "q99.9%", "{:+.2%}"),
    ("duration_HIGH_VOL", "HIGH_VOL run", "{:.0f}"), ("duration_CRISIS", "CRISIS run", "{:.0f}"),
    ("share_CRISIS", "CRISIS share", "{:.1%}"),
)


def quality_report(bars: Bars, fit_start: object, fit_end: object, holdout_end: object,
                   methods: tuple[str, ...] = METHODS, n_bars: int | None = None, seed: int = 0,
                   size: str = "small", crisis_boost: float = 1.0, seq_len: int = 24,
                   score_iters: int = 400) -> dict[str, Any]:
    """Fit each generator on ``[fit_start, fit_end)``, generate, and score against the real held-out bars
    ``[fit_end, holdout_end)`` (see :mod:`himari.data.synth_quality`). Rows: the held-out bars themselves, the fit
    bars (a real reference: how far another real period is), then one per method."""
    import time

    from himari.data.bar_rows import RowScaler, sequence_windows
    from himari.data.synth_quality import discriminative_score, predictive_score, stylized_facts
    from himari.regime.labeller import label_regimes

    fit = bars.between(fit_start, fit_end)
    hold = bars.between(fit_end, holdout_end)
    if len(fit) < 1000 or len(hold) < 1000:
        raise DataError(f"synth report: need >= 1000 fit and held-out bars, got {len(fit)} and {len(hold)}",
                        bars.source or None)
    n_gen = int(n_bars or len(hold))
    rows_fit, ok_fit = rows_of_bars(fit)
    scaler = RowScaler.fit(rows_fit[ok_fit])

    def windows(b: Bars) -> np.ndarray:
        rows, ok = rows_of_bars(b)
        z = np.where(ok[:, None], scaler.transform(np.where(ok[:, None], rows, 0.0)), 0.0)
        return sequence_windows(z, ok, seq_len, stride=max(1, seq_len // 4))

    def facts(b: Bars) -> dict[str, Any]:
        return stylized_facts(b.log_returns(), b.close, label_regimes(b))

    real_w, fit_w = windows(hold), windows(fit)
    out_rows: list[dict[str, Any]] = [
        {"source": "real held-out", **facts(hold)},
        {"source": "real fit window", "discriminative": discriminative_score(real_w, fit_w, seed, iters=score_iters),
         "predictive": predictive_score(fit_w, real_w, seed, iters=score_iters), **facts(fit)},
    ]
    for method in methods:
        started = time.perf_counter()
        gen = fit_generator(method, fit, seed=seed, size=size)
        fit_s = time.perf_counter() - started
        syn = generate_bars(gen, n_gen, seed + 1, symbol=f"SYN-{method.upper()}", crisis_boost=crisis_boost)
        syn_w = windows(syn)
        out_rows.append({"source": method, "fit_s": fit_s, "discriminative": discriminative_score(real_w, syn_w, seed, iters=score_iters),
                         "predictive": predictive_score(syn_w, real_w, seed, iters=score_iters), **facts(syn)})
    return {"symbol": bars.symbol, "fit": [str(fit.start), str(fit.end)], "held_out": [str(hold.start), str(hold.end)],
            "generated_bars": n_gen, "seed": seed, "score_iters": score_iters, "size": size, "crisis_boost": crisis_boost, "seq_len": seq_len,
            "rows": out_rows}


def render_quality_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table (what ``himari data synth-report`` prints and writes)."""
    head = "| source | " + " | ".join(label for _, label, _ in REPORT_COLUMNS) + " |"
    lines = [f"### Synthetic data quality: {report['symbol']}, fit {report['fit'][0][:10]}..{report['fit'][1][:10]}, "
             f"held out {report['held_out'][0][:10]}..{report['held_out'][1][:10]}", "", head,
             "|" + "---|" * (len(REPORT_COLUMNS) + 1)]
    for row in report["rows"]:
        cells = []
        for key, _, fmt in REPORT_COLUMNS:
            v = row.get(key)
            cells.append("" if v is None or not np.isfinite(v) else fmt.format(v))
        lines.append(f"| {row['source']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
