"""Walk-forward candidates are named configurations with seed ensembles: PBO and the DSR are computed over the
configurations, invariant to how they are listed; each configuration keeps its identity across windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from himari.backtest.wfo import WFOConfig, select_configuration
from himari.errors import ConfigError

BASE = {
    "test_start": "2023-01-01", "test_end": "2023-03-01", "train_months": 3, "seeds": 2,
    "steps_first_window": 512, "steps_per_window": 256, "num_envs": 8, "n_steps": 32, "episode_length": 64,
    "warmup_bars": 1500, "ablation": False, "sizing": {"decision_every_bars": 24},
}
CONFIGS = {"lr-low": {"ppo": {"learning_rate": 1e-4}}, "small-net": {"policy_config": {"hidden_sizes": [16]}},
           "hourly": {"sizing": {"decision_every_bars": 1}}}


def test_configurations_are_validated_with_a_clear_error():
    with pytest.raises(ConfigError, match="n_candidates was replaced"):
        WFOConfig.parse({**BASE, "n_candidates": 2})
    with pytest.raises(ConfigError, match=r"configurations\.bad: 'test_start' cannot differ"):
        WFOConfig.parse({**BASE, "configurations": {"bad": {"test_start": "2022-01-01"}}})
    with pytest.raises(ConfigError, match=r"configurations\.typo"):
        WFOConfig.parse({**BASE, "configurations": {"typo": {"ppo": {"learning_rat": 1e-3}}}})
    with pytest.raises(ConfigError, match=r"name '\.\./x'"):
        WFOConfig.parse({**BASE, "configurations": {"../x": {}}})
    cfg = WFOConfig.parse({**BASE, "configurations": CONFIGS})
    assert cfg.configuration_names == ("lr-low", "small-net", "hourly")
    assert cfg.for_configuration("hourly").sizing == {"decision_every_bars": 1}
    assert cfg.for_configuration("lr-low").ppo == {"learning_rate": 1e-4}
    assert cfg.for_configuration("lr-low").sizing == {"decision_every_bars": 24}  # merged, not replaced
    assert WFOConfig.parse(BASE).configuration_names == ("base",)
    # the seeds depend on the name and the window, not on the position in the list
    swapped = WFOConfig.parse({**BASE, "configurations": dict(reversed(CONFIGS.items()))})
    assert cfg.configuration_seeds("hourly", 3) == swapped.configuration_seeds("hourly", 3)
    assert cfg.configuration_seeds("hourly", 3) != cfg.configuration_seeds("lr-low", 3)
    assert cfg.configuration_seeds("hourly", 3) != cfg.configuration_seeds("hourly", 4)


def test_selection_ignores_the_listing_order_and_ties_go_to_the_first_name():
    from himari.backtest.wfo import ConfigurationResult

    def res(name, v):
        return ConfigurationResult(name, [0], v, 0.0, {})

    a = {"b": res("b", 1.0), "a": res("a", 1.0), "c": res("c", float("nan"))}
    assert select_configuration(a) == "a" == select_configuration(dict(reversed(a.items())))
    assert select_configuration({"x": res("x", float("nan")), "y": res("y", -5.0)}) == "y"


def test_relabelling_configurations_gives_the_same_pbo_dsr_and_strategy(btc_bars, tmp_path):
    """The same configurations listed in another order: identical per-configuration test returns, selection,
    stitched strategy, PBO and DSR; the DSR's N is the ledger plus the configurations (seeds are not trials)."""
    from himari.backtest.pipeline import run_wfo_to_dir

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-03-01")}
    two = dict(list(CONFIGS.items())[:2])
    runs = []
    for name, order in (("ab", two), ("ba", dict(reversed(two.items())))):
        metrics = run_wfo_to_dir(WFOConfig.parse({**BASE, "configurations": order}), bars, tmp_path / name,
                                 command="test", progress=False)
        runs.append(metrics)
    a, b = runs
    assert a["statistics"]["pbo"] == b["statistics"]["pbo"] and np.isfinite(a["statistics"]["pbo"])
    assert a["statistics"]["dsr"] == b["statistics"]["dsr"]
    assert a["statistics"]["n_trials"] == 2 == a["trials"]["n_trials"]
    assert a["total_return"] == b["total_return"] and a["sharpe"] == b["sharpe"]
    wa, wb = a["walk_forward"], b["walk_forward"]
    assert [w["selected"] for w in wa["windows"]] == [w["selected"] for w in wb["windows"]]
    assert wa["configuration_test_sharpes"] == wb["configuration_test_sharpes"]
    assert a["trials"]["seeds_per_configuration"] == 2
    ledger = json.loads((tmp_path / "ab" / "trials.json").read_text())
    assert sorted(t["name"] for t in ledger) == ["test [lr-low]", "test [small-net]"]
    bundle = json.loads((tmp_path / "ab" / "bundle" / "bundle.json").read_text())
    assert bundle["policy_kind"] == "ensemble"  # two seeds, averaged


def test_stack_configuration_trains_seed_ensembles_in_both_layers(btc_bars, tmp_path):
    """A stack with two seeds: two L2 policies averaged, two L3 sizers trained under that frozen L2 ensemble and
    averaged; the bundle saves, reloads and decides the same; the next window fine-tunes member by member."""
    from himari.agents.offline.ensemble import EnsemblePolicy
    from himari.agents.seed_ensemble import MeanActionEnsemble
    from himari.agents.stack import StackPolicy
    from himari.backtest.backtester import run_backtest
    from himari.backtest.wfo import run_wfo, write_final_bundle
    from himari.trading.bundle import load_bundle

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-03-01")}
    cfg = WFOConfig.parse({**BASE, "policy": "stack", "steps_first_window": 256, "steps_per_window": 128,
                           "policy_config": {"direction_kind": "mlp", "sizer": {"hidden_sizes": [16]}}})
    result = run_wfo(cfg, bars, progress=False)
    policy = result.final_bundle.policy
    assert isinstance(policy, StackPolicy)
    assert isinstance(policy.direction, EnsemblePolicy) and len(policy.direction.members) == 2
    assert isinstance(policy.sizer, MeanActionEnsemble) and len(policy.sizer.members) == 2
    assert policy.sizer.members[0].config.hidden_sizes == (16,)
    write_final_bundle(result, tmp_path)
    loaded = load_bundle(tmp_path / "bundle")
    start, end = cfg.windows()[-1].test.start, cfg.windows()[-1].test.end
    again = run_backtest(loaded, bars, start, end, show_progress=False, with_baselines=False)
    first = run_backtest(result.final_bundle, bars, start, end, show_progress=False, with_baselines=False)
    np.testing.assert_array_equal(again.strategy.net_returns, first.strategy.net_returns)
    with pytest.raises(ConfigError, match="direction_kind 'flag-trader'"):
        WFOConfig.parse({**BASE, "policy": "stack", "policy_config": {"direction_kind": "flag-trader"}})


def test_mean_ensemble_averages_member_actions():
    from himari.agents.base import PolicyOutput
    from himari.agents.seed_ensemble import MeanActionEnsemble, seed_ensemble
    from himari.env.protocol import Observation

    class Fixed:
        kind, action_kind, window, n_assets = "sizer", "delta", 4, 1

        def __init__(self, v):
            self.v = v

        def initial_state(self, n):
            return None

        def act(self, obs, state, deterministic=True):
            return PolicyOutput(np.full((obs.features.shape[0], 1), self.v, np.float32), None, None), state

    obs = Observation(np.zeros((3, 4, 2), np.float32), np.zeros((3, 4, 4), np.float32), np.zeros((3, 3), np.float32))
    ens = seed_ensemble([Fixed(1.0), Fixed(-0.5), Fixed(0.1)])
    assert isinstance(ens, MeanActionEnsemble)
    out, _ = ens.act(obs, None)
    np.testing.assert_allclose(out.action, np.full((3, 1), 0.2), rtol=1e-6)
    single = Fixed(2.0)
    assert seed_ensemble([single]) is single


def test_stress_series_chains_scenarios_continuously():
    from himari.training.pretrain import PretrainConfig, stress_series

    cfg = PretrainConfig(steps=1, n_scenarios=6, bars_per_scenario=60)
    a, b = stress_series(cfg, seed=3, n_assets=2)
    assert len(a) == 6 * 60 and a.symbol == "STRESS-0" and b.symbol == "STRESS-1"
    opens, closes = a.frame["open"].to_numpy(), a.frame["close"].to_numpy()
    # each scenario opens where the previous one closed (continuous chain), prices stay positive
    for k in range(1, 6):
        assert np.isclose(opens[k * 60], closes[k * 60 - 1], rtol=1e-12)
    assert (a.frame[["open", "high", "low", "close"]].to_numpy() > 0).all()
    assert not np.allclose(closes, b.frame["close"].to_numpy())  # different scenarios per asset
    again = stress_series(cfg, seed=3, n_assets=2)[0]
    np.testing.assert_array_equal(again.frame["close"].to_numpy(), closes)


def test_stress_pretraining_is_compared_with_scratch_and_recorded(btc_bars, tmp_path):
    from himari.backtest.pipeline import run_wfo_to_dir

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-02-01")}
    cfg = WFOConfig.parse({**BASE, "test_end": "2023-02-01", "seeds": 1,
                           "pretrain": {"steps": 256, "n_scenarios": 8, "bars_per_scenario": 200}})
    metrics = run_wfo_to_dir(cfg, bars, tmp_path / "p", command="test", progress=False)
    pre = metrics["pretraining"]["configurations"]["base"]
    assert pre["kept"] in ("pretrained", "scratch")
    better = max(pre["validation_sharpe_pretrained"], pre["validation_sharpe_scratch"])
    assert metrics["walk_forward"]["windows"][0]["validation_sharpe"] == round(better, 3)
    assert json.loads((tmp_path / "p" / "wfo_config.json").read_text())["pretrain"]["steps"] == 256
    with pytest.raises(ConfigError, match="pretrain"):
        WFOConfig.parse({**BASE, "pretrain": {"step": 5}})


def test_stack_with_lstm_sizer_walks_forward_on_a_20_bar_window(btc_bars):
    from himari.backtest.wfo import run_wfo

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-02-01")}
    cfg = WFOConfig.parse({**BASE, "policy": "stack", "test_end": "2023-02-01", "seeds": 1,
                           "steps_first_window": 256, "policy_config": {"sizer_kind": "sizer-lstm",
                                                                        "sizer": {"hidden_size": 8}}})
    assert cfg.sim_config().window == 20  # the seeds' L3 sequence length; the L2 sees the same bars
    result = run_wfo(cfg, bars, progress=False)
    policy = result.final_bundle.policy
    assert policy.sizer.kind == "sizer-lstm" and policy.sizer.window == 20 and policy.direction.window == 20
    assert np.isfinite(result.stitched.strategy.net_returns).all()


def test_configurations_fitted_in_processes_equal_the_sequential_fit(btc_bars):
    import torch

    from himari.agents.registry import policy_tensors
    from himari.backtest.wfo import fit_window

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-02-01")}
    base = {**BASE, "test_end": "2023-02-01", "seeds": 1, "steps_first_window": 256,
            "configurations": dict(list(CONFIGS.items())[:2])}
    window = WFOConfig.parse(base).windows()[0]
    one = fit_window(WFOConfig.parse(base), window, bars)
    two = fit_window(WFOConfig.parse({**base, "workers": 2}), window, bars)
    assert one.selected == two.selected
    for name in one.results:
        assert one.results[name].validation_sharpe == two.results[name].validation_sharpe
        a, b = policy_tensors(one.bundles[name].policy), policy_tensors(two.bundles[name].policy)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the tactical pipelines are shared again after the processes return the bundles
    assert two.bundles["lr-low"].tactical is two.bundles["small-net"].tactical

    # the window's backtests (strategy, each configuration's chain, the ablation rows) in two processes: the same
    # paths, decision log, fills and carried accounts as one after the other; the selected configuration's chain
    # starting from the strategy's account is the strategy's own path
    from himari.backtest.wfo import trade_window

    cfg = WFOConfig.parse({**base, "ablation": True})
    seq = trade_window(cfg, window, bars, one)
    seq_paths = {n: r.test_path for n, r in one.results.items()}
    par = trade_window(cfg.replace(workers=2), window, bars, one)
    assert seq[0].decisions == par[0].decisions and seq[0].fills == par[0].fills
    assert np.array_equal(seq[0].strategy.net_returns, par[0].strategy.net_returns)
    assert seq[1] == par[1] and list(seq[2]) == list(par[2]) and len(seq[2]) >= 3
    for name in seq[2]:
        assert np.array_equal(seq[2][name].net_returns, par[2][name].net_returns)
    for name, r in one.results.items():
        assert np.array_equal(seq_paths[name].net_returns, r.test_path.net_returns)
    assert one.results[one.selected].test_path is par[0].strategy


def test_pooled_training_chains_other_assets_into_the_training_market(btc_bars):
    """ETH's training-period bars, through ETH's own tactical pipeline, are chained after BTC's: a longer training
    market, continuous prices, nothing after the training end; validation and trading stay on BTC."""
    from himari.backtest.wfo import _pooled_training_market, run_wfo
    from himari.data.loaders import load_bars

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-02-01")}
    cfg = WFOConfig.parse({**BASE, "test_end": "2023-02-01", "seeds": 1, "steps_first_window": 256,
                           "pool": ["ETHUSDT"]})
    window = cfg.windows()[0]
    from himari.backtest.wfo import _history

    fit_bars = {"BTCUSDT": _history(bars["BTCUSDT"], window.train.start, window.validation.end, cfg.warmup_bars)}
    _, (lo, hi), lineage = _pooled_training_market(cfg, window, fit_bars, {}, 8)
    eth = load_bars("ETHUSDT").between(window.train.start, window.train.end)
    btc_train = fit_bars["BTCUSDT"].between(window.train.start, window.train.end)
    assert hi - lo == len(btc_train) + len(eth)  # both assets' training rows, nothing else
    assert "ETHUSDT" in lineage[0]["what"]
    result = run_wfo(cfg, bars, progress=False)
    assert result.final_bundle.symbols == ("BTCUSDT",)
    assert any("ETHUSDT" in p["what"] for p in result.final_bundle.meta["lineage"])
    with pytest.raises(ConfigError, match="pool"):
        WFOConfig.parse({**BASE, "policy": "mlp-classifier", "pool": ["ETHUSDT"]})


def test_walk_forward_passes_its_bars_to_causal_augmentation(btc_bars):
    from himari.backtest.wfo import run_wfo

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-02-01")}
    cfg = WFOConfig.parse({**BASE, "test_end": "2023-02-01", "seeds": 1, "steps_first_window": 256,
                           "ppo": {"augment": {"rate": 0.5}}})
    result = run_wfo(cfg, bars, progress=False)
    assert np.isfinite(result.stitched.strategy.net_returns).all()


def test_a_configurations_seeds_fitted_in_processes_equal_the_sequential_fit(btc_bars):
    """One configuration, a stack with two seeds per layer: ``workers=2`` trains the seeds of each layer in
    parallel processes and gives the same ensembles as the sequential fit."""
    import torch

    from himari.agents.registry import policy_tensors
    from himari.backtest.wfo import fit_window

    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-02-01")}
    base = {**BASE, "policy": "stack", "test_end": "2023-02-01", "steps_first_window": 256}
    window = WFOConfig.parse(base).windows()[0]
    one = fit_window(WFOConfig.parse(base), window, bars)
    two = fit_window(WFOConfig.parse({**base, "workers": 2}), window, bars)
    assert one.results["base"].validation_sharpe == two.results["base"].validation_sharpe
    for layer in ("direction", "sizer"):
        a = policy_tensors(getattr(one.bundle.policy, layer))
        b = policy_tensors(getattr(two.bundle.policy, layer))
        assert len(a) > 0 and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), layer
