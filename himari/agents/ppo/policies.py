"""PPO policies implementing :class:`himari.agents.base.Policy`: MLP, LSTM, transformer, multi-asset, sizer.

A policy is a thin object around a torch module ``policy.module`` = {``net``: actor-critic, ``obs_norm``: frozen
observation normalizer}. The trainer drives ``net`` directly; backtests, serving and paper trading call
:meth:`PPOPolicy.act`. ``save(directory)`` writes ``policy.json`` (kind, config, observation layout) and
``weights.safetensors`` atomically; ``load(directory)`` rebuilds the same policy without unpickling anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import safetensors.torch
import torch
from torch import nn

from himari import __version__
from himari.agents.base import PolicyOutput
from himari.agents.ppo.config import (
    LSTMConfig,
    LSTMSizerConfig,
    MLPConfig,
    MultiAssetConfig,
    SizerConfig,
    TransformerConfig,
)
from himari.agents.ppo.networks import (
    ActorCritic,
    LSTMActorCritic,
    MLPActorCritic,
    MultiAssetActorCritic,
    ObsNormalizer,
    ObsSpec,
    SequenceLSTMActorCritic,
    TransformerActorCritic,
    observation_tensor,
    regime_scale_fn,
)
from himari.config import FrozenConfig
from himari.env.protocol import ActionKind, Observation
from himari.errors import RunDirError
from himari.utils.io import atomic_write_bytes, atomic_write_json, read_json

POLICY_FORMAT = 1


class PPOPolicy:
    """Base class of the PPO policies. Subclasses set ``kind``, ``config_class`` and :meth:`build_net`."""

    kind: ClassVar[str] = ""
    config_class: ClassVar[type[FrozenConfig]] = MLPConfig

    def __init__(
        self,
        spec: ObsSpec,
        config: FrozenConfig | dict[str, Any] | None = None,
        *,
        seed: int = 0,
        normalize_observations: bool = True,
        obs_clip: float = 10.0,
    ) -> None:
        if isinstance(config, FrozenConfig):
            if not isinstance(config, self.config_class):
                raise TypeError(f"{type(self).__name__} needs {self.config_class.__name__}, got {type(config).__name__}")
            self.config = config
        else:
            self.config = self.config_class.parse(config or {})
        self.spec = ObsSpec(*spec)
        self.seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self.build_net()
        self.module = nn.ModuleDict({"net": net, "obs_norm": ObsNormalizer(self.spec, obs_clip, normalize_observations)})
        self.module.eval()

    # ------------------------------------------------------------------------------------------ structure
    def build_net(self) -> ActorCritic:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def net(self) -> ActorCritic:
        return self.module["net"]  # type: ignore[return-value]

    @property
    def obs_norm(self) -> ObsNormalizer:
        return self.module["obs_norm"]  # type: ignore[return-value]

    @property
    def action_kind(self) -> ActionKind:
        return "discrete" if getattr(self.config, "action", "continuous") == "discrete" else "continuous"

    @property
    def window(self) -> int:
        return self.spec.window

    @property
    def n_assets(self) -> int:
        return self.spec.n_assets

    @property
    def recurrent(self) -> bool:
        return self.net.recurrent

    @property
    def max_position(self) -> float | None:
        return getattr(self.config, "max_position", None)

    @property
    def device(self) -> torch.device:
        """Where the network lives (the CPU unless a trainer moved it; ``module.to(device)`` moves it)."""
        return self.obs_norm.mean.device

    # ------------------------------------------------------------------------------------------ acting
    def check_observation(self, obs: Observation) -> None:
        got = (obs.features.shape[1:], obs.regime.shape[1:], obs.account.shape[1:])
        want = (
            (self.spec.window, self.spec.n_assets, self.spec.n_features),
            (self.spec.window, self.spec.n_assets, self.spec.n_regimes),
            (self.spec.n_assets, self.spec.n_account),
        )
        if got != want:
            raise ValueError(f"{self.kind} policy expects observation shapes {want} (features, regime, account), got {got}")

    def preprocess(self, obs: Observation) -> torch.Tensor:
        """Flatten and normalize (frozen statistics) -> ``(N, D)`` float32 on the policy's device."""
        return self.obs_norm(observation_tensor(obs, self.device))

    def initial_state(self, n: int) -> Any:
        return self.net.initial_state(n)

    def reset_state(self, state: Any, done: np.ndarray) -> Any:
        if state is None:
            return None
        flags = done if isinstance(done, torch.Tensor) else torch.as_tensor(np.asarray(done, dtype=bool))
        return self.net.reset_state(state, flags.to(self.device))

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The array handed to the simulator: int64 ``(N, A)`` codes or float32 positions/deltas."""
        if self.action_kind == "discrete":
            return action.cpu().numpy().astype(np.int64, copy=False)
        out = action.cpu().numpy().astype(np.float32, copy=False)
        if self.max_position is not None:
            out = np.clip(out, -self.max_position, self.max_position)
        return out

    def env_action_tensor(self, action: torch.Tensor) -> torch.Tensor:
        """:meth:`env_action` for tensor environments (``TorchSimVecEnv``): stays on the device."""
        if self.action_kind == "discrete":
            return action
        if self.max_position is not None:
            return action.clamp(-self.max_position, self.max_position)
        return action

    def act(
        self,
        obs: Observation,
        state: Any = None,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[PolicyOutput, Any]:
        """Decide for bar t from an observation holding data <= t only (``state`` from :meth:`initial_state`)."""
        self.check_observation(obs)
        n = obs.features.shape[0]
        if state is None and self.recurrent:
            state = self.initial_state(n)
        with torch.inference_mode():
            x = self.preprocess(obs)
            params, value, new_state = self.net.forward_step(x, state)
            head = self.net.head
            action = head.mode(params) if deterministic else head.sample(params, generator)
            probs = head.probs(params)
        return (
            PolicyOutput(
                action=self.env_action(action),
                action_probs=None if probs is None else probs.cpu().numpy().astype(np.float32),
                value=value.cpu().numpy().astype(np.float32),
            ),
            new_state,
        )

    # ------------------------------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        return {
            "format": POLICY_FORMAT,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "obs_spec": self.spec.to_dict(),
            "action_kind": self.action_kind,
            "normalize_observations": self.obs_norm.enabled,
            "obs_clip": self.obs_norm.clip,
            "seed": self.seed,
            "himari_version": __version__,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Host copies of every weight and buffer (safe to save or keep while training goes on)."""
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

    def save(self, directory: str | Path) -> None:
        """``policy.json`` + ``weights.safetensors``, each written atomically (weights first)."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(root / "weights.safetensors", safetensors.torch.save(self.state_dict()))
        atomic_write_json(root / "policy.json", self.metadata())

    @classmethod
    def load(cls, directory: str | Path) -> PPOPolicy:
        root = Path(directory)
        meta_path, weights_path = root / "policy.json", root / "weights.safetensors"
        if not meta_path.exists() or not weights_path.exists():
            raise RunDirError(f"{root}: a saved policy needs policy.json and weights.safetensors")
        meta = read_json(meta_path)
        klass = _KINDS.get(meta.get("kind", ""))
        if klass is None or (cls is not PPOPolicy and klass is not cls):
            raise RunDirError(f"{meta_path}: kind {meta.get('kind')!r} is not a {cls.__name__}")
        if meta.get("format") != POLICY_FORMAT:
            raise RunDirError(f"{meta_path}: policy format {meta.get('format')} unsupported (expected {POLICY_FORMAT})")
        policy = klass(
            ObsSpec(**meta["obs_spec"]),
            meta["config"],
            seed=int(meta.get("seed", 0)),
            normalize_observations=bool(meta["normalize_observations"]),
            obs_clip=float(meta["obs_clip"]),
        )
        weights = safetensors.torch.load_file(str(weights_path))
        try:
            policy.load_state_dict(weights)
        except RuntimeError as exc:
            raise RunDirError(f"{weights_path}: weights do not match policy.json: {str(exc).splitlines()[0]}") from None
        return policy


class MLPPolicy(PPOPolicy):
    """The seeds' base PPO: MLP actor-critic; discrete HOLD/LONG/SHORT or continuous position-multiplier head."""

    kind = "mlp"
    config_class = MLPConfig

    def build_net(self) -> ActorCritic:
        c = self.config
        return MLPActorCritic(self.spec, c.hidden_sizes, c.activation, c.action, c.init_log_std)


class LSTMPolicy(PPOPolicy):
    """Recurrent PPO (hidden 64, 2 layers by default); state reset on episode start, carried across rollouts."""

    kind = "lstm"
    config_class = LSTMConfig

    def build_net(self) -> ActorCritic:
        c = self.config
        return LSTMActorCritic(self.spec, c.encoder_size, c.hidden_size, c.num_layers, c.action, c.init_log_std)


class TransformerPolicy(PPOPolicy):
    """Regime-conditioned causal transformer, sliding-window attention over past decisions within the episode
    (``TransformerConfig.seeds()``: 3 layers, 4 heads, d=256, context 100; a smaller default for CPU runs)."""

    kind = "transformer"
    config_class = TransformerConfig

    def build_net(self) -> ActorCritic:
        c = self.config
        return TransformerActorCritic(
            self.spec, c.d_model, c.n_layers, c.n_heads, c.ff_mult, c.context, c.dropout, c.action, c.init_log_std
        )


class MultiAssetPolicy(PPOPolicy):
    """BTC/ETH/SOL jointly: per-asset state, cross-asset correlation features, per-asset position outputs."""

    kind = "multiasset"
    config_class = MultiAssetConfig

    def build_net(self) -> ActorCritic:
        c = self.config
        return MultiAssetActorCritic(
            self.spec, c.asset_hidden, c.joint_hidden, c.correlation_feature, c.action, c.init_log_std
        )


class SizerPolicy(PPOPolicy):
    """L3 bounded-delta sizer: raw delta ``x`` per asset; the simulator maps it to ``0.30·tanh(x)`` around the
    volatility-targeted base position. Mean and std are scaled by the regime (``SizerConfig.regime_scale``)."""

    kind = "sizer"
    config_class = SizerConfig

    @property
    def action_kind(self) -> ActionKind:
        return "delta"

    @property
    def max_position(self) -> float | None:
        return None

    def build_net(self) -> ActorCritic:
        c = self.config
        scale = regime_scale_fn(self.spec, c.regime_scale)
        return MLPActorCritic(self.spec, c.hidden_sizes, "tanh", "continuous", c.init_log_std, scale_fn=scale)


class LSTMSizerPolicy(SizerPolicy):
    """L3 bounded-delta sizer over the window's bars with an LSTM (the seeds' L3: a 20-bar sequence)."""

    kind = "sizer-lstm"
    config_class = LSTMSizerConfig  # type: ignore[assignment]

    def build_net(self) -> ActorCritic:
        c = self.config
        scale = regime_scale_fn(self.spec, c.regime_scale)
        return SequenceLSTMActorCritic(self.spec, c.hidden_size, c.num_layers, c.head_hidden, "continuous",
                                       c.init_log_std, scale_fn=scale)


_KINDS: dict[str, type[PPOPolicy]] = {
    cls.kind: cls for cls in (MLPPolicy, LSTMPolicy, TransformerPolicy, MultiAssetPolicy, SizerPolicy, LSTMSizerPolicy)
}
PPO_POLICY_KINDS: tuple[str, ...] = tuple(_KINDS)


def make_policy(
    kind: str,
    spec: ObsSpec,
    config: FrozenConfig | dict[str, Any] | None = None,
    *,
    seed: int = 0,
    normalize_observations: bool = True,
    obs_clip: float = 10.0,
) -> PPOPolicy:
    """Build a fresh PPO policy of ``kind`` for observations of shape ``spec``."""
    if kind not in _KINDS:
        raise RunDirError(f"unknown PPO policy kind {kind!r}; known: {', '.join(PPO_POLICY_KINDS)}")
    return _KINDS[kind](spec, config, seed=seed, normalize_observations=normalize_observations, obs_clip=obs_clip)
