"""Multi-asset: a BTC+ETH bundle trained with `himari train --policy multiasset` backtests through the same path."""

from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from himari.cli.main import cli


def test_multiasset_train_then_backtest(tmp_path):
    runner = CliRunner()
    run = tmp_path / "multi"
    res = runner.invoke(cli, ["train", "--policy", "multiasset", "--data", "BTCUSDT", "--data", "ETHUSDT",
                              "--out", str(run), "--train-start", "2023-01-01", "--train-end", "2023-04-01",
                              "--val-end", "2023-05-01", "--steps", "1024", "--num-envs", "8", "--no-tensorboard"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = tmp_path / "bt"
    res = runner.invoke(cli, ["backtest", "--run", str(run), "--start", "2023-06-01", "--end", "2023-06-04",
                              "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["period"]["symbols"] == ["BTCUSDT", "ETHUSDT"]
    equity = pd.read_csv(out / "equity.csv")
    assert {"position_BTCUSDT", "position_ETHUSDT"} <= set(equity.columns)
    decisions = pd.read_csv(out / "decisions.csv")
    assert decisions["actions"].str.count(r"\|").eq(1).all()  # one action per asset
    assert decisions["reasons"].str.len().gt(0).all()  # every decision says why
