"""``himari run``: one experiment file, its commented template, key-path errors, and repeating a run from
``RUN/experiment.yaml``."""

from __future__ import annotations

import importlib.util
import json
import re
import typing

import pytest
import yaml
from click.testing import CliRunner

from himari.agents.ppo.config import PPOConfig
from himari.agents.registry import WALK_FORWARD_KINDS, policy_class
from himari.backtest.experiment import ExperimentConfig, load_experiment, parse_experiment, template
from himari.backtest.pipeline import PRESETS
from himari.backtest.wfo import WFOConfig
from himari.cli.main import cli
from himari.cli.run import QUICK_TITLE
from himari.config import FrozenConfig
from himari.env.sim import SimConfig
from himari.errors import ConfigError
from himari.risk.config import RiskConfig
from himari.sizing.sizer import SizingConfig
from himari.tactical.pipeline import TacticalConfig
from himari.utils.tracking import TrackingConfig

# a commented key line of the template: "    # key: value  # doc" -> "    key: value  # doc"
UNCOMMENT = re.compile(r"^(\s*)# (\s*[A-Za-z_][A-Za-z0-9_]*:(?:\s|$))", re.MULTILINE)


def _field_names(config_class: type[FrozenConfig]) -> set[str]:
    names = set()
    for name, info in config_class.model_fields.items():
        if info.exclude:
            continue
        names.add(name)
        nested = [a for a in (info.annotation, *typing.get_args(info.annotation))
                  if isinstance(a, type) and issubclass(a, FrozenConfig)]
        if nested and name not in ("sizing", "risk", "tracking", "walk_forward"):
            names |= _field_names(nested[0])
    return names


def _keys(text: str) -> set[str]:
    """Keys written in the template: active, commented out, or named in a '(key: set from ...)' note."""
    return set(re.findall(r"^\s*(?:#\s*\(?)?\s*([A-Za-z_][A-Za-z0-9_]*):", text, re.MULTILINE))


@pytest.mark.parametrize("preset", ["default", "quick"])
def test_template_parses_to_its_experiment_and_covers_every_key(preset: str) -> None:
    base = dict(PRESETS["quick"]) if preset == "quick" else {}
    text = template(base)
    exp = parse_experiment(yaml.safe_load(text), "template")
    assert exp.walk_forward == WFOConfig.parse(base)
    assert exp.data == ("BTCUSDT",) and exp.tracking == TrackingConfig()
    keys = _keys(text)
    layers = [policy_class("mlp").config_class] + ([policy_class("sizer").config_class] if preset == "quick" else [])
    classes = [ExperimentConfig, TrackingConfig, WFOConfig, SimConfig, PPOConfig, TacticalConfig, SizingConfig,
               RiskConfig, *layers]
    missing = {c.__name__: sorted(_field_names(c) - keys) for c in classes}
    assert not any(missing.values()), missing
    # every commented key shows its effective default: uncommenting them all changes nothing
    full = parse_experiment(yaml.safe_load(UNCOMMENT.sub(r"\1\2", text)), "uncommented")
    wf, wf_full = exp.walk_forward, full.walk_forward
    assert wf_full.sim_config() == wf.sim_config()
    checks = [("tactical", TacticalConfig), ("sizing", SizingConfig), ("risk", RiskConfig)]
    for name, config_class in checks if wf.policy == "stack" else [*checks, ("policy_config", layers[0])]:
        assert config_class.parse(getattr(wf_full, name)) == config_class.parse(getattr(wf, name)), name
    if wf.policy == "stack":  # the stack's layers: kinds and each layer's config at their defaults
        full_pc, pc = wf_full.policy_config, wf.policy_config
        assert (full_pc["direction_kind"], full_pc["sizer_kind"]) == ("mlp", "sizer") and "direction_kind" not in pc
        for key, config_class in (("direction", layers[0]), ("sizer", layers[1])):
            assert config_class.parse(full_pc[key]) == config_class.parse(pc.get(key) or {}), key
    assert wf_full.ppo == {k: v for k, v in PPOConfig().to_dict().items()
                           if k not in ("total_steps", "n_steps")} | {"eval_every_updates": 5}
    if preset == "quick":
        assert "  sizing:  # SizingConfig\n" in text and "\n    decision_every_bars: 24  #" in text


@pytest.mark.parametrize("policy", [k for k in WALK_FORWARD_KINDS if k in ("lstm", "stack", "cql", "multiasset")])
def test_template_of_other_policy_kinds_parses(policy: str) -> None:
    text = template({"policy": policy}, data=("BTCUSDT", "ETHUSDT") if policy == "multiasset" else None)
    assert parse_experiment(yaml.safe_load(text), "t").walk_forward == WFOConfig.parse({"policy": policy})
    assert parse_experiment(yaml.safe_load(UNCOMMENT.sub(r"\1\2", text)), "t").walk_forward.policy == policy


@pytest.mark.parametrize(("text", "message"), [
    ("walk_forward:\n  sizing:\n    target_vol: 0.3\n", "exp.yaml: walk_forward.sizing.target_vol: unknown key"),
    ("walk_forward: {seeds: two}\n", "exp.yaml: walk_forward.seeds: Input should be a valid integer"),
    ("walk_forward: {ppo: {gamma: 2}}\n", "exp.yaml: walk_forward.ppo.gamma: Input should be less than or equal to 1"),
    ("walk_forward: {sim: {costs: {fee: 1}}}\n", "exp.yaml: walk_forward.sim.costs.fee: unknown key"),
    ("walk_forward: {tactical: {labeller: {vol_window: x}}}\n", "exp.yaml: walk_forward.tactical.labeller.vol_window"),
    ("walkforward: {}\n", "exp.yaml: walkforward: unknown key"),
    ("tracking: {mlflow: maybe}\n", "exp.yaml: tracking.mlflow: Input should be a valid boolean"),
    ("walk_forward: {tracking: {tensorboard: true}}\n", "exp.yaml: walk_forward.tracking: unknown key"),
    ("walk_forward: {policy: nope}\n", "exp.yaml: walk_forward: policy 'nope' is not a walk-forward kind"),
    ("walk_forward: {policy: mlp, offline: {model: {}}}\n", "exp.yaml: walk_forward: walk-forward config: section 'offline'"),
    ("data: []\n", "exp.yaml: data: Tuple should have at least 1 item"),
    ("- a list\n", "exp.yaml: an experiment is a mapping"),
    ("walk_forward: {sizing: [1, 2]}\n", "exp.yaml: walk_forward.sizing: must be a mapping"),
    ("walk_forward:\n  test_start: '2023-01-01\n", "exp.yaml: not valid YAML"),
])
def test_bad_experiments_are_one_line_errors_naming_file_and_key(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: ") and message.removeprefix("exp.yaml: ") in str(info.value)
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and result.output.startswith("error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_toml_and_yaml_give_the_same_experiment(tmp_path) -> None:
    (tmp_path / "e.yaml").write_text("data: [BTCUSDT]\nwalk_forward:\n  test_start: 2023-01-01\n  seeds: 1\n"
                                     "  sizing: {decision_every_bars: 24}\ntracking: {tensorboard: true}\n")
    (tmp_path / "e.toml").write_text('data = ["BTCUSDT"]\n[walk_forward]\ntest_start = 2023-01-01\nseeds = 1\n'
                                     "[walk_forward.sizing]\ndecision_every_bars = 24\n[tracking]\ntensorboard = true\n")
    a, b = load_experiment(tmp_path / "e.yaml"), load_experiment(tmp_path / "e.toml")
    assert a == b and a.walk_forward.test_start == "2023-01-01" and a.wfo_config().tracking.tensorboard
    (tmp_path / "e.ini").write_text("")
    with pytest.raises(ConfigError, match=r"e\.ini: an experiment file ends in"):
        load_experiment(tmp_path / "e.ini")


def test_cli_print_defaults_writes_the_main_job(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["run", "--print-defaults", "--preset", "quick"])
    assert result.exit_code == 0, result.output
    (tmp_path / "quick.yaml").write_text(result.output)
    quick = load_experiment(tmp_path / "quick.yaml")
    assert quick.walk_forward == WFOConfig.parse(PRESETS["quick"]) and quick.title == QUICK_TITLE
    usage = CliRunner().invoke(cli, ["run", str(tmp_path / "quick.yaml")])
    assert usage.exit_code == 2 and "--out" in usage.output


@pytest.mark.slow
def test_run_repeats_the_main_job_from_its_experiment_yaml(tmp_path, monkeypatch) -> None:
    """The main job (pipeline --preset quick, one window, small budget) writes RUN/experiment.yaml; `himari run` of
    it gives the same metrics.json byte for byte; an existing run directory is not overwritten. The job is tracked
    to TensorBoard and to a local MLflow store (when mlflow is installed): each window candidate's training curves
    and the window's validation/test figures."""
    runner = CliRunner()
    store = tmp_path / "mlruns"
    with_mlflow = importlib.util.find_spec("mlflow") is not None
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    first = runner.invoke(cli, ["pipeline", "--preset", "quick", "--max-windows", "1", "--steps-scale", "0.005",
                                "--out", str(tmp_path / "a"), "--tensorboard",
                                *(["--mlflow", str(store)] if with_mlflow else [])])
    assert first.exit_code == 0, first.output
    written = load_experiment(tmp_path / "a" / "experiment.yaml")
    assert written.walk_forward == WFOConfig.parse(PRESETS["quick"], max_windows=1, steps_first_window=600,
                                                   steps_per_window=200)
    assert written.tracking.tensorboard and written.data == ("BTCUSDT",)
    again = runner.invoke(cli, ["run", str(tmp_path / "a" / "experiment.yaml"), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    taken = runner.invoke(cli, ["run", str(tmp_path / "a" / "experiment.yaml"), "--out", str(tmp_path / "a")])
    assert taken.exit_code != 0 and "already holds a run" in taken.output
    # the walk-forward run's run.json names the same configuration (himari wfo --config RUN/run.json)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["config"]["wfo"] == written.walk_forward.to_dict()
    # TensorBoard: the candidates' training curves and the window's validation/test figures
    events = {p.parent.name for p in (tmp_path / "a" / "tensorboard").rglob("events.out.tfevents.*")}
    # one training per layer and seed of the stack's configuration
    runs = [f"window 0 {c}: {layer} s{k}" for c in written.walk_forward.configuration_names
            for layer in ("L2 direction", "L3 sizer") for k in range(written.walk_forward.seeds)]
    trainings = sorted(re.sub(r"[^A-Za-z0-9_.-]+", "_", r) for r in runs)
    assert events == {*trainings, "walk_forward"}
    if not with_mlflow:
        _check_resume(runner, tmp_path)
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    every = client.search_runs([client.get_experiment_by_name("himari").experiment_id])
    # both runs track (the second because its experiment.yaml says so): a parent and two children each
    names = [r.info.run_name for r in every]
    parents = ["pipeline --preset quick: a", f"run {tmp_path / 'a' / 'experiment.yaml'}: b"]
    assert sorted(n for n in names if n in parents) == sorted(parents)
    children = [n for n in names if n not in parents]
    assert sorted(children) == sorted(runs * 2)
    parent = next(r for r in every if r.info.run_name == "pipeline --preset quick: a")
    assert parent.data.params["sizing.decision_every_bars"] == "24" and parent.info.status == "FINISHED"
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert parent.data.metrics["sharpe"] == pytest.approx(metrics["sharpe"])
    window = json.loads((tmp_path / "a" / "windows.json").read_text())[0]
    history = client.get_metric_history(parent.info.run_id, "window/test_return")
    assert [(m.step, m.value) for m in history] == [(0, pytest.approx(window["test_return"]))]
    mine = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.info.run_name for c in mine) == sorted(runs)
    curve = client.get_metric_history(mine[0].info.run_id, "rollout_mean_reward")
    assert [m.step for m in curve] == [4096]  # one update of 64 envs x 64 steps
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "metrics.json", "report.html", "experiment.yaml", "windows.json"}
    _check_resume(runner, tmp_path)


def _check_resume(runner: CliRunner, tmp_path) -> None:
    """--resume continues a run in its directory: its finished window is loaded, not fitted again."""
    resumed = runner.invoke(cli, ["run", str(tmp_path / "b" / "experiment.yaml"), "--out", str(tmp_path / "b"),
                                  "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((tmp_path / "b" / "timing.json").read_text())["resumed_windows"] == 1
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_readme_experiment_example_and_errors_are_real(tmp_path, monkeypatch) -> None:
    """The README's example experiment parses, and its error lines are what the CLI prints."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## One experiment file"):]
    section = section[:section.index("\n## ")]
    example = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    Path("experiment.yaml").write_text(example)
    exp = load_experiment("experiment.yaml")
    assert exp.walk_forward.sizing == {"decision_every_bars": 24} and len(exp.wfo_config().windows()) == 2
    lines = re.findall(r"`(error: experiment\.yaml: [^`]+)`", section)
    assert len(lines) == 2
    for line in lines:
        _, section_name, field = line.split(": ")[2].split(".")
        value = re.search(r"\(got (.+)\)", line)
        bad = {field: yaml.safe_load(value.group(1)) if value else 0.3}
        Path("experiment.yaml").write_text(yaml.safe_dump({"walk_forward": {section_name: bad}}))
        result = CliRunner().invoke(cli, ["run", "experiment.yaml", "--out", "r"])
        assert result.exit_code == 2 and result.output.strip() == line, result.output


def test_run_json_of_a_walk_forward_run_is_an_experiment(tmp_path) -> None:
    wfo = WFOConfig.parse(PRESETS["quick"]).to_dict()
    run = {"command": "pipeline --preset quick", "config": {"wfo": wfo, "backend": "local"}, "seed": 0,
           "data": {"BTCUSDT": {"path": "/data/btc.csv", "sha256": "0" * 64}}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    exp = load_experiment(tmp_path / "run.json")
    assert exp.walk_forward.to_dict() == wfo and exp.data == ("/data/btc.csv",)
    (tmp_path / "train.json").write_text(json.dumps({"command": "train", "config": {"policy": "mlp"}}))
    with pytest.raises(ConfigError, match=r"train\.json: not the run\.json of a walk-forward run"):
        load_experiment(tmp_path / "train.json")
    result = CliRunner().invoke(cli, ["wfo", "--config", str(tmp_path / "train.json"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "holds no walk-forward config" in result.output


def test_tracking_is_not_part_of_the_method() -> None:
    """Tracking settings stay out of to_dict() (run.json, the config hash, the trials ledger) but survive replace()
    (the full preset derives its stage configs with it)."""
    from himari.config import config_hash

    plain = WFOConfig.parse({"policy": "mlp"})
    tracked = WFOConfig.parse({"policy": "mlp"}, tracking={"tensorboard": True, "mlflow": True})
    assert "tracking" not in tracked.to_dict() and config_hash(tracked) == config_hash(plain)
    stage = tracked.replace(policy="lstm", window=None)
    assert stage.policy == "lstm" and stage.tracking == tracked.tracking
    assert tracked.replace(tracking={"tensorboard": False}).tracking == TrackingConfig()
