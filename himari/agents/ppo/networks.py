"""Network builders for the PPO policies: observation layout, normalizer, action distributions, actor-critics.

Every actor-critic takes the flattened, normalized observation ``x`` (``himari.env.protocol.flatten_observation``
layout: features ``(W, A, F)``, regime posterior ``(W, A, R)``, account ``(A, K)``) and offers

* ``forward_step(x (n, D), state) -> (dist_params, value (n,), new_state)`` for rollouts and inference,
* ``forward_sequence(x (T, n, D), state0, episode_starts (T, n)) -> (dist_params over T·n, value (T·n,))`` for the
  PPO update (truncated BPTT over the rollout for recurrent / context policies),
* ``initial_state(n)``, ``reset_state(state, done)``, ``select_state(state, index)``.

Initialization: orthogonal weights, gain √2 in hidden layers, 0.01 for the policy head and 1 for the value head
(Engstrom et al. 2020; Huang et al. 2022, "The 37 Implementation Details of PPO").
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_DISCRETE_ACTIONS = 3  # HOLD, LONG, SHORT
_MASKED = -1e9  # additive attention mask (finite, so fully masked rows never produce NaN)


class ObsSpec(NamedTuple):
    """Shape of the observation a policy expects (see ``himari.env.protocol.Observation``)."""

    window: int
    n_assets: int
    n_features: int
    n_regimes: int
    n_account: int

    @classmethod
    def from_env(cls, env: Any) -> ObsSpec:
        return cls(int(env.window), int(env.num_assets), int(env.n_features), int(env.n_regimes), int(env.n_account))

    @property
    def feature_dim(self) -> int:
        return self.window * self.n_assets * self.n_features

    @property
    def regime_dim(self) -> int:
        return self.window * self.n_assets * self.n_regimes

    @property
    def obs_dim(self) -> int:
        return self.feature_dim + self.regime_dim + self.n_assets * self.n_account

    @property
    def regime_slice(self) -> slice:
        return slice(self.feature_dim, self.feature_dim + self.regime_dim)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (..., D)`` -> features ``(..., W, A, F)``, regime ``(..., W, A, R)``, account ``(..., A, K)``."""
        lead = x.shape[:-1]
        f_end = self.feature_dim
        r_end = f_end + self.regime_dim
        features = x[..., :f_end].reshape(*lead, self.window, self.n_assets, self.n_features)
        regime = x[..., f_end:r_end].reshape(*lead, self.window, self.n_assets, self.n_regimes)
        account = x[..., r_end:].reshape(*lead, self.n_assets, self.n_account)
        return features, regime, account

    def last_regime(self, x: torch.Tensor) -> torch.Tensor:
        """Regime posterior of the decision bar, ``(..., A, R)``."""
        return self.split(x)[1][..., -1, :, :]

    def to_dict(self) -> dict[str, int]:
        return dict(self._asdict())


class ObsNormalizer(nn.Module):
    """Running mean/variance of training observations (Chan et al. parallel update), frozen outside training.

    ``normalize(x) = clip((x - μ) / sqrt(σ² + ε), ±clip)`` on the feature and account dimensions; the regime
    posterior is a probability vector and passes through unchanged (models read it as such).
    """

    def __init__(self, spec: ObsSpec, clip: float = 10.0, enabled: bool = True) -> None:
        super().__init__()
        dim = spec.obs_dim
        self.clip = float(clip)
        self.enabled = bool(enabled)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        mask = torch.ones(dim, dtype=torch.bool)
        mask[spec.regime_slice] = False
        self.register_buffer("norm_mask", mask)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``(B, D)`` of raw training observations into the running statistics."""
        if not self.enabled:
            return
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        batch_count = x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        new_mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        mean = self.mean.to(x.dtype)
        std = torch.sqrt(self.var + 1e-8).to(x.dtype)
        normed = torch.clamp((x - mean) / std, -self.clip, self.clip)
        return torch.where(self.norm_mask, normed, x)


def layer_init(layer: nn.Linear, std: float = math.sqrt(2.0), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class _NumpyTanh(torch.autograd.Function):
    """``tanh`` through NumPy's SIMD kernel; backward ``grad · (1 - y²)`` from the saved output (as torch's own)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.from_numpy(np.tanh(x.detach().numpy()))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def fast_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)``, on CPU float32 through NumPy.

    Why: with one thread, ``torch.tanh`` on CPU costs ~3-4 ns per float32 element (its 1-ULP Sleef path), NumPy's
    vectorized ``np.tanh`` ~0.4 ns at the same accuracy (both within 1 float32 ULP of the correctly rounded value),
    and the activations were ~40% of a PPO update of the 64-unit MLP (``himari bench ppo``). Elsewhere (GPU, other
    dtypes, tensors that are not plain strided CPU tensors) it is ``torch.tanh``.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.layout != torch.strided:
        return torch.tanh(x)
    if x.requires_grad and torch.is_grad_enabled():
        return _NumpyTanh.apply(x)
    return torch.from_numpy(np.tanh(x.numpy()))


class Tanh(nn.Module):
    """``nn.Tanh`` computed by :func:`fast_tanh` (no parameters: state dicts are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_tanh(x)


class _WideLinearFn(torch.autograd.Function):
    """``y = x Wᵀ + b`` for ``x (B, in)`` with ``in < out``; backward forms ``∂W = (xᵀ g)ᵀ`` instead of ``gᵀ x``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = (x.t() @ grad).t().contiguous() if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose weight gradient, for a narrow input (the observation,
    15 wide in the benchmark, into 64 units), is formed as ``(xᵀ g)ᵀ``: on one CPU thread MKL takes ~0.25 ms for
    that product at a 8,192 batch against ~0.68 ms for ``gᵀ x``, which autograd uses. Other shapes, devices and
    dtypes, and inference, use ``F.linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.in_features < self.out_features and x.dim() == 2 and x.device.type == "cpu"
                and x.dtype == torch.float32 and self.bias is not None and torch.is_grad_enabled()
                and self.weight.requires_grad):
            return _WideLinearFn.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def _activation(name: str) -> type[nn.Module]:
    return Tanh if name == "tanh" else nn.ReLU


def mlp(sizes: tuple[int, ...], activation: str = "tanh") -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [layer_init(Linear(fan_in, fan_out)), _activation(activation)()]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------- distributions


def log_softmax_actions(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits, dim=-1)`` over the 3 actions, computed along a leading dimension.

    Why: torch's CPU kernel is slow when the softmax dimension is innermost and tiny (3): ~0.45 ms forward for
    8,192 x 3 logits against ~0.02 ms along dim 0 of the transposed copy, with the same result (tested); the
    update takes it (and its backward) for every minibatch.
    """
    return torch.log_softmax(logits.movedim(-1, 0).contiguous(), dim=0).movedim(0, -1)


class DiscreteHead(nn.Module):
    """Independent categorical over {HOLD, LONG, SHORT} per asset; params = logits ``(n, A, 3)``."""

    kind = "discrete"

    def __init__(self, in_dim: int, n_assets: int) -> None:
        super().__init__()
        self.n_assets = n_assets
        self.linear = layer_init(nn.Linear(in_dim, n_assets * N_DISCRETE_ACTIONS), std=0.01)

    def forward(self, z: torch.Tensor, x: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return (self.linear(z).reshape(*z.shape[:-1], self.n_assets, N_DISCRETE_ACTIONS),)

    @staticmethod
    def sample(params: tuple[torch.Tensor, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Gumbel-max sampling with an explicit generator: ``argmax(logits + G)``, ``G = -log(-log U)``."""
        (logits,) = params
        u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-12, 1.0 - 1e-7)
        return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)

    @staticmethod
    def mode(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.argmax(params[0], dim=-1)

    @staticmethod
    def log_prob(params: tuple[torch.Tensor, ...], action: torch.Tensor) -> torch.Tensor:
        logp = log_softmax_actions(params[0])
        return logp.gather(-1, action.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    @staticmethod
    def entropy(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        logp = log_softmax_actions(params[0])
        return -(logp.exp() * logp).sum(-1).sum(-1)

    @staticmethod
    def log_prob_entropy(
        params: tuple[torch.Tensor, ...], action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob, entropy)`` from one log-softmax (the PPO update needs both)."""
        logp = log_softmax_actions(params[0])
        return logp.gather(-1, action.long().unsqueeze(-1)).squeeze(-1).sum(-1), -(logp.exp() * logp).sum(-1).sum(-1)

    @staticmethod
    def probs(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return log_softmax_actions(params[0]).exp()


class GaussianHead(nn.Module):
    """Diagonal Gaussian per asset with a state-independent log std; params = (mean, log_std) ``(n, A)``.

    Optional ``scale_fn(x) -> (n, A)`` multiplies mean and std (the sizer's regime scaling): the action is then
    ``s·u`` with ``u ~ N(μ, σ)``, itself Gaussian ``N(sμ, sσ)``, so log-probabilities stay exact.
    """

    kind = "continuous"

    def __init__(self, in_dim: int, n_assets: int, init_log_std: float, scale_fn: Any = None) -> None:
        super().__init__()
        self.linear = layer_init(nn.Linear(in_dim, n_assets), std=0.01)
        self.log_std = nn.Parameter(torch.full((n_assets,), float(init_log_std)))
        self.scale_fn = scale_fn

    def forward(self, z: torch.Tensor, x: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        mean = self.linear(z)
        log_std = self.log_std.expand_as(mean)
        if self.scale_fn is not None and x is not None:
            scale = self.scale_fn(x)
            mean = mean * scale
            log_std = log_std + torch.log(scale)
        return (mean, log_std)

    @staticmethod
    def sample(params: tuple[torch.Tensor, ...], generator: torch.Generator | None) -> torch.Tensor:
        mean, log_std = params
        return mean + log_std.exp() * torch.randn(mean.shape, generator=generator, device=mean.device)

    @staticmethod
    def mode(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return params[0]

    @staticmethod
    def log_prob(params: tuple[torch.Tensor, ...], action: torch.Tensor) -> torch.Tensor:
        mean, log_std = params
        z = (action - mean) / log_std.exp()
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @staticmethod
    def entropy(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return (params[1] + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)

    @classmethod
    def log_prob_entropy(
        cls, params: tuple[torch.Tensor, ...], action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return cls.log_prob(params, action), cls.entropy(params)

    @staticmethod
    def probs(params: tuple[torch.Tensor, ...]) -> None:
        return None


def make_head(action: str, in_dim: int, n_assets: int, init_log_std: float, scale_fn: Any = None) -> nn.Module:
    if action == "discrete":
        return DiscreteHead(in_dim, n_assets)
    return GaussianHead(in_dim, n_assets, init_log_std, scale_fn)


# ----------------------------------------------------------------------------------------------- actor-critics


class ActorCritic(nn.Module):
    """Base: stateless feed-forward behaviour; recurrent subclasses override the state methods."""

    recurrent = False
    head: nn.Module

    def initial_state(self, n: int) -> Any:
        return None

    def reset_state(self, state: Any, done: torch.Tensor) -> Any:
        return state

    def select_state(self, state: Any, index: torch.Tensor) -> Any:
        return state

    def refresh_state(self, state: Any) -> Any:
        """Recompute derived parts of the state (caches) with the current weights; called at rollout start."""
        return state

    def core(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_step(self, x: torch.Tensor, state: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, Any]:
        z, value = self.core(x)
        return self.head(z, x), value, state

    def forward_sequence(
        self, x: torch.Tensor, state0: Any, episode_starts: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        z, value = self.core(flat)
        return self.head(z, flat), value


class MLPActorCritic(ActorCritic):
    """Separate actor and critic MLPs over the flattened observation (CleanRL ``Agent``)."""

    def __init__(self, spec: ObsSpec, hidden_sizes: tuple[int, ...], activation: str, action: str,
                 init_log_std: float, scale_fn: Any = None) -> None:
        super().__init__()
        sizes = (spec.obs_dim, *hidden_sizes)
        self.actor = mlp(sizes, activation)
        self.critic = nn.Sequential(mlp(sizes, activation), layer_init(nn.Linear(sizes[-1], 1), std=1.0))
        self.head = make_head(action, sizes[-1], spec.n_assets, init_log_std, scale_fn)

    def core(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(x), self.critic(x).squeeze(-1)


class SequenceLSTMActorCritic(ActorCritic):
    """An LSTM over the observation window's bars (the seeds' L3: a 20-bar sequence), re-read at every decision:
    per bar, every asset's features and regime posterior -> LSTM(hidden) -> last hidden state, joined with the
    account -> actor and critic heads. No state crosses decisions, so it trains like a feed-forward policy."""

    def __init__(self, spec: ObsSpec, hidden_size: int, num_layers: int, head_hidden: int, action: str,
                 init_log_std: float, scale_fn: Any = None) -> None:
        super().__init__()
        self.spec = spec
        per_bar = spec.n_assets * (spec.n_features + spec.n_regimes)
        self.lstm = nn.LSTM(per_bar, hidden_size, num_layers=num_layers, batch_first=True)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)
        joined = hidden_size + spec.n_assets * spec.n_account
        self.actor = mlp((joined, head_hidden), "tanh")
        self.critic = nn.Sequential(mlp((joined, head_hidden), "tanh"), layer_init(nn.Linear(head_hidden, 1), std=1.0))
        self.head = make_head(action, head_hidden, spec.n_assets, init_log_std, scale_fn)

    def core(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, regime, account = self.spec.split(x)
        n, w = features.shape[0], features.shape[1]
        bars = torch.cat([features.reshape(n, w, -1), regime.reshape(n, w, -1)], dim=-1)
        out, _ = self.lstm(bars)
        z = torch.cat([out[:, -1], account.reshape(n, -1)], dim=-1)
        return self.actor(z), self.critic(z).squeeze(-1)


class LSTMActorCritic(ActorCritic):
    """Encoder -> multi-layer LSTM -> actor/critic heads; state ``(h, c)`` each ``(layers, n, hidden)``.

    The state is zeroed where an episode starts, both when acting and inside the sequence update (CleanRL
    ``ppo_atari_lstm``), so no information crosses an episode boundary.
    """

    recurrent = True

    def __init__(self, spec: ObsSpec, encoder_size: int, hidden_size: int, num_layers: int, action: str,
                 init_log_std: float) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.encoder = nn.Sequential(layer_init(Linear(spec.obs_dim, encoder_size)), Tanh())
        self.lstm = nn.LSTM(encoder_size, hidden_size, num_layers=num_layers)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1.0)
        self.head = make_head(action, hidden_size, spec.n_assets, init_log_std)

    def initial_state(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(self.num_layers, n, self.hidden_size, device=self.critic.weight.device)
        return (zeros, zeros.clone())

    def reset_state(self, state: Any, done: torch.Tensor) -> Any:
        keep = (~done).to(torch.float32).view(1, -1, 1)
        return (state[0] * keep, state[1] * keep)

    def select_state(self, state: Any, index: torch.Tensor) -> Any:
        return (state[0][:, index], state[1][:, index])

    def forward_step(self, x: torch.Tensor, state: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, Any]:
        out, new_state = self.lstm(self.encoder(x).unsqueeze(0), state)
        z = out.squeeze(0)
        return self.head(z, x), self.critic(z).squeeze(-1), new_state

    def forward_sequence(
        self, x: torch.Tensor, state0: Any, episode_starts: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        n_steps = x.shape[0]
        encoded = self.encoder(x)
        # Split the rollout where any selected environment starts an episode; run each piece in one LSTM call.
        cuts = [0, *[t for t in range(1, n_steps) if bool(episode_starts[t].any())], n_steps]
        h, c = state0
        outputs = []
        for a, b in itertools.pairwise(cuts):
            keep = (~episode_starts[a]).to(torch.float32).view(1, -1, 1)
            out, (h, c) = self.lstm(encoded[a:b], (h * keep, c * keep))
            outputs.append(out)
        z = torch.cat(outputs, 0).reshape(-1, self.hidden_size)
        flat = x.reshape(-1, x.shape[-1])
        return self.head(z, flat), self.critic(z).squeeze(-1)


class _Block(nn.Module):
    """Pre-LN transformer block; attention with an additive mask that also carries a learned relative-position bias."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model))
        self.dropout = dropout

    def qkv_heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h (B, S, d)`` -> q, k, v each ``(B, H, S, d/H)``."""
        b, s, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).reshape(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def finish(self, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, d = h.shape
        drop = self.dropout if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        h = h + self.proj(attn.transpose(1, 2).reshape(b, s, d))
        return h + self.ff(self.ln2(h))


class TransformerActorCritic(ActorCritic):
    """Regime-conditioned causal transformer with sliding-window attention over decision steps.

    token_t = W_f · x_t + E_regime · p_t, where ``p_t`` is the decision bar's regime posterior (a soft regime
    embedding). Every layer attends causally to the last ``context`` steps of the same episode (itself included),
    with a learned relative-position bias b[head, age] (Shaw et al. 2018; the positional encoding over the context),
    so the receptive field is ``n_layers · (context - 1) + 1`` steps. Steps before the episode start are masked.

    Acting uses per-layer key/value caches (one new token per step, O(context) attention). The state also keeps the
    last ``n_layers · (context - 1)`` raw step inputs; the PPO update recomputes the whole rollout from them in one
    banded pass, and :meth:`refresh_state` rebuilds the caches with the current weights at each rollout start, so
    rollout and update compute exactly the same function.
    """

    recurrent = True

    def __init__(self, spec: ObsSpec, d_model: int, n_layers: int, n_heads: int, ff_mult: int, context: int,
                 dropout: float, action: str, init_log_std: float) -> None:
        super().__init__()
        if context < 2:
            raise ValueError("transformer context must be >= 2")
        self.spec = spec
        self.context = context
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_model = d_model
        self.memory = n_layers * (context - 1)  # raw steps kept for exact recomputation
        self.obs_dim = spec.obs_dim
        self.feature_proj = nn.Linear(spec.obs_dim, d_model)
        self.regime_embedding = nn.Linear(spec.n_assets * spec.n_regimes, d_model, bias=False)
        self.rel_bias = nn.Parameter(torch.zeros(n_layers, n_heads, context))
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, ff_mult, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.critic = layer_init(nn.Linear(d_model, 1), std=1.0)
        self.head = make_head(action, d_model, spec.n_assets, init_log_std)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        regime = self.spec.last_regime(x).reshape(*x.shape[:-1], -1)
        return self.feature_proj(x) + self.regime_embedding(regime)

    # state = (raw (n, M, D), raw_valid (n, M), k_cache (L, n, H, C-1, dh), v_cache (L, n, H, C-1, dh))
    def initial_state(self, n: int) -> tuple[torch.Tensor, ...]:
        dh = self.d_model // self.n_heads
        dev = self.critic.weight.device
        cache = torch.zeros(self.n_layers, n, self.n_heads, self.context - 1, dh, device=dev)
        return (torch.zeros(n, self.memory, self.obs_dim, device=dev),
                torch.zeros(n, self.memory, dtype=torch.bool, device=dev), cache,
                cache.clone())

    def reset_state(self, state: Any, done: torch.Tensor) -> Any:
        raw, valid, k, v = state
        return (raw, valid & ~done.view(-1, 1), k, v)

    def select_state(self, state: Any, index: torch.Tensor) -> Any:
        raw, valid, k, v = state
        return (raw[index], valid[index], k[:, index], v[:, index])

    def _banded(self, tokens: torch.Tensor, valid: torch.Tensor, segment: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """All steps of ``tokens (B, S, d)`` at once: query q attends key j iff q-C < j <= q, same segment, valid."""
        s = tokens.shape[1]
        dev = tokens.device
        pos = torch.arange(s, device=dev)
        age = pos.view(-1, 1) - pos.view(1, -1)  # (S, S) query - key
        in_band = (age >= 0) & (age < self.context)
        allowed = in_band & (segment.unsqueeze(2) == segment.unsqueeze(1)) & valid.unsqueeze(1)
        allowed = allowed | torch.eye(s, dtype=torch.bool, device=dev)  # never an empty row (invalid rows are unused)
        base = torch.zeros(allowed.shape, dtype=tokens.dtype, device=dev).masked_fill_(~allowed, _MASKED).unsqueeze(1)
        age_idx = age.clamp(0, self.context - 1)
        h = tokens
        ks, vs = [], []
        for layer, block in enumerate(self.blocks):
            bias = self.rel_bias[layer][:, age_idx]  # (H, S, S)
            q, k, v = block.qkv_heads(h)
            ks.append(k)
            vs.append(v)
            h = block.finish(h, q, k, v, base + bias.unsqueeze(0))
        return self.ln_f(h), ks, vs

    def refresh_state(self, state: Any) -> Any:
        """Rebuild the key/value caches from the raw step memory with the current weights."""
        raw, valid, _, _ = state
        c1 = self.context - 1
        segment = torch.zeros(valid.shape, dtype=torch.int64, device=valid.device)
        _, ks, vs = self._banded(self.embed(raw), valid, segment)
        return (raw, valid, torch.stack([k[:, :, -c1:] for k in ks]), torch.stack([v[:, :, -c1:] for v in vs]))

    def forward_step(self, x: torch.Tensor, state: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, Any]:
        raw, valid, k_cache, v_cache = state
        c1 = self.context - 1
        key_valid = torch.cat([valid[:, valid.shape[1] - c1:], torch.ones_like(valid[:, :1])], dim=1)  # (n, C)
        mask = torch.zeros(key_valid.shape, dtype=x.dtype, device=x.device).masked_fill_(~key_valid, _MASKED).view(-1, 1, 1, self.context)
        ages = torch.arange(self.context - 1, -1, -1, device=x.device)  # cache slot i holds the step of age C-1-i; self has age 0
        h = self.embed(x).unsqueeze(1)  # (n, 1, d)
        new_k, new_v = [], []
        for layer, block in enumerate(self.blocks):
            q, k, v = block.qkv_heads(h)
            keys = torch.cat([k_cache[layer], k], dim=2)
            values = torch.cat([v_cache[layer], v], dim=2)
            bias = self.rel_bias[layer][:, ages].view(1, self.n_heads, 1, self.context)
            h = block.finish(h, q, keys, values, mask + bias)
            new_k.append(keys[:, :, 1:])
            new_v.append(values[:, :, 1:])
        z = self.ln_f(h[:, 0])
        new_state = (
            torch.cat([raw[:, 1:], x.unsqueeze(1)], dim=1),
            torch.cat([valid[:, 1:], torch.ones_like(valid[:, :1])], dim=1),
            torch.stack(new_k),
            torch.stack(new_v),
        )
        return self.head(z, x), self.critic(z).squeeze(-1), new_state

    def forward_sequence(
        self, x: torch.Tensor, state0: Any, episode_starts: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        n_steps, n = x.shape[:2]
        raw0, valid0, _, _ = state0
        m = self.memory
        tokens = torch.cat([self.embed(raw0), self.embed(x).transpose(0, 1)], dim=1)  # (n, M+T, d)
        segment = torch.cat([torch.zeros(n, m, dtype=torch.int64, device=x.device),
                             torch.cumsum(episode_starts.to(torch.int64), dim=0).transpose(0, 1)], dim=1)
        valid = torch.cat([valid0, torch.ones(n, n_steps, dtype=torch.bool, device=x.device)], dim=1)
        z, _, _ = self._banded(tokens, valid, segment)
        z = z[:, m:].transpose(0, 1).reshape(n_steps * n, -1)  # back to (T, n) order
        flat = x.reshape(-1, x.shape[-1])
        return self.head(z, flat), self.critic(z).squeeze(-1)


def window_correlations(series: torch.Tensor) -> torch.Tensor:
    """Pearson correlation across assets over the window: ``series (n, W, A)`` -> upper triangle ``(n, A(A-1)/2)``.

    ρ_ij = Σ_w (a_iw - ā_i)(a_jw - ā_j) / sqrt(Σ_w (a_iw - ā_i)² Σ_w (a_jw - ā_j)²); 0 when W < 2 or a series is flat.
    """
    n, w, a = series.shape
    iu = torch.triu_indices(a, a, offset=1, device=series.device)
    if w < 2 or a < 2:
        return torch.zeros(n, iu.shape[1], dtype=series.dtype, device=series.device)
    centred = series - series.mean(1, keepdim=True)
    cov = torch.einsum("nwi,nwj->nij", centred, centred)
    var = torch.diagonal(cov, dim1=1, dim2=2)
    denom = torch.sqrt(var.unsqueeze(2) * var.unsqueeze(1)).clamp_min(1e-12)
    corr = torch.where(denom > 1e-10, cov / denom, torch.zeros_like(cov))
    return corr[:, iu[0], iu[1]]


class MultiAssetActorCritic(ActorCritic):
    """Joint BTC/ETH/SOL policy: a shared per-asset encoder (with a learned asset embedding), a joint state from
    the mean over assets plus cross-asset window correlations, and per-asset action outputs."""

    def __init__(self, spec: ObsSpec, asset_hidden: int, joint_hidden: int, correlation_feature: int, action: str,
                 init_log_std: float) -> None:
        super().__init__()
        if correlation_feature >= spec.n_features:
            raise ValueError(f"correlation_feature {correlation_feature} >= n_features {spec.n_features}")
        self.spec = spec
        self.correlation_feature = correlation_feature
        per_asset = spec.window * (spec.n_features + spec.n_regimes) + spec.n_account
        n_pairs = spec.n_assets * (spec.n_assets - 1) // 2
        self.asset_encoder = mlp((per_asset, asset_hidden), "tanh")
        self.asset_embedding = nn.Parameter(torch.zeros(spec.n_assets, asset_hidden))
        nn.init.normal_(self.asset_embedding, std=0.1)
        self.joint = mlp((asset_hidden + n_pairs, joint_hidden), "tanh")
        self.asset_trunk = mlp((asset_hidden + joint_hidden, asset_hidden), "tanh")
        self.critic = nn.Sequential(mlp((joint_hidden, joint_hidden), "tanh"), layer_init(nn.Linear(joint_hidden, 1), std=1.0))
        # per-asset head: shared weights over assets -> one output set per asset
        self.head = make_head(action, asset_hidden, 1, init_log_std)

    def core(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, regime, account = self.spec.split(x)
        n, _w, a, _ = features.shape
        per_asset = torch.cat(
            [features.permute(0, 2, 1, 3).reshape(n, a, -1), regime.permute(0, 2, 1, 3).reshape(n, a, -1), account],
            dim=-1,
        )
        h = self.asset_encoder(per_asset) + self.asset_embedding  # (n, A, H)
        corr = window_correlations(features[..., self.correlation_feature])
        joint = self.joint(torch.cat([h.mean(1), corr], dim=-1))  # (n, J)
        z = self.asset_trunk(torch.cat([h, joint.unsqueeze(1).expand(n, a, joint.shape[-1])], dim=-1))  # (n, A, H)
        return z, self.critic(joint).squeeze(-1)

    def forward_step(self, x: torch.Tensor, state: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, Any]:
        z, value = self.core(x)
        return self._heads(z, x), value, state

    def forward_sequence(
        self, x: torch.Tensor, state0: Any, episode_starts: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        z, value = self.core(flat)
        return self._heads(z, flat), value

    def _heads(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # head over (n, A, H) with n_assets=1 gives (n, A, 1, 3) or (n, A, 1): drop the singleton asset axis.
        return tuple(p.squeeze(-2) if p.ndim == z.ndim + 1 else p.squeeze(-1) for p in self.head(z, x))


class RegimeScale:
    """``x -> s (n, A)`` with ``s = Σ_r P(r | bar t) · scales[r]`` (the sizer's regime scaling). A plain class (not
    a closure, not a module): picklable for worker processes, and no entry in the state dict."""

    def __init__(self, spec: ObsSpec, scales: tuple[float, ...]) -> None:
        self.spec = spec
        self.table = torch.tensor(scales, dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        posterior = self.spec.last_regime(x)
        total = posterior.sum(-1, keepdim=True).clamp_min(1e-6)
        return ((posterior / total) * self.table.to(posterior.device)).sum(-1).clamp_min(1e-3)


def regime_scale_fn(spec: ObsSpec, scales: tuple[float, ...]) -> Any:
    """The sizer's regime scaling (:class:`RegimeScale`)."""
    return RegimeScale(spec, scales)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy view of a float32 NumPy array as a tensor (copies only when dtype or layout demand it)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def observation_tensor(obs: Any, device: torch.device | None = None) -> torch.Tensor:
    """Flattened observation ``(N, D)`` float32 on ``device`` (the :func:`~himari.env.protocol.flatten_observation`
    layout) from NumPy arrays or from tensors (``TorchSimVecEnv``, which stay on their device: no host copy)."""
    if isinstance(obs.features, torch.Tensor):
        n = obs.features.shape[0]
        flat = torch.cat([obs.features.reshape(n, -1), obs.regime.reshape(n, -1), obs.account.reshape(n, -1)], dim=1)
        return flat.to(device=device, dtype=torch.float32)
    from himari.env.protocol import flatten_observation

    x = to_tensor(flatten_observation(obs))
    return x if device is None or device.type == "cpu" else x.to(device, non_blocking=True)
