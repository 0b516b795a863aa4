"""The short Python API: a trained run that decides on a DataFrame, and DataFrame-in / DataFrame-out features and
regimes. Thin wrappers over the layers the CLI uses (``himari.trading.bundle``, ``himari.trading.engine``,
``himari.features``, ``himari.regime``, ``himari.tactical``), so a notebook decides exactly as backtests, the API
server and paper trading do.

    import himari
    run = himari.load_run("runs/quick")           # a pipeline / wfo / train run directory (or its bundle/)
    decision = run.decide(frame)                  # pandas OHLCV, Bars, or {symbol: either}; the last bar decides
    decision.target_position, decision.reasons, decision.to_dict()
    himari.features_frame(frame)                  # the 44 causal technical features, one row per bar
    himari.regimes_frame(frame)                   # rule labels; regimes_frame(frame, model=RUN) adds the posterior
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from himari.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from himari.data.bars import Bars
    from himari.trading.bundle import Bundle
    from himari.trading.engine import AccountSnapshot, Decision, DecisionEngine

BarsLike = Any  # Bars | pandas.DataFrame | str (bundled dataset name or file path)


def as_bars(data: BarsLike, symbol: str | None = None, timeframe: str | None = None) -> Bars:
    """:class:`~himari.data.bars.Bars` from Bars, a pandas OHLCV DataFrame (validated like a file), or a bundled
    dataset name / file path."""
    from himari.data.loaders import as_bars as _as_bars

    return _as_bars(data, symbol, timeframe)


@dataclass
class Run:
    """A trained model loaded from a run directory; :meth:`decide` runs features -> regime -> policy -> sizing ->
    risk for the last bar of the history it is given."""

    path: Path
    bundle: Bundle
    engine: DecisionEngine

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.bundle.symbols

    @property
    def timeframe(self) -> str:
        return self.bundle.timeframe

    @property
    def model_id(self) -> str:
        return self.bundle.model_id

    @property
    def history_bars(self) -> int:
        """Trailing bars a decision uses. Give at least this many: the features' windows, percentile normalizers
        and the regime filter warm up on them, and rows still warming up are invalid (the position is flattened)."""
        return int(self.engine.history_bars)

    def _bars(self, data: BarsLike, symbol: str) -> Bars:
        import pandas as pd

        # The timeframe is inferred from the data (so 4h bars are not taken for gappy 1h bars); one bar is assumed
        # to be of the model's timeframe.
        short = isinstance(data, pd.DataFrame) and len(data) < 2
        return as_bars(data, symbol, self.timeframe if short else None)

    def decide(self, data: BarsLike | Mapping[str, BarsLike], account: AccountSnapshot | None = None) -> Decision:
        """The decision for the last bar of ``data`` (its close is known; the target fills at the next bar).

        ``data``: the traded symbol's history as a pandas OHLCV DataFrame, :class:`Bars` or dataset name; for a
        multi-asset model a mapping ``{symbol: history}``. Only the trailing :attr:`history_bars` are used.
        Sizing and risk state (drawdown brake, budgets) carry over between calls on the same :class:`Run`.
        """
        if isinstance(data, Mapping):
            bars = {symbol: self._bars(value, symbol) for symbol, value in data.items()}
            missing = [s for s in self.symbols if s not in bars]
            if missing:
                raise DataError(f"the model trades {', '.join(self.symbols)}; no bars for {', '.join(missing)}")
        else:
            if len(self.symbols) != 1:
                raise DataError(f"the model trades {len(self.symbols)} symbols ({', '.join(self.symbols)}): pass "
                                "a mapping {symbol: bars}")
            bars = {self.symbols[0]: self._bars(data, self.symbols[0])}
        for symbol, b in bars.items():
            if str(b.timeframe) != str(self.timeframe):
                raise DataError(f"bars of {symbol} are {b.timeframe}; the model was trained on {self.timeframe} bars")
        return self.engine.decide(bars, account)

    def decide_frame(self, data: BarsLike | Mapping[str, BarsLike]) -> pd.DataFrame:
        """:meth:`decide` as a one-row-per-symbol DataFrame (target position, action, regime, binding gate)."""
        import pandas as pd

        decision = self.decide(data)
        payload = decision.to_dict()
        return pd.DataFrame({
            "action": payload["actions"],
            "target_position": payload["target_position"],
            "regime": payload["regime"],
            "confidence": payload["confidence"],
            "binding_gate": payload["binding_gate"] or [None] * len(decision.symbols),
        }, index=pd.Index(list(decision.symbols), name="symbol")).assign(
            timestamp=pd.Timestamp(decision.timestamp_ns, tz="UTC"), model_id=decision.model_id)


def load_run(path: str | Path, history_bars: int = 3000) -> Run:
    """Load a run directory written by ``himari pipeline``, ``wfo``, ``train`` or ``offline train`` (the folder
    holding ``bundle/``, or the bundle folder itself). ``history_bars``: trailing bars used per decision."""
    from himari.trading.bundle import load_bundle
    from himari.trading.engine import DecisionEngine

    bundle = load_bundle(path)
    return Run(Path(path), bundle, DecisionEngine(bundle, history_bars=history_bars))


def features_frame(data: BarsLike) -> pd.DataFrame:
    """The causal technical features of every bar as a DataFrame (UTC index ``timestamp``, one column per feature,
    NaN in warm-up) plus ``valid`` (all windows complete within the bar's gap-free segment).

    Row t uses bars <= t only: computing on ``data[:t+1]`` gives the same row t.
    """
    import pandas as pd

    from himari.features.technical import compute_features

    bars = as_bars(data)
    table = compute_features(bars)
    frame = pd.DataFrame(table.values, index=bars.index, columns=list(table.names))
    frame["valid"] = table.valid
    return frame


def regimes_frame(data: BarsLike, model: str | Path | None = None, symbol: str | None = None) -> pd.DataFrame:
    """Regimes of every bar as a DataFrame with a UTC ``timestamp`` index.

    Always: ``label`` (rule labeller code, -1 in warm-up) and ``label_name``. With ``model`` (a ``himari regime
    fit`` directory or a run with a bundle): the fitted pipeline's filtered posterior P(regime_t | data <= t) as
    ``p_low_vol``, ``p_trending``, ``p_high_vol``, ``p_crisis``, its argmax ``regime``, ``confidence`` and
    ``valid``. Bars before the model's fit end are in-sample for it; judge it on later bars.
    """
    import numpy as np
    import pandas as pd

    from himari.regime.labeller import REGIME_NAMES, label_regimes

    bars = as_bars(data, symbol)
    labels = label_regimes(bars)
    frame = pd.DataFrame({"label": labels,
                          "label_name": [REGIME_NAMES[v] if v >= 0 else "UNKNOWN" for v in labels]}, index=bars.index)
    if model is not None:
        from himari.tactical.locate import find_tactical_pipeline

        pipe = find_tactical_pipeline(model, symbol or bars.symbol)
        tf = pipe.transform(bars)
        post = np.asarray(tf.regime_posterior, dtype=np.float64)
        for k, name in enumerate(REGIME_NAMES):
            frame[f"p_{name.lower()}"] = post[:, k]
        frame["regime"] = [REGIME_NAMES[int(i)] for i in post.argmax(axis=1)]
        frame["confidence"] = post.max(axis=1)
        frame["valid"] = tf.valid
    return frame
