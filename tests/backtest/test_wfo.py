"""Walk-forward: test data never reaches fitting or selection; the pipeline CLI is reproducible end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import torch
from click.testing import CliRunner

from himari.backtest.backtester import run_backtest
from himari.backtest.wfo import WFOConfig, run_window
from himari.cli.main import cli
from himari.data.bars import Bars

TINY = {
    "test_start": "2023-01-01",
    "test_end": "2023-02-01",
    "train_months": 3,
    "validation_months": 1,
    "test_months": 1,
    "seeds": 2,
    "steps_first_window": 1024,
    "steps_per_window": 512,
    "num_envs": 8,
    "n_steps": 32,
    "episode_length": 64,
    "warmup_bars": 1500,
}


def _corrupt_test_month(bars: Bars, start: str, end: str) -> Bars:
    """Replace every bar of [start, end) with a wild but valid random walk."""
    frame = bars.frame.copy()
    mask = (frame.index >= pd.Timestamp(start, tz="UTC")) & (frame.index < pd.Timestamp(end, tz="UTC"))
    rng = np.random.default_rng(123)
    n = int(mask.sum())
    close = frame["close"][mask].iloc[0] * np.exp(np.cumsum(rng.normal(0, 0.05, n)))
    frame.loc[mask, "open"] = close * 1.01
    frame.loc[mask, "close"] = close
    frame.loc[mask, "high"] = close * 1.03
    frame.loc[mask, "low"] = close * 0.97
    frame.loc[mask, "volume"] = rng.uniform(1, 1e6, n)
    return bars.with_frame(frame)


def test_corrupting_test_month_does_not_change_fitting_or_selection(btc_bars):
    bars = btc_bars.between("2022-06-01", "2023-02-01")
    cfg = WFOConfig.parse(TINY)
    window = cfg.windows()[0]
    clean, _ = run_window(cfg, window, {"BTCUSDT": bars})
    dirty, _ = run_window(cfg, window, {"BTCUSDT": _corrupt_test_month(bars, "2023-01-01", "2023-02-01")})
    from himari.agents.registry import policy_tensors

    assert clean.selected == dirty.selected
    assert [c.validation_sharpe for c in clean.configurations.values()] == [
        c.validation_sharpe for c in dirty.configurations.values()]
    clean_w, dirty_w = policy_tensors(clean.bundle.policy), policy_tensors(dirty.bundle.policy)
    assert len(clean_w) > 0 and clean_w.keys() == dirty_w.keys()
    for key, value in clean_w.items():
        assert torch.equal(value, dirty_w[key]), key
    # ...while the test month itself is traded on the (different) test data
    assert not np.allclose(clean.test.strategy.net_returns, dirty.test.strategy.net_returns)
    assert not np.allclose(clean.test.baselines["buy_and_hold"].net_returns, dirty.test.baselines["buy_and_hold"].net_returns)


def test_pipeline_cli_is_reproducible_and_writes_a_run_directory(tmp_path):
    import subprocess
    import sys

    runner = CliRunner()
    args = ["pipeline", "--preset", "quick", "--max-windows", "1", "--steps-scale", "0.01"]
    a, b = tmp_path / "a", tmp_path / "b"
    res = runner.invoke(cli, [*args, "--out", str(a)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    # the same command in a separate process gives byte-identical numbers
    done = subprocess.run([sys.executable, "-m", "himari", *args, "--out", str(b)], capture_output=True, text=True,
                          env={**os.environ, "HIMARI_NO_PROGRESS": "1"}, timeout=900)
    assert done.returncode == 0, done.stderr
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    metrics = json.loads((a / "metrics.json").read_text())
    for key in ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
                "win_rate", "profit_factor", "turnover", "exposure", "n_trades", "fees_paid", "per_regime",
                "action_distribution", "baselines", "statistics", "verdict"):
        assert key in metrics, key
    assert set(metrics["baselines"]) == {"buy_and_hold", "vol_target_buy_and_hold", "ma_crossover", "random"}
    for key in ("sharpe_ci_low", "sharpe_ci_high", "psr", "dsr", "n_trials", "pbo"):
        assert key in metrics["statistics"], key
    # the DSR counts the trials ledger of the preset and this run's configurations; RUN/trials.json adds them
    from himari.backtest.pipeline import ledger_path
    from himari.evaluation.trials import load_ledger

    prior = load_ledger(ledger_path("quick"))
    n_configurations = len(metrics["trials"]["configurations"])
    assert metrics["statistics"]["n_trials"] == len(prior) + n_configurations == metrics["trials"]["n_trials"]
    ledger = load_ledger(a / "trials.json")
    assert ledger[: len(prior)] == prior and ledger[-1].kept and len(ledger) == len(prior) + n_configurations
    assert len(ledger) == metrics["statistics"]["n_trials"]
    # the layer ablation: base, + regimes, + risk, then the strategy itself (same numbers as the top level)
    layers = metrics["ablation"]
    assert [r["layer"] for r in layers[:3]] == ["vol-targeted base", "+ regime multipliers", "+ risk gates"]
    assert layers[-1]["sharpe"] == metrics["sharpe"] and layers[-1]["total_return"] == metrics["total_return"]
    assert layers[0]["exposure"] > 0.5  # always long at the vol-targeted base
    html = (a / "report.html").read_text()
    assert "<html" in html.lower() and "walk-forward" in html.lower()
    run = json.loads((a / "run.json").read_text())
    assert run["seed"] == 0 and run["data"]["BTCUSDT"]["sha256"]
    run_info = html.split('<section id="run-info">')[1]  # same names as run.json: hash, data sha256, versions
    for value in (run["config_hash"], run["data"]["BTCUSDT"]["sha256"], run["versions"]["numpy"]):
        assert f"<code>{value}</code>" in run_info
    assert (a / "bundle" / "bundle.json").exists()

    # the pipeline's run directory is accepted by `himari backtest --run`
    res = runner.invoke(cli, ["backtest", "--run", str(a), "--start", "2024-06-01", "--end", "2024-06-08",
                              "--out", str(tmp_path / "bt")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    bt = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert bt["period"]["start"].startswith("2024-06-01")
    assert bt["in_sample"] is False
    assert (tmp_path / "bt" / "report.html").exists() and (tmp_path / "bt" / "fills.csv").exists()
    # a backtest over the model's own validation month is flagged as in-sample
    res = runner.invoke(cli, ["backtest", "--run", str(a), "--start", "2022-12-10", "--end", "2022-12-14",
                              "--out", str(tmp_path / "bt_in")], catch_exceptions=False)
    assert res.exit_code == 0 and "in-sample" in res.output
    assert '<div class="warning" role="alert">WARNING' in (tmp_path / "bt_in" / "report.html").read_text()
    assert json.loads((tmp_path / "bt_in" / "metrics.json").read_text())["in_sample"] is True


def test_backtest_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["backtest", "--run", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "no model bundle" in res.output and "Traceback" not in res.output


def test_ray_backend_matches_local_backend(btc_bars):
    """Windows as Ray tasks on a local Ray instance give exactly the local backend's results (no transfer)."""
    import pytest

    pytest.importorskip("ray")
    from himari.backtest.wfo import run_wfo

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-03-01")}
    cfg = WFOConfig.parse({**TINY, "test_end": "2023-03-01", "seeds": 1, "transfer": False})
    local = run_wfo(cfg, bars, backend="local", progress=False)
    remote = run_wfo(cfg, bars, backend="ray", progress=False)
    assert len(remote.windows) == len(local.windows) == 2
    np.testing.assert_array_equal(remote.stitched.strategy.net_returns, local.stitched.strategy.net_returns)


def test_wfo_runs_offline_models_through_the_same_backtester(tmp_path):
    """Offline kinds (here the supervised classifier) appear in walk-forward reports beside the baselines."""
    res = CliRunner().invoke(
        cli,
        ["wfo", "--policy", "mlp-classifier", "--test-start", "2023-01-01", "--test-end", "2023-02-01",
         "--train-months", "3", "--seeds", "1", "--steps-first", "2000", "--out", str(tmp_path / "w")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert metrics["walk_forward"]["n_windows"] == 1
    assert "buy_and_hold" in metrics["baselines"] and metrics["verdict"]
    bundle = json.loads((tmp_path / "w" / "bundle" / "bundle.json").read_text())
    assert bundle["policy_kind"] == "mlp-classifier"


def test_full_preset_runs_every_stage_end_to_end_and_resumes(tmp_path):
    """`--preset full` at a tiny budget: MLP with stress pre-training, LSTM, multi-asset and the main job (headline)
    in one process, with a per-stage timing table; the same command again resumes every stage from its
    checkpoints (nothing fitted again) and writes the same results."""
    out = tmp_path / "full"
    args = ["pipeline", "--preset", "full", "--max-windows", "1", "--steps-scale", "0.005", "--out", str(out)]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "stages" / "summary.json").read_text())
    assert set(summary) == {"mlp_ppo", "lstm_ppo", "multiasset_ppo", "stack"}
    pre = summary["mlp_ppo"]["pretraining"]["configurations"]["base"]
    assert pre["kept"] in ("pretrained", "scratch") and np.isfinite(pre["validation_sharpe_scratch"])
    multi = json.loads((out / "stages" / "multiasset_ppo" / "metrics.json").read_text())
    assert multi["period"]["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    mlp = json.loads((out / "stages" / "mlp_ppo" / "metrics.json").read_text())
    assert mlp["period"]["start"].startswith("2021-01-01")
    headline = json.loads((out / "metrics.json").read_text())
    assert headline["trials"]["ledger"] == "quick" and json.loads((out / "bundle" / "bundle.json").read_text())[
        "policy_kind"] == "stack"
    assert "stage" in (out / "report.html").read_text().lower()
    timing = json.loads((out / "timing.json").read_text())["full"]
    assert [s["stage"] for s in timing["stages"]] == ["mlp_ppo", "lstm_ppo", "multiasset_ppo", "stack"]
    assert timing["stages"][0]["pretraining_s"] > 0 and all(s["resumed_windows"] == 0 for s in timing["stages"])
    assert "| **total**" in res.output and "| mlp_ppo | mlp | BTCUSDT | 1 |" in res.output

    first = {p: p.read_bytes() for p in [out / "metrics.json", *(out / "stages").glob("*/metrics.json")]}
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    timing = json.loads((out / "timing.json").read_text())["full"]
    assert all(s["resumed_windows"] == s["windows"] == 1 for s in timing["stages"])
    assert timing["stages"][0]["pretraining_s"] is None  # the pre-trained weights were loaded too
    assert {p: p.read_bytes() for p in first} == first
    tables = CliRunner().invoke(cli, ["results", str(out), "--stages"])
    assert tables.exit_code == 0, tables.output
    row = next(line for line in tables.output.splitlines() if line.startswith("| stack (headline"))
    assert f"{headline['total_return']:+.1%}" in row and f"| {headline['sharpe']:.2f} |" in row
    assert "| mlp_ppo | 2021-01 .. 2021-01 |" in tables.output and "| 1 |" in tables.output


def test_wfo_reruns_from_its_run_directory(tmp_path):
    """RUN/wfo_config.json reproduces the run: same metrics.json byte for byte; config values beat option defaults."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "seeds": 1, "steps_first_window": 600}))
    runner = CliRunner()
    first = runner.invoke(cli, ["wfo", "--config", str(cfg), "--out", str(tmp_path / "a")], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    saved = json.loads((tmp_path / "a" / "wfo_config.json").read_text())
    assert saved["seeds"] == 1 and saved["train_months"] == 3  # not the CLI defaults (2, 6)
    again = runner.invoke(cli, ["wfo", "--config", str(tmp_path / "a" / "wfo_config.json"), "--out", str(tmp_path / "b")],
                          catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_walk_forward_honours_ppo_policy_and_stack_settings(btc_bars):
    """Walk-forward windows build their PPO runs with the one assembly (himari.training.ppo.fit_ppo): the PPO
    observation settings, the policy config and the sizing/risk of the trading stack all reach the trained bundle."""
    from himari.backtest.wfo import fit_window

    cfg = WFOConfig.parse({
        **TINY, "seeds": 1, "steps_first_window": 256,
        "ppo": {"normalize_observations": False, "obs_clip": 3.0},
        "policy_config": {"hidden_sizes": [16]},
        "sizing": {"target_vol_annual": 0.3, "rebalance_band": 0.1},
        "risk": {"vol_cap_annual": 0.5},
    })
    window = cfg.windows()[0]
    bundle = fit_window(cfg, window, {"BTCUSDT": btc_bars.between("2022-06-01", "2023-02-01")}).bundle
    policy = bundle.policy
    assert policy.obs_norm.enabled is False and policy.obs_norm.clip == 3.0
    assert tuple(policy.config.hidden_sizes) == (16,)
    sim = bundle.sim_config
    assert sim["sizing"]["target_vol_annual"] == 0.3 and sim["sizing"]["rebalance_band"] == 0.1
    assert sim["risk"]["vol_cap_annual"] == 0.5


def test_stack_walks_forward_saves_and_trades(btc_bars, tmp_path):
    """--policy stack: L2 direction then L3 sizer (L2 frozen) per window; the bundle reloads and decides the same."""
    from himari.agents.stack import StackPolicy
    from himari.backtest.wfo import run_wfo, write_final_bundle
    from himari.trading.bundle import load_bundle

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-03-01")}
    cfg = WFOConfig.parse({**TINY, "policy": "stack", "seeds": 1, "steps_first_window": 256,
                           "steps_per_window": 128, "test_end": "2023-03-01"})
    result = run_wfo(cfg, bars, progress=False)
    assert len(result.windows) == 2
    policy = result.final_bundle.policy
    assert isinstance(policy, StackPolicy) and policy.direction.kind == "mlp" and policy.sizer.kind == "sizer"
    moved = np.abs(np.diff(result.windows[-1].test.strategy.positions[:, 0])) > 0
    assert moved.any()  # the stack traded
    # the second window fine-tuned from the first: both windows' data reached the final weights
    from himari.trading.bundle import fit_periods

    periods = fit_periods(result.final_bundle.meta)
    assert len(periods) == 2 and periods[0][1] < periods[1][1]
    assert periods[0][0] <= pd.Timestamp(cfg.windows()[0].train.start)
    assert list(result.ablation_paths()) == ["vol-targeted base", "+ regime multipliers", "+ risk gates", "+ L3 delta"]
    write_final_bundle(result, tmp_path)
    loaded = load_bundle(tmp_path)
    assert isinstance(loaded.policy, StackPolicy)
    again = run_backtest(loaded, bars, cfg.windows()[-1].test.start, cfg.windows()[-1].test.end, show_progress=False,
                         with_baselines=False)
    first = run_backtest(result.final_bundle, bars, cfg.windows()[-1].test.start, cfg.windows()[-1].test.end,
                         show_progress=False, with_baselines=False)
    np.testing.assert_array_equal(again.strategy.net_returns, first.strategy.net_returns)
