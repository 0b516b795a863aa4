"""``himari risk calibrate`` end to end on a slice of bundled BTC; Kupiec test; no validation data in the fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.bars import Bars
from himari.risk import RiskConfig
from himari.risk.calibrate import calibrate, christoffersen_independence, kupiec_pof


def test_kupiec_hand_computation() -> None:
    # N = 1000, x = 20, p = 1 %: LR = -2[980 ln .99 + 20 ln .01] + 2[980 ln .98 + 20 ln .02] = 7.8272391529
    lr, p = kupiec_pof(1000, 20, 0.99)
    assert lr == pytest.approx(7.8272391529, abs=1e-8)
    assert p == pytest.approx(0.0051464650, abs=1e-8)
    assert kupiec_pof(1000, 0, 0.99)[0] == pytest.approx(-2 * 1000 * math.log(0.99))
    assert kupiec_pof(1000, 10, 0.99)[1] == pytest.approx(1.0)


def test_christoffersen_hand_computation() -> None:
    # hits 0 1 1 0 0 0 0 0 0 1 1 0: n00=5, n01=2, n10=2, n11=2; π0=2/7, π1=1/2, π=4/11
    # LR = -2[7 ln(7/11) + 4 ln(4/11)] + 2[5 ln(5/7) + 2 ln(2/7) + 4 ln(1/2)] = 0.4996473412
    lr, p = christoffersen_independence(np.array([0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool))
    assert lr == pytest.approx(0.4996473412, abs=1e-9)
    assert p == pytest.approx(0.4796551184, abs=1e-9)
    # π0 = π1: no evidence of clustering
    assert christoffersen_independence(np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool))[
        0
    ] == pytest.approx(0.0, abs=1e-12)
    clustered = np.array([0] * 50 + [1] * 5 + [0] * 50 + [1] * 5, dtype=bool)
    assert christoffersen_independence(clustered)[1] < 0.001


@pytest.fixture(scope="module")
def btc_2021(btc_bars: Bars) -> Bars:
    return btc_bars.between("2020-10-01", "2021-06-01")


def test_calibrate_cli_end_to_end(tmp_path: Path, btc_2021: Bars) -> None:
    data = tmp_path / "btc.csv"
    btc_2021.frame.reset_index().to_csv(data, index=False)
    out, report = tmp_path / "risk.json", tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        [
            "risk",
            "calibrate",
            "--data",
            str(data),
            "--train-end",
            "2021-04-01",
            "--validation-end",
            "2021-05-01",
            "--out",
            str(out),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Kupiec" in result.output and "evt_long" in result.output
    config = RiskConfig.parse(json.loads(out.read_text()))
    assert config.evt_threshold_quantile in (0.90, 0.925, 0.95, 0.975)
    rep = json.loads(report.read_text())
    assert rep["validation"]["start"].startswith("2021-04-01")
    assert rep["train"]["end_exclusive"].startswith("2021-04-01")
    for key in ("evt_long", "evt_short", "normal_long", "historical_short"):
        row = rep["validation"][key]
        assert row["n_forecasts"] == pytest.approx(720, abs=30)
        assert 0.0 <= row["exceedance_rate"] <= 1.0 and 0.0 <= row["kupiec_pvalue"] <= 1.0
    managed = rep["validation"]["managed_long"]
    assert managed["decisions"] == rep["validation"]["bars"]
    assert sum(managed["binding_fraction"].values()) == pytest.approx(1.0)
    assert managed["managed_max_drawdown"] <= managed["buy_and_hold_max_drawdown"] + 1e-9
    chosen = rep["train"]["evt_threshold"]["chosen"]
    assert 0.0 < chosen["xi"] < 1.0 and chosen["n_exceed"] >= config.evt_min_exceedances


def test_fit_ignores_validation_and_later_data(btc_2021: Bars) -> None:
    config, _ = calibrate(btc_2021, "2021-04-01", "2021-05-01")
    frame = btc_2021.frame.copy()
    later = frame.index >= "2021-04-01"
    wild = np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.05, later.sum())))
    for col in ("open", "high", "low", "close"):
        frame.loc[later, col] = frame.loc[later, col] * wild
    corrupted, _ = calibrate(btc_2021.with_frame(frame), "2021-04-01", "2021-05-01")
    assert corrupted == config


def test_calibrate_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "risk",
            "calibrate",
            "--data",
            "BTCUSDT",
            "--train-end",
            "2017-09-01",
            "--out",
            str(tmp_path / "x.json"),
        ],
    )
    assert result.exit_code == 2
    assert "finite returns" in result.output and "Traceback" not in result.output


def test_risk_bench_cli_tiny() -> None:
    result = CliRunner().invoke(cli, ["risk", "bench", "--bars", "20", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["decisions"] == 20.0
    assert payload["us_per_decision"] > 0 and payload["us_per_decision_excluding_evt_refit"] > 0
