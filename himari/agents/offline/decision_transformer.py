"""Decision Transformer (Chen et al., 2021) and a critic-guided variant (CGDT).

Decision Transformer
--------------------
A causal GPT over the interleaved tokens ``(R̂_1, s_1, a_1, ..., R̂_L, s_L, a_L)`` of the last ``L`` (context, 64 by
default) steps, where ``R̂_t`` is the discounted return-to-go (``G_t = r_t + γ G_{t+1}``, γ = 0.99) scaled by
``reward_scale / rtg_scale``. The action ``a_t`` is predicted from the hidden state of the token ``s_t``, which
attends to ``R̂_{≤t}, s_{≤t}, a_{<t}`` only (causal mask; left padding is masked as a key). Training: cross-entropy
on the behaviour actions of offline trajectories. Inference: condition on a target return (a high quantile of the
training returns-to-go) and decrement it with the realised reward, ``R̂_{t+1} = (R̂_t - r_t) / γ``, where
``r_t = Δ equity_log`` is read from the account — the same reward the trajectories carry.

Critic-guided DT (CGDT)
-----------------------
A separately trained conservative twin-Q critic ``Q(s_t, a)`` (``himari.agents.offline.cql``) steers the action
choice (in the spirit of Wang et al., 2024, "Critic-Guided Decision Transformer for Offline RL"): the policy acts on

    score(a) = log π_DT(a | context) + β (Q(s_t, a) - mean_a' Q(s_t, a')) / σ_A

with σ_A the standard deviation of the critic's advantages on the training states, so β is scale-free. With β = 0
it is the plain DT. The critic never sees the return-to-go tokens (which carry the realised future in training).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from himari.agents.base import PolicyOutput
from himari.agents.offline.classifier import probs_to_output
from himari.agents.offline.common import N_ACTIONS, TorchPolicyMixin, equity_log, softmax_np, step_state
from himari.agents.offline.cql import CQLAlgorithm, CQLConfig, TwinQNet
from himari.agents.offline.datasets import TrajectoryData
from himari.agents.offline.loop import LoopConfig, OfflineAlgorithm, fit
from himari.config import FrozenConfig
from himari.env.protocol import Observation
from himari.errors import DataError
from himari.utils.seeding import make_rng

PAD_ACTION = N_ACTIONS  # action-token index for "no action" (padding / not yet chosen)


class DTConfig(FrozenConfig):
    state_dim: int = Field(ge=1)
    context: int = Field(64, ge=1, le=1024)
    d_model: int = Field(64, ge=8)
    n_layers: int = Field(2, ge=1, le=24)
    n_heads: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # > 0 forces the slow attention path on CPU
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(16, ge=1)
    gamma: float = Field(0.99, ge=0.0, lt=1.0)
    reward_scale: float = Field(100.0, gt=0)
    target_quantile: float = Field(0.9, gt=0.0, lt=1.0)  # target return-to-go at inference
    seed: int = 0


class CGDTConfig(DTConfig):
    guidance: float = Field(1.0, ge=0.0)  # β
    critic_alpha: float = Field(1.0, ge=0.0)  # CQL penalty of the critic
    critic_hidden: tuple[int, ...] = (128, 128)
    critic_steps_ratio: float = Field(1.0, gt=0.0)  # critic steps per DT step


class CausalSelfAttentionBlock(nn.Module):
    """Pre-norm transformer block; ``allowed`` (B, 1, T, T) bool is True where a query may attend to a key."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise DataError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None, query_last: int = 0) -> torch.Tensor:
        """``allowed=None`` means plain causal attention. ``query_last=k``: only the last ``k`` positions are
        returned (keys/values still cover the whole sequence) — used at inference for the final layer."""
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(d, dim=-1)
        if query_last:
            q, x = q[:, -query_last:], x[:, -query_last:]
            if allowed is not None:
                allowed = allowed[:, :, -query_last:]
        tq = q.shape[1]
        q = q.reshape(b, tq, self.n_heads, d // self.n_heads).transpose(1, 2)
        k, v = (z.reshape(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (k, v))
        dropout = self.attn_dropout if self.training else 0.0
        if allowed is None and not query_last:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            if allowed is None:  # causal restricted to the last tq queries
                allowed = torch.ones(tq, t, dtype=torch.bool).tril(diagonal=t - tq)[None, None]
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, tq, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class DTNet(nn.Module):
    """``forward(rtg (B,L), states (B,L,S), actions (B,L), pad (B,L) bool) -> action logits (B,L,3)``."""

    def __init__(self, config: DTConfig) -> None:
        super().__init__()
        d = config.d_model
        self.context = config.context
        self.register_buffer("state_mean", torch.zeros(config.state_dim))
        self.register_buffer("state_std", torch.ones(config.state_dim))
        self.register_buffer("rtg_scale", torch.ones(()))  # in reward_scale units
        self.register_buffer("target_rtg", torch.zeros(()))  # in reward_scale units
        self.embed_rtg = nn.Linear(1, d)
        self.embed_state = nn.Linear(config.state_dim, d)
        self.embed_action = nn.Embedding(N_ACTIONS + 1, d)
        self.embed_pos = nn.Embedding(config.context, d)
        self.embed_type = nn.Embedding(3, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(d, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.ln_out = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, N_ACTIONS)

    def forward(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, pad: torch.Tensor,
                last_only: bool = False) -> torch.Tensor:
        """Action logits ``(B, L, 3)`` read at the state tokens (``(B, 1, 3)`` for the last step if ``last_only``)."""
        b, length = actions.shape
        pos = self.embed_pos(torch.arange(self.context - length, self.context))  # right-aligned slots
        z = (states - self.state_mean) / self.state_std
        r_tok = self.embed_rtg((rtg / self.rtg_scale)[..., None]) + self.embed_type.weight[0]
        s_tok = self.embed_state(z) + self.embed_type.weight[1]
        a_tok = self.embed_action(actions) + self.embed_type.weight[2]
        tokens = torch.stack([r_tok, s_tok, a_tok], dim=2) + pos[None, :, None, :]  # (B, L, 3, d)
        x = self.drop(tokens.reshape(b, 3 * length, -1))
        n_tok = 3 * length
        allowed: torch.Tensor | None = None
        if bool(pad.any()):
            causal = torch.tril(torch.ones(n_tok, n_tok, dtype=torch.bool))
            key_ok = ~pad.repeat_interleave(3, dim=1)  # (B, 3L)
            allowed = causal[None] & (key_ok[:, None, :] | torch.eye(n_tok, dtype=torch.bool)[None])
            allowed = allowed[:, None]  # (B, 1, 3L, 3L); a padded query attends to itself only
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, query_last=3 if (last_only and i == last) else 0)
        if last_only:
            return self.action_head(self.ln_out(x[:, 1:2]))  # type: ignore[no-any-return]
        h_state = self.ln_out(x).reshape(b, length, 3, -1)[:, :, 1]
        return self.action_head(h_state)  # type: ignore[no-any-return]


class CGDTNet(nn.Module):
    def __init__(self, config: CGDTConfig) -> None:
        super().__init__()
        self.dt = DTNet(config)
        self.critic = TwinQNet(_critic_config(config))
        self.register_buffer("adv_scale", torch.ones(()))


def _critic_config(config: CGDTConfig) -> CQLConfig:
    return CQLConfig(state_dim=config.state_dim, hidden=config.critic_hidden, gamma=config.gamma,
                     alpha=config.critic_alpha, reward_scale=config.reward_scale, lr=config.lr, seed=config.seed)


class DecisionTransformerPolicy(TorchPolicyMixin):
    """Return-conditioned causal transformer policy; its state holds the context of past steps per stream."""

    kind: ClassVar[str] = "dt"
    config_class: ClassVar[type[FrozenConfig]] = DTConfig
    action_kind = "discrete"
    window = 1

    def __init__(self, config: DTConfig, n_assets: int = 1) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.net = self._build_net(config)
        self.net.eval()
        self.n_assets = n_assets
        self.meta: dict[str, Any] = {}
        self._rng = make_rng(config.seed)

    def _build_net(self, config: DTConfig) -> nn.Module:
        return DTNet(config)

    @property
    def dt(self) -> DTNet:
        return self.net  # type: ignore[return-value]

    # -- context state --------------------------------------------------------------------------------------
    def initial_state(self, n: int) -> dict[str, np.ndarray]:
        m, length = n * self.n_assets, self.config.context
        return {
            "states": np.zeros((m, length, self.config.state_dim), np.float32),
            "rtg": np.zeros((m, length), np.float32),
            "actions": np.full((m, length), PAD_ACTION, np.int64),
            "length": np.zeros(m, np.int64),
            "rtg_now": np.full(m, float(self.dt.target_rtg), np.float64),
            "last_equity": np.zeros(m, np.float64),
        }

    def reset_state(self, state: dict[str, np.ndarray], done: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.repeat(np.asarray(done, bool), self.n_assets)
        if rows.any():
            state = {k: v.copy() for k, v in state.items()}
            state["length"][rows] = 0
            state["actions"][rows] = PAD_ACTION
            state["rtg_now"][rows] = float(self.dt.target_rtg)
        return state

    def _advance(self, obs: Observation, state: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        s_now = step_state(obs)
        m = s_now.shape[0]
        if state is None or state["length"].shape[0] != m:
            self.n_assets = obs.features.shape[2]
            state = self.initial_state(obs.features.shape[0])
        st = {k: v.copy() for k, v in state.items()}
        eq = equity_log(obs)
        started = st["length"] > 0
        reward = (eq - st["last_equity"]) * self.config.reward_scale
        st["rtg_now"] = np.where(started, (st["rtg_now"] - reward) / self.config.gamma, st["rtg_now"])
        st["last_equity"] = eq
        for key in ("states", "rtg", "actions"):
            st[key] = np.roll(st[key], -1, axis=1)
        st["states"][:, -1] = s_now
        st["rtg"][:, -1] = st["rtg_now"]
        st["actions"][:, -1] = PAD_ACTION
        st["length"] = np.minimum(st["length"] + 1, self.config.context)
        return st

    def _logits(self, st: dict[str, np.ndarray]) -> np.ndarray:
        length = self.config.context
        pad = np.arange(length)[None, :] < (length - st["length"])[:, None]
        with torch.no_grad():
            logits = self.dt(torch.from_numpy(st["rtg"]), torch.from_numpy(st["states"]),
                             torch.from_numpy(st["actions"]), torch.from_numpy(pad), last_only=True)
        return logits[:, -1].numpy()  # type: ignore[no-any-return]

    def _scores(self, st: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        return self._logits(st), None

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        n, _, a, _ = obs.features.shape
        st = self._advance(obs, state)
        scores, value = self._scores(st)
        probs = softmax_np(scores).reshape(n, a, N_ACTIONS)
        out = probs_to_output(probs, deterministic, self._rng, value)
        st["actions"][:, -1] = out.action.reshape(-1)
        return out, st


class CriticGuidedDTPolicy(DecisionTransformerPolicy):
    """DT whose action choice is steered by a conservative twin-Q critic (see the module docstring)."""

    kind: ClassVar[str] = "cgdt"
    config_class: ClassVar[type[FrozenConfig]] = CGDTConfig
    config: CGDTConfig

    def _build_net(self, config: DTConfig) -> nn.Module:
        assert isinstance(config, CGDTConfig)
        return CGDTNet(config)

    @property
    def dt(self) -> DTNet:
        return self.net.dt  # type: ignore[return-value,union-attr]

    def _scores(self, st: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        logits = self._logits(st)
        top = logits.max(-1, keepdims=True)
        log_pi = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        with torch.no_grad():
            q1, q2 = self.net.critic(torch.from_numpy(st["states"][:, -1]))  # type: ignore[union-attr]
        q = ((q1 + q2) / 2).numpy()
        adv = (q - q.mean(-1, keepdims=True)) / float(self.net.adv_scale)  # type: ignore[union-attr]
        value = q.max(-1).reshape(-1, self.n_assets).mean(-1).astype(np.float32)
        return log_pi + self.config.guidance * adv, value


# ------------------------------------------------------------------------------------------------------------
# Training


def context_batch(data: TrajectoryData, t_idx: np.ndarray, n_idx: np.ndarray, context: int,
                  reward_scale: float) -> dict[str, torch.Tensor]:
    """Right-aligned contexts of ``context`` steps ending at ``(t_idx, n_idx)``, padded before episode starts."""
    offsets = np.arange(-context + 1, 1)
    times = t_idx[:, None] + offsets[None, :]  # (B, L)
    episode_start = (t_idx - data.episode_step[t_idx, n_idx])[:, None]
    pad = times < episode_start
    times_c = np.maximum(times, 0)
    streams = np.broadcast_to(n_idx[:, None], times.shape)
    states = np.where(pad[..., None], 0.0, data.states[times_c, streams]).astype(np.float32)
    rtg = np.where(pad, 0.0, data.returns_to_go[times_c, streams] * reward_scale).astype(np.float32)
    actions = np.where(pad, PAD_ACTION, data.actions[times_c, streams]).astype(np.int64)
    return {"states": torch.from_numpy(states), "rtg": torch.from_numpy(rtg),
            "actions": torch.from_numpy(actions), "pad": torch.from_numpy(pad)}


def _set_dt_stats(net: DTNet, data: TrajectoryData, config: DTConfig) -> None:
    flat_states = torch.from_numpy(data.states.reshape(-1, data.state_dim))
    net.state_mean.copy_(flat_states.mean(0))
    net.state_std.copy_(flat_states.std(0).clamp_min(1e-3))
    rtg = data.returns_to_go.astype(np.float64) * config.reward_scale
    net.rtg_scale.fill_(max(float(rtg.std()), 1e-3))
    net.target_rtg.fill_(float(np.quantile(rtg[data.episode_step == 0] if (data.episode_step == 0).any() else rtg,
                                           config.target_quantile)))


class DTAlgorithm(OfflineAlgorithm):
    """Decision Transformer training for the shared loop: cross-entropy on the behaviour actions of right-aligned
    contexts (padding excluded), minibatches of ``(time, stream)`` positions drawn uniformly.

    ``module`` is the policy's whole network (for CGDT its critic too, already fitted and not updated here);
    ``trainable`` is the DT's parameters. ``validate() -> score`` must use validation data only.
    """

    name: ClassVar[str] = "dt"

    def __init__(self, policy: DecisionTransformerPolicy, data: TrajectoryData,
                 validate: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self.module = policy.net
        self.data = data
        self._validate = validate

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.policy.dt.parameters() if p.requires_grad]

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        t_len, n_streams = self.data.actions.shape
        t_idx = rng.integers(0, t_len, size=batch_size)
        n_idx = rng.integers(0, n_streams, size=batch_size)
        cfg = self.policy.config
        batch = context_batch(self.data, t_idx, n_idx, cfg.context, cfg.reward_scale)
        return {k: v.to(self.device) for k, v in batch.items()}

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.policy.dt(batch["rtg"], batch["states"], batch["actions"], batch["pad"])
        keep = ~batch["pad"]
        return F.cross_entropy(logits[keep], batch["actions"][keep]), {}

    def validate(self) -> tuple[float | None, dict[str, float]]:
        return (None, {}) if self._validate is None else (float(self._validate()), {})


def critic_loop_config(loop: LoopConfig, config: CGDTConfig) -> LoopConfig:
    """The CGDT critic's fit: ``ceil(steps x critic_steps_ratio)`` CQL updates with the critic's batch size and
    the DT's learning rate, seed + 1, validated only at its end (nothing to select on: the final critic is kept)."""
    critic = _critic_config(config)
    steps = max(1, math.ceil(loop.steps * config.critic_steps_ratio))
    return loop.replace(steps=steps, batch_size=critic.batch_size, lr=critic.lr, weight_decay=0.0, eval_every=steps,
                        patience=None, seed=loop.seed + 1)


def train_decision_transformer(
    policy: DecisionTransformerPolicy,
    data: TrajectoryData,
    loop: LoopConfig,
    validate: Callable[[], float] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Fit the DT on ``data`` with the shared loop; for CGDT first fit its critic (CQL on the same transitions) and
    set the advantage scale σ_A from the critic on the training states. Checkpoints: ``critic/`` and ``dt/``."""
    cfg = policy.config
    if data.n_transitions == 0:
        raise DataError("Decision Transformer: no transitions")
    if data.state_dim != cfg.state_dim:
        raise DataError(f"trajectories have state_dim {data.state_dim}, policy expects {cfg.state_dim}")
    _set_dt_stats(policy.dt, data, cfg)
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    critic_info: dict[str, Any] | None = None
    if isinstance(policy, CriticGuidedDTPolicy):
        net: CGDTNet = policy.net  # type: ignore[assignment]
        critic = CQLAlgorithm(net.critic, data.flat(), _critic_config(policy.config))
        critic_info = fit(critic, critic_loop_config(loop, policy.config),
                          None if root is None else root / "critic", resume)
        with torch.no_grad():
            q1, q2 = net.critic(torch.from_numpy(data.states.reshape(-1, data.state_dim)))
            q = (q1 + q2) / 2
            net.adv_scale.fill_(max(float((q - q.mean(-1, keepdim=True)).std()), 1e-6))
    out = fit(DTAlgorithm(policy, data, validate), loop, None if root is None else root / "dt", resume, on_step)
    if critic_info is not None:
        out["critic"] = {k: v for k, v in critic_info.items() if k != "history"}
        out["critic_history"] = critic_info["history"]
    return out
