"""Where PPO trains: the device choice and the training environment that goes with it.

``device="auto"`` is CUDA when ``torch.cuda.is_available()``, else the CPU. On a GPU the policy, the rollout storage
and the simulator (:class:`~himari.env.torch_sim.TorchSimVecEnv`, the market held once on the device) all live on
the device, so a rollout step moves nothing between host and device; on the CPU the NumPy simulator with its
compiled kernels (:class:`~himari.env.sim.SimVecEnv`) is the faster one and is used by default.

Run assembly (``himari.training.ppo``, walk-forward, the pipeline) builds its environments with
:func:`make_training_env` and passes ``PPOConfig(device=...)`` to the trainer; evaluation environments stay NumPy
(``SimVecEnv.for_evaluation``) and the trainer moves observations to the policy's device there.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from himari.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda"]
SimulatorName = Literal["auto", "numpy", "torch"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is a :class:`ConfigError`."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but no CUDA GPU is available (torch.cuda.is_available() "
                              "is False); use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")


def is_tensor_env(env: Any) -> bool:
    """True for environments whose observations and rewards are torch tensors (``TorchSimVecEnv``)."""
    return isinstance(getattr(env, "device", None), torch.device)


def make_training_env(
    market: Any,
    sim_config: Any,
    num_envs: int,
    *,
    seed: int = 0,
    start_index: int | None = None,
    end_index: int | None = None,
    device: str | torch.device = "auto",
    simulator: SimulatorName = "auto",
) -> Any:
    """The training environment for ``device``: the torch simulator on that device for a GPU (or when
    ``simulator="torch"``, e.g. to exercise the device path on the CPU), else the NumPy :class:`SimVecEnv`.

    Both have the same constructor arguments, episode draws (the same seeded NumPy stream) and semantics (tested
    step for step in ``tests/env/test_torch_sim.py``).
    """
    dev = resolve_device(device)
    if simulator not in ("auto", "numpy", "torch"):
        raise ConfigError(f"simulator must be auto, numpy or torch, got {simulator!r}")
    use_torch = simulator == "torch" or (simulator == "auto" and dev.type != "cpu")
    if simulator == "numpy" and dev.type != "cpu":
        raise ConfigError(f"the NumPy simulator runs on the host; device {dev} needs simulator 'torch' or 'auto'")
    if use_torch:
        from himari.env.torch_sim import TorchSimVecEnv

        # actions come from the policy head (valid by construction): no per-step validation read-back
        return TorchSimVecEnv(market, sim_config, num_envs, seed=seed, start_index=start_index, end_index=end_index,
                              device=dev, check_actions=False)
    from himari.env.sim import SimVecEnv

    return SimVecEnv(market, sim_config, num_envs, seed=seed, start_index=start_index, end_index=end_index)
