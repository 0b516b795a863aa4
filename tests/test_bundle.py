"""A malformed-bundle corpus: every hostile or broken bundle is refused with a one-line error naming the field or
file, nothing outside the bundle directory is read, and nothing is allocated before shapes are checked."""

from __future__ import annotations

import json
import resource
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from himari.agents.offline.classifier import ClassifierConfig, ClassifierPolicy
from himari.agents.offline.cql import CQLConfig, CQLPolicy
from himari.agents.offline.ensemble import EnsemblePolicy
from himari.agents.registry import load_policy
from himari.cli.main import cli
from himari.env.protocol import ACCOUNT_FIELDS
from himari.errors import ConfigError, RunDirError
from himari.trading.bundle import load_bundle
from tests.paper.conftest import mlp_run  # noqa: F401


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    payload = json.loads(path.read_text())
    change(payload)  # mutates payload
    path.write_text(json.dumps(payload))


def _nan_weight(path: Path) -> None:
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path))


def _huge_header(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [200000, 200000], "data_offsets": [0, 160_000_000_000]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 16)


def _symlink_out(path: Path, outside: Path) -> None:
    shutil.move(path, outside / path.name)  # a file or a directory
    path.symlink_to(outside / path.name)


def _nan_pipeline(path: Path) -> None:
    text = path.read_text()
    payload = json.loads(text)
    payload["hmm"]["means"][0][0] = float("nan")
    path.write_text(json.dumps(payload))


B, P, T = "bundle/bundle.json", "bundle/policy/policy.json", "bundle/tactical/BTCUSDT/tactical_pipeline.json"
W = "bundle/policy/weights.safetensors"

CORPUS: dict[str, tuple[str, Callable[[Path, Path], None], str]] = {
    "bundle.json not JSON": (B, lambda p, o: p.write_text("{\"format\": 1,"), "bundle.json is not valid JSON"),
    "bundle.json a list": (B, lambda p, o: p.write_text("[1, 2]"), "must hold a JSON object"),
    "bundle.json nested": (B, lambda p, o: p.write_text("[" * 100_000 + "]" * 100_000), "nests too deeply"),
    "no sim_config": (B, lambda p, o: _edit_json(p, lambda d: d.pop("sim_config")), "field 'sim_config': Field required"),
    "symbols a string": (B, lambda p, o: _edit_json(p, lambda d: d.update(symbols="BTCUSDT")), "field 'symbols'"),
    "format 99": (B, lambda p, o: _edit_json(p, lambda d: d.update(format=99)), "field 'format'"),
    "symbol with ..": (B, lambda p, o: _edit_json(p, lambda d: d.update(symbols=["../../../etc"])), "symbols[0]"),
    "symbol absolute": (B, lambda p, o: _edit_json(p, lambda d: d.update(symbols=[str(o)])), "symbols[0]"),
    "bad timeframe": (B, lambda p, o: _edit_json(p, lambda d: d.update(timeframe="banana")), "field 'timeframe'"),
    "kind mismatch": (B, lambda p, o: _edit_json(p, lambda d: d.update(policy_kind="lstm")), "field 'policy_kind'"),
    "unknown kind": (P, lambda p, o: _edit_json(p, lambda d: d.update(kind="pickle")), "unknown policy kind"),
    "policy.json not JSON": (P, lambda p, o: p.write_text("nope"), "policy.json is not valid JSON"),
    "huge hidden sizes": (P, lambda p, o: _edit_json(p, lambda d: d["config"].update(hidden_sizes=[200000, 200000])),
                          "weights do not match"),
    "obs_spec missing": (P, lambda p, o: _edit_json(p, lambda d: d.pop("obs_spec")), "policy.json is incomplete"),
    "truncated weights": (W, lambda p, o: p.write_bytes(p.read_bytes()[:100]), "exceeds the file"),
    "huge weights header": (W, lambda p, o: _huge_header(p), "needs 160000000000 bytes"),
    "NaN weights": (W, lambda p, o: _nan_weight(p), "NaN or infinite"),
    "NaN tactical": (T, lambda p, o: _nan_pipeline(p), "hmm.means[0][0]' is NaN"),
    "weights symlinked out": (W, _symlink_out, "symlink out of the bundle"),
    "tactical symlinked out": (T, lambda p, o: _symlink_out(p.parent, o), "symlink out of the bundle"),
    "no tactical": (T, lambda p, o: shutil.rmtree(p.parent), "no fitted tactical pipeline"),
}


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    return tmp_path / "outside"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_bundles_are_refused_in_one_line(name: str, tmp_path: Path, mlp_run: Path, outside: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(mlp_run, run)
    target, corrupt, expected = CORPUS[name]
    corrupt(run / target, outside)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises((RunDirError, ConfigError)) as info:
        load_bundle(run)
    message = str(info.value)
    assert expected in message and "\n" not in message and len(message) < 600, message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 1_000_000  # KiB: nothing big allocated


def test_the_cli_refuses_a_bundle_that_cannot_decide(tmp_path: Path, mlp_run: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(mlp_run, run)
    _nan_weight(run / W)
    result = CliRunner().invoke(cli, ["serve", "--run", str(run), "--allow-open-loopback", "--port", "1"])
    assert result.exit_code == 2 and "NaN or infinite" in result.output and "Traceback" not in result.output


def _ensemble(root: Path) -> Path:
    cql = CQLPolicy(CQLConfig(state_dim=5 + 4 + len(ACCOUNT_FIELDS), hidden=(8,)))
    mlp = ClassifierPolicy(ClassifierConfig(n_inputs=9, window=4, hidden=(8,)))
    EnsemblePolicy.from_preset("low-latency", {"cql": cql, "mlp-classifier": mlp}).save(root / "ens")
    return root / "ens"


@pytest.mark.parametrize("member", ["ABS", "../..", "..", ".", "a/b", "nested"])
def test_ensemble_members_stay_inside_the_ensemble(tmp_path: Path, member: str) -> None:
    ens = _ensemble(tmp_path)
    assert load_policy(ens).config.members == ("cql", "mlp-classifier")
    victim = tmp_path / "victim"
    shutil.copytree(ens / "members" / "cql", victim)  # a loadable policy outside the ensemble
    if member == "ABS":
        member = str(victim)
    if member == "nested":  # a member that is itself an ensemble (named '..' it would recurse forever)
        shutil.copytree(ens, tmp_path / "inner")
        shutil.move(tmp_path / "inner", ens / "members" / "nested")
    _edit_json(ens / "policy.json", lambda d: d["config"].update(members=[member, "mlp-classifier"]))
    with pytest.raises((RunDirError, ConfigError)) as info:
        load_policy(ens)
    assert "config.members[0]" in str(info.value) or "cannot be an ensemble" in str(info.value)


def test_a_member_symlinked_out_of_the_ensemble_is_refused(tmp_path: Path) -> None:
    ens = _ensemble(tmp_path)
    shutil.move(ens / "members" / "cql", tmp_path / "elsewhere")
    (ens / "members" / "cql").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="leads outside"):
        load_policy(ens)
    assert torch.get_default_device().type == "cpu"  # the meta-device dry run leaves no trace
