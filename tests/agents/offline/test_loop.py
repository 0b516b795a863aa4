"""The shared offline training loop (himari/agents/offline/loop.py): selection, early stopping, checkpoints, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from himari.agents.offline.classifier import ClassifierConfig, ClassifierPolicy
from himari.agents.offline.cql import CQLAlgorithm, CQLConfig, CQLPolicy
from himari.agents.offline.datasets import SupervisedData, TrajectoryData
from himari.agents.offline.decision_transformer import (
    CGDTConfig,
    CriticGuidedDTPolicy,
    train_decision_transformer,
)
from himari.agents.offline.loop import LoopConfig, fit, resolve_device
from himari.agents.offline.supervised import SupervisedAlgorithm
from himari.errors import ConfigError, RunDirError

from .conftest import requires_llm


class Interrupt(Exception):
    """Stands in for a kill: raised from the progress callback, after the last checkpoint was written."""


def interrupt_at(step: int):
    def on_step(s: int, loss: float) -> None:
        if s == step:
            raise Interrupt

    return on_step


def transitions(seed: int = 0, n: int = 200, state_dim: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"states": rng.normal(size=(n, state_dim)).astype(np.float32), "actions": rng.integers(0, 3, n),
            "rewards": rng.normal(0, 0.01, n).astype(np.float32),
            "next_states": rng.normal(size=(n, state_dim)).astype(np.float32), "terminated": rng.random(n) < 0.05}


def cql(scores: list[float] | None = None) -> tuple[CQLPolicy, CQLAlgorithm]:
    cfg = CQLConfig(state_dim=5, hidden=(16,), batch_size=32, seed=2)
    policy = CQLPolicy(cfg)
    score_iter = iter(scores) if scores is not None else None

    def validate() -> float:
        if score_iter is not None:
            return next(score_iter)
        return float(policy.q_values(transitions(9)["states"]).mean())  # any deterministic function of the weights

    return policy, CQLAlgorithm(policy.net, transitions(), cfg, validate)


def state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


LOOP = LoopConfig(steps=12, batch_size=32, lr=1e-3, eval_every=3, seed=5)


def test_resumed_cql_run_ends_with_the_same_weights(tmp_path) -> None:
    policy, algorithm = cql()
    full = fit(algorithm, LOOP)
    expected, expected_target = state(policy.net), state(algorithm.target)

    _, first = cql()
    with pytest.raises(Interrupt):  # checkpoints at 3 and 6; dies during step 7
        fit(first, LOOP, tmp_path / "ckpt", on_step=interrupt_at(7))
    assert (tmp_path / "ckpt" / "latest.json").exists()
    resumed_policy, second = cql()
    resumed = fit(second, LOOP, tmp_path / "ckpt", resume=True)
    assert_same(state(resumed_policy.net), expected)
    assert_same(state(second.target), expected_target)
    assert resumed["history"] == full["history"]
    assert (resumed["best_step"], resumed["best_val_score"]) == (full["best_step"], full["best_val_score"])
    # a finished run's checkpoint only restores its final (selected) state
    again_policy, third = cql()
    fit(third, LOOP, tmp_path / "ckpt", resume=True, on_step=interrupt_at(1))  # no step is run
    assert_same(state(again_policy.net), expected)


def test_checkpoints_are_not_mixed_between_runs(tmp_path) -> None:
    fit(cql()[1], LOOP, tmp_path / "ckpt")
    with pytest.raises(RunDirError, match="earlier run"):
        fit(cql()[1], LOOP, tmp_path / "ckpt")
    with pytest.raises(RunDirError, match="another configuration"):
        fit(cql()[1], LOOP.replace(lr=2e-3), tmp_path / "ckpt", resume=True)


def test_best_validation_weights_are_restored_and_early_stopping() -> None:
    snapshots: dict[int, dict[str, np.ndarray]] = {}
    policy, algorithm = cql(scores=[1.0, 5.0, 2.0, 3.0, 4.0, 0.0])

    def record(step: int, loss: float) -> None:  # called after the update of `step`, before its validation
        snapshots[step] = state(policy.net)

    out = fit(algorithm, LOOP.replace(eval_every=1, patience=3), on_step=record)
    assert out["stopped_early"] and out["steps_done"] == 5  # validations 3, 4, 5 did not beat step 2
    assert out["best_step"] == 2 and out["best_val_score"] == 5.0
    assert [r["val_score"] for r in out["history"]] == [1.0, 5.0, 2.0, 3.0, 4.0]
    assert_same(state(policy.net), snapshots[2])


def test_without_validation_the_final_weights_are_kept() -> None:
    cfg = CQLConfig(state_dim=5, hidden=(16,), batch_size=32, seed=2)
    policy = CQLPolicy(cfg)
    last: dict[str, np.ndarray] = {}
    out = fit(CQLAlgorithm(policy.net, transitions(), cfg), LOOP,
              on_step=lambda s, loss: last.update(state(policy.net)))
    assert out["best_val_score"] is None and out["best_step"] == LOOP.steps
    assert_same(state(policy.net), last)


def supervised_data(n: int = 300, window: int = 4, n_inputs: int = 6) -> SupervisedData:
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(n, n_inputs)).astype(np.float32)
    labels = (inputs[:, 0] > 0).astype(np.int64) * 2  # SELL/BUY from the first input: learnable
    idx = np.arange(window, n)
    return SupervisedData(inputs=inputs, labels=labels, forward_return=np.zeros(n), label_end=np.arange(n),
                          timestamps_ns=np.arange(n, dtype=np.int64), window=window, n_features=n_inputs - 4,
                          splits={"train": idx[:200], "validation": idx[220:]})


def classifier() -> tuple[ClassifierPolicy, SupervisedAlgorithm]:
    policy = ClassifierPolicy(ClassifierConfig(n_inputs=6, window=4, hidden=(16,), dropout=0.3, seed=4))
    return policy, SupervisedAlgorithm(policy, supervised_data())


def test_resumed_classifier_with_dropout_ends_with_the_same_weights(tmp_path) -> None:
    """Dropout draws from the torch generator, whose state the checkpoint carries."""
    loop = LoopConfig(steps=10, batch_size=16, lr=1e-2, eval_every=2, seed=3)
    policy, algorithm = classifier()
    full = fit(algorithm, loop)
    assert full["history"][0]["step"] == 0.0  # the untrained weights are a selection candidate
    assert full["best_val_score"] > full["history"][0]["val_score"]  # learnable labels: validation improves
    _, first = classifier()
    with pytest.raises(Interrupt):
        fit(first, loop, tmp_path / "c", on_step=interrupt_at(6))
    resumed_policy, second = classifier()
    resumed = fit(second, loop, tmp_path / "c", resume=True)
    assert_same(state(resumed_policy.net), state(policy.net))
    assert resumed["history"] == full["history"]


def trajectories(t: int = 40, n: int = 3, state_dim: int = 5) -> TrajectoryData:
    rng = np.random.default_rng(6)
    step = np.tile(np.arange(t)[:, None] % 20, (1, n))
    return TrajectoryData(
        states=rng.normal(size=(t, n, state_dim)).astype(np.float32), actions=rng.integers(0, 3, (t, n)),
        rewards=rng.normal(0, 0.01, (t, n)).astype(np.float32),
        next_states=rng.normal(size=(t, n, state_dim)).astype(np.float32), terminated=np.zeros((t, n), bool),
        truncated=step == 19, returns_to_go=rng.normal(0, 0.05, (t, n)).astype(np.float32), episode_step=step,
        behaviour=("a",) * n)


def cgdt() -> CriticGuidedDTPolicy:
    return CriticGuidedDTPolicy(CGDTConfig(state_dim=5, context=4, d_model=16, n_layers=1, n_heads=2,
                                           batch_size=4, critic_hidden=(16,), seed=1))


def head_bias(policy: CriticGuidedDTPolicy) -> float:
    """A deterministic stand-in for a validation score."""
    return float(policy.net.dt.action_head.bias.detach()[0])


def test_resumed_critic_guided_dt_ends_with_the_same_weights(tmp_path) -> None:
    """Two phases (critic, then DT), each with its checkpoints; the run dies in the DT phase."""
    loop = LoopConfig(steps=8, batch_size=4, lr=1e-3, eval_every=2, seed=7)
    data = trajectories()
    policy = cgdt()
    full = train_decision_transformer(policy, data, loop, validate=lambda: head_bias(policy))
    first = cgdt()
    with pytest.raises(Interrupt):
        train_decision_transformer(first, data, loop, lambda: head_bias(first), tmp_path,
                                   on_step=interrupt_at(5))
    assert (tmp_path / "critic" / "latest.json").exists() and (tmp_path / "dt" / "latest.json").exists()
    second = cgdt()
    resumed = train_decision_transformer(second, data, loop, lambda: head_bias(second), tmp_path,
                                         resume=True)
    assert_same(state(second.net), state(policy.net))
    assert resumed["history"] == full["history"] and resumed["critic"] == full["critic"]


def test_device_settings() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError):
        LoopConfig(steps=1).replace(device="tpu")
    with pytest.raises(ConfigError):
        LoopConfig.parse({"steps": 1, "grad_clip": 0.0})


@requires_llm
def test_resumed_flag_trader_checkpoints_only_what_training_changes(tmp_path) -> None:
    """The frozen GPT-2 backbone is rebuilt from the config, not checkpointed; the LoRA run still resumes exactly."""
    from safetensors.torch import load_file

    from himari.agents.offline.flag_trader import FlagTraderConfig, FlagTraderPolicy

    def flag() -> tuple[FlagTraderPolicy, SupervisedAlgorithm]:
        policy = FlagTraderPolicy(FlagTraderConfig(n_inputs=6, context=4, n_embd=16, n_layer=1, n_head=2,
                                                   n_positions=8, lora_rank=2, seed=3))
        return policy, SupervisedAlgorithm(policy, supervised_data())

    loop = LoopConfig(steps=6, batch_size=8, lr=1e-3, eval_every=2, seed=2)
    policy, algorithm = flag()
    fit(algorithm, loop)
    _, first = flag()
    with pytest.raises(Interrupt):
        fit(first, loop, tmp_path, on_step=interrupt_at(5))
    saved = load_file(tmp_path / "update-000004" / "weights.safetensors")
    frozen = [k for k, v in first.module.named_parameters() if not v.requires_grad]
    assert frozen and not any(f"model.{k}" in saved for k in frozen)
    assert any("lora_A" in k for k in saved)
    resumed_policy, second = flag()
    fit(second, loop, tmp_path, resume=True)
    assert_same(state(resumed_policy.net), state(policy.net))
