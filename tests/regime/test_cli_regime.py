"""CLI end to end on a small real slice: regime fit -> regime label (table, plot, summary), leakage refusal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.bars import Bars
from himari.data.store import write_frame


@pytest.fixture(scope="module")
def slice_file(btc_bars: Bars, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("regime_cli") / "btc_slice.csv.gz"
    write_frame(btc_bars.between("2022-01-01", "2022-08-01").frame, path)
    return str(path)


def test_fit_then_label(slice_file: str, tmp_path) -> None:
    runner = CliRunner()
    model = tmp_path / "model"
    res = runner.invoke(cli, ["regime", "fit", "--data", slice_file, "--train-start", "2022-01-01", "--train-end",
                              "2022-06-01", "--out", str(model), "--em-iters", "2"])
    assert res.exit_code == 0, res.output
    assert "train agreement" in res.output
    assert "regime fit: fitting features, filters and the Student-t HMM" in res.stderr  # progress logged off a TTY
    for name in ("tactical_pipeline.json", "gaussian_supervised_hmm.json", "run.json", "fit_summary.json"):
        assert (model / name).exists()
    out = tmp_path / "labels.csv"
    res = runner.invoke(cli, ["regime", "label", "--model", str(model), "--data", slice_file, "--start", "2022-06-01",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "agreement with labeller" in res.output and "log-likelihood" in res.output
    frame = pd.read_csv(out, index_col=0)
    assert len(frame) == (30 + 31) * 24  # June + July 2022, no gap there
    probs = frame[["p_low_vol", "p_trending", "p_high_vol", "p_crisis"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "labels.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "labels.summary.json").read_text())
    assert 0.0 <= summary["agreement"]["overall"] <= 1.0
    # labelling inside the fit window would score the model on its own training data: refused
    res = runner.invoke(cli, ["regime", "label", "--model", str(model), "--data", slice_file, "--start", "2022-05-01",
                              "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "before the fit window ends" in res.output


def test_rules_command(slice_file: str, tmp_path) -> None:
    res = CliRunner().invoke(cli, ["regime", "rules", "--data", slice_file, "--out", str(tmp_path / "r.parquet")])
    assert res.exit_code == 0, res.output
    assert set(pd.read_parquet(tmp_path / "r.parquet")["label"].unique()) <= {-1, 0, 1, 2, 3}
