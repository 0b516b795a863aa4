"""The one training loop of the offline models; each algorithm supplies its data sampling, loss and selection score.

Shape of Stable-Baselines3 / d3rlpy: a shared loop and thin algorithms. For ``step = 1..steps``::

    batch = algorithm.sample(rng, batch_size)        # minibatch drawn with the loop's explicit generator
    loss  = algorithm.loss(batch)
    clip ‖∇‖₂ to grad_clip, AdamW step (lr, weight_decay)
    algorithm.after_update()                          # e.g. CQL's Polyak target update
    every eval_every steps and at the last step:
        score = algorithm.validate()                  # validation data only, higher is better
        keep the weights with the best score; write a checkpoint; stop early after `patience` evaluations
        without improvement

At the end the best-on-validation weights are restored (the final weights when the algorithm has no validation
score). The test period never reaches this module: ``validate`` is built by the caller from the validation window.

Checkpoints (``checkpoint_dir``, written at every evaluation, atomically, by ``himari.agents.ppo.checkpoint``):
``weights.safetensors`` holds the trained module's mutable tensors (trainable parameters and buffers), the best
snapshot, the algorithm's extra tensors (a target network) and the torch RNG state; ``optimizer.pt`` the AdamW
state (loaded with ``weights_only=True``); ``trainer_state.json`` the step, history, best score, early-stopping
counter and the NumPy generator state. Resuming restores all of it, so an interrupted run continues on the same
random stream and ends with the same weights as an uninterrupted one (tested bit for bit on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from himari.agents.ppo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from himari.config import FrozenConfig, config_hash
from himari.errors import ConfigError, RunDirError
from himari.utils.seeding import make_rng

Batch = Any
LOSS_EMA = 0.05  # weight of the newest loss in the reported running training loss


class LoopConfig(FrozenConfig):
    """Settings of the shared offline training loop."""

    steps: int = Field(ge=1)  # gradient updates
    batch_size: int = Field(256, ge=1)  # samples per update (what one sample is depends on the algorithm)
    lr: float = Field(1e-3, gt=0)  # AdamW learning rate
    weight_decay: float = Field(0.0, ge=0)  # AdamW decoupled weight decay
    grad_clip: float = Field(1.0, gt=0)  # max global L2 norm of the gradient of each update
    eval_every: int = Field(100, ge=1)  # updates between validations (the last update is always validated)
    patience: int | None = Field(None, ge=1)  # stop after this many validations without improvement (None: never)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto: cuda when available


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (an error when no GPU is visible) or ``auto`` (cuda when available, else cpu)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("loop.device is 'cuda' but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(device)


class OfflineAlgorithm:
    """What an offline learner adds to the shared loop. Subclasses set ``module`` and implement ``sample``/``loss``.

    ``module`` is what is trained, selected and checkpointed; ``trainable()`` the parameters the optimizer updates
    (a sub-module for the critic-guided DT, whose critic is fitted before). ``validate`` returns ``(score, record)``
    with ``score`` higher-is-better or None when there is nothing to select on.
    """

    name: ClassVar[str]
    evaluate_initial: ClassVar[bool] = False  # validate the untrained weights too (a candidate for selection)
    module: nn.Module

    device: torch.device = torch.device("cpu")  # where sample() puts its batches (set by the loop)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def to(self, device: torch.device) -> None:
        self.module.to(device)
        self.device = device

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        raise NotImplementedError

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_update(self) -> None:
        """Called after every optimizer step (target networks)."""

    def validate(self) -> tuple[float | None, dict[str, float]]:
        return None, {}

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors besides ``module`` that change during training and must survive a resume."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise RunDirError(f"{self.name}: unexpected extra checkpoint tensors {sorted(tensors)[:3]}")


def mutable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the tensors training can change: parameters that require grad, and buffers.

    Frozen parameters (a LoRA backbone) are rebuilt identically from the policy config and are not copied.
    """
    frozen = _frozen_names(module)
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k not in frozen}


def _frozen_names(module: nn.Module) -> set[str]:
    return {k for k, v in module.named_parameters(remove_duplicate=False) if not v.requires_grad}


def load_mutable_state(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    absent = sorted(set(missing) - _frozen_names(module))
    if unexpected or absent:
        raise RunDirError(f"{where}: checkpoint does not match the model (missing {absent[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]})")


def _split(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class _Progress:
    """The loop's scalar state (what a checkpoint's trainer_state.json holds besides the RNG)."""

    def __init__(self) -> None:
        self.step = 0
        self.running = math.nan
        self.history: list[dict[str, float]] = []
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.stale = 0  # validations since the last improvement
        self.stopped_early = False


def fit(
    algorithm: OfflineAlgorithm,
    config: LoopConfig,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``algorithm`` with the shared loop; returns ``history``, ``best_step``, ``best_val_score``, ....

    ``checkpoint_dir``: write a checkpoint at every validation. ``resume``: continue from its latest checkpoint
    (a checkpoint of a finished run only restores the final state); without ``resume`` a directory that already
    holds checkpoints is an error, so two runs never mix.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = make_rng(config.seed)
    algorithm.to(device)
    params = algorithm.trainable()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    progress = _Progress()
    fingerprint = config_hash({"algorithm": algorithm.name, "loop": config.to_dict()})
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if root is not None and latest_checkpoint(root) is not None:
        if not resume:
            raise RunDirError(f"{root}: holds checkpoints of an earlier run; resume it or use a new directory")
        _restore(root, algorithm, optimizer, rng, progress, fingerprint, device)

    def validate(step: int, record: dict[str, float]) -> None:
        module = algorithm.module
        module.eval()
        if device.type != "cpu":  # validation runs the policy as deployed: on CPU
            module.to("cpu")
        score, extra = algorithm.validate()
        if device.type != "cpu":
            module.to(device)
        record = {"step": float(step), **record, **extra}
        if score is not None:
            record["val_score"] = float(score)
            if progress.best_score is None or score > progress.best_score:
                progress.best_score, progress.best_step = float(score), step
                progress.best_weights = mutable_state(module)
                progress.stale = 0
            else:
                progress.stale += 1
                if config.patience is not None and progress.stale >= config.patience:
                    progress.stopped_early = True
        progress.history.append(record)

    if progress.step == 0 and algorithm.evaluate_initial and not progress.history:
        validate(0, {})
    while progress.step < config.steps and not progress.stopped_early:
        progress.step += 1
        step = progress.step
        algorithm.module.train()
        loss, parts = algorithm.loss(algorithm.sample(rng, config.batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        algorithm.after_update()
        value = float(loss.detach())
        progress.running = (value if math.isnan(progress.running)
                            else (1 - LOSS_EMA) * progress.running + LOSS_EMA * value)
        if on_step is not None:
            on_step(step, value)
        if step % config.eval_every == 0 or step == config.steps:
            validate(step, {"loss": value, "train_loss": progress.running, **parts})
            if root is not None:
                _save(root, algorithm, optimizer, rng, progress, fingerprint)
    if progress.best_weights is not None:
        load_mutable_state(algorithm.module, progress.best_weights, f"{algorithm.name} best weights")
    algorithm.module.eval()
    algorithm.to(torch.device("cpu"))
    return {
        "history": progress.history,
        "best_step": progress.best_step if progress.best_step is not None else progress.step,
        "best_val_score": progress.best_score,
        "steps_done": progress.step,
        "stopped_early": progress.stopped_early,
    }


def _save(root: Path, algorithm: OfflineAlgorithm, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
          progress: _Progress, fingerprint: str) -> None:
    tensors = {f"model.{k}": v.cpu() for k, v in mutable_state(algorithm.module).items()}
    if progress.best_weights is not None:
        tensors.update({f"best.{k}": v.cpu() for k, v in progress.best_weights.items()})
    tensors.update({f"extra.{k}": v.detach().cpu().clone() for k, v in algorithm.extra_state().items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and algorithm.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    trainer_state = {
        "algorithm": algorithm.name,
        "config_hash": fingerprint,
        "step": progress.step,
        "running_loss": progress.running,
        "history": progress.history,
        "best_score": progress.best_score,
        "best_step": progress.best_step,
        "stale": progress.stale,
        "stopped_early": progress.stopped_early,
        "numpy_rng": rng.bit_generator.state,
    }
    save_checkpoint(root, progress.step, {k: v.contiguous() for k, v in tensors.items()}, optimizer.state_dict(),
                    trainer_state)


def _restore(root: Path, algorithm: OfflineAlgorithm, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
             progress: _Progress, fingerprint: str, device: torch.device) -> None:
    directory = latest_checkpoint(root)
    assert directory is not None
    tensors, optimizer_state, state = load_checkpoint(directory)
    if state.get("config_hash") != fingerprint:
        raise RunDirError(f"{directory}: written by another configuration ({state.get('algorithm')}, "
                          f"{state.get('config_hash')}); this run is {algorithm.name}, {fingerprint}")
    load_mutable_state(algorithm.module, {k: v.to(device) for k, v in _split(tensors, "model.").items()},
                       str(directory))
    algorithm.load_extra_state({k: v.to(device) for k, v in _split(tensors, "extra.").items()})
    optimizer.load_state_dict(optimizer_state)
    best = _split(tensors, "best.")
    progress.best_weights = {k: v.to(device) for k, v in best.items()} if best else None
    progress.step = int(state["step"])
    progress.running = math.nan if state["running_loss"] is None else float(state["running_loss"])
    progress.history = list(state["history"])
    progress.best_score = None if state["best_score"] is None else float(state["best_score"])
    progress.best_step = state["best_step"]
    progress.stale = int(state["stale"])
    progress.stopped_early = bool(state["stopped_early"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"])
