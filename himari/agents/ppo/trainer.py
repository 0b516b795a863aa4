"""The one PPO trainer shared by every PPO policy (CleanRL ``ppo.py`` / SB3 ``PPO`` structure).

Loop per update ``u``::

    collect T steps from the vectorized env into (T, N) storage   (torch.inference_mode, zero-copy numpy<->torch)
    advantages, returns = GAE(λ)  (bootstrap V(final_obs) at truncation, none at termination)
    for epoch in n_epochs, for minibatch:
        ratio = exp(log π_θ(a|s) - log π_rollout(a|s))
        L = -E[min(ratio·Â, clip(ratio, 1±ε)·Â)] + c_v·L_V(clipped) - c_e(u)·H[π_θ]
        Adam step with global grad-norm clipping, LR(u) linear schedule
    every eval_every updates: evaluate on the *validation* env (model selection / early stopping only)
    every checkpoint_every updates: atomic checkpoint

Reproducibility: at every checkpoint boundary (``u % checkpoint_every == 0``) the training env is reset with a seed
derived from (seed, u), recurrent state is re-initialized and the sampling/minibatch generators are re-seeded. A run
resumed from a checkpoint therefore continues bit-identically to an uninterrupted run on CPU.

Extension: resuming a finished run with a larger ``total_steps`` (everything else equal) continues from its final
checkpoint (weights, optimizer, observation normalizer, best validation score) up to the new total. The learning-rate
and entropy schedules are functions of ``update / num_updates``, so they are stretched over the new total and jump
back up where the extension starts: an extended run is not the run trained for the new total from the start.
Early stopping starts afresh; the selected policy is the best on validation over both parts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from himari.agents.ppo.augment import ObservationAugmenter
from himari.agents.ppo.buffer import RolloutBuffer
from himari.agents.ppo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.device import is_tensor_env, resolve_device
from himari.agents.ppo.gae import compute_gae, compute_gae_torch
from himari.agents.ppo.methods.base import TrainingMethod
from himari.agents.ppo.metrics_log import MetricsLogger
from himari.agents.ppo.networks import ObsSpec, observation_tensor
from himari.agents.ppo.policies import PPOPolicy
from himari.config import config_hash
from himari.env.protocol import VecEnv
from himari.errors import ConfigError, RunDirError
from himari.utils.progress import progress_bar
from himari.utils.threads import configure_torch_threads


@dataclass
class TrainResult:
    """Summary of a training run (``history`` holds one metrics dict per update)."""

    global_step: int
    updates: int
    best_metric: float | None
    best_update: int | None
    stopped_early: bool
    wall_s: float
    steps_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)


EVAL_SEED_STREAM = 1 << 40  # seed-sequence key of the validation runs (disjoint from update indices)
METHOD_SEED_STREAM = 1 << 41  # seed-sequence key of the training methods' own draws (+ update index)
METHOD_PREFIX = "method."  # checkpoint weight keys of the training methods' own state
METHOD_FIELDS = ("curriculum", "meta", "aux", "adversarial", "augment", "rare_events")  # PPOConfig method sections

# A callback receives (trainer, metrics of the update) and returns False to stop training.
Callback = Callable[["PPOTrainer", dict[str, Any]], bool | None]


def _host(x: Any) -> np.ndarray:
    """A NumPy view/copy of an environment output (NumPy array or tensor on any device)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def derived_seeds(seed: int, update: int, n: int = 3) -> list[int]:
    """Independent 31-bit seeds for update ``update`` of a run seeded ``seed``."""
    state = np.random.SeedSequence([int(seed), int(update)]).generate_state(n, dtype=np.uint32)
    return [int(s) & 0x7FFFFFFF for s in state]


@torch.inference_mode()
def evaluate_policy(
    policy: PPOPolicy, env: VecEnv, steps: int | None, seed: int, deterministic: bool = True
) -> dict[str, float]:
    """Run ``policy`` on ``env`` (reset with ``seed``) for ``steps`` steps, frozen normalizer, no learning.

    ``steps=None``: the shortest episode of the freshly reset env (``env.state.length``, as in
    ``SimVecEnv.for_evaluation``, whose chunks together cover the validation window once).
    Returns ``mean_reward`` (per env-step), ``mean_return`` (summed reward per env over the run), finished
    episodes and their mean return.
    """
    obs = env.reset(seed=seed)
    if steps is None:
        lengths = getattr(getattr(env, "state", None), "length", None)
        if lengths is None:
            raise ConfigError("evaluate_policy: steps=None needs an env exposing state.length (e.g. SimVecEnv)")
        steps = int(np.min(lengths))
    state = policy.initial_state(env.num_envs)
    total = np.zeros(env.num_envs, dtype=np.float64)
    running = np.zeros(env.num_envs, dtype=np.float64)
    finished: list[float] = []
    generator = torch.Generator().manual_seed(seed)
    if policy.device.type != "cpu":
        generator = torch.Generator(device=policy.device).manual_seed(seed)
    for _ in range(steps):
        out, state = policy.act(obs, state, deterministic=deterministic, generator=generator)
        result = env.step(out.action)
        reward = _host(result.reward).astype(np.float64)
        total += reward
        running += reward
        done = _host(result.terminated).astype(bool) | _host(result.truncated).astype(bool)
        if done.any():
            finished.extend(running[done].tolist())
            running[done] = 0.0
            state = policy.reset_state(state, done)
        obs = result.obs
    return {
        "mean_reward": float(total.mean() / steps),
        "mean_return": float(total.mean()),
        "episodes": float(len(finished)),
        "mean_episode_return": float(np.mean(finished)) if finished else float("nan"),
    }


class PPOTrainer:
    """Train a :class:`PPOPolicy` on a :class:`VecEnv` with PPO.

    ``eval_env`` is the validation-window env (never the test window): used for model selection (the best
    evaluation's weights are restored at the end and saved to ``RUN/best_policy``) and early stopping.
    ``run_config`` is the caller's resolved config (data, windows, env); its hash guards ``resume``.

    Device (``PPOConfig.device``): the policy, rollout storage, GAE and update run there. With a tensor environment
    (``TorchSimVecEnv``, see :func:`himari.agents.ppo.device.make_training_env`) on the same device the rollout
    makes no host round trip of its own: the truncation bootstrap is evaluated for every environment and masked
    instead of branching on ``truncated.any()``, and rollout statistics stay on the device until the rollout
    ends. With a NumPy environment observations are copied to the device each step. At the end of
    :meth:`train` the policy is moved back to the CPU (backtests, serving and saving use it there).
    """

    def __init__(
        self,
        policy: PPOPolicy,
        env: VecEnv,
        config: PPOConfig,
        *,
        seed: int = 0,
        eval_env: VecEnv | None = None,
        run_dir: str | Path | None = None,
        run_config: dict[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool | None = None,
        tensorboard: bool = True,
        description: str | None = None,
        methods: Sequence[TrainingMethod] = (),
    ) -> None:
        spec = ObsSpec.from_env(env)
        if spec != policy.spec:
            raise ConfigError(f"policy expects observations {policy.spec}, the environment gives {spec}")
        if policy.action_kind != env.action_kind:
            raise ConfigError(f"{policy.kind} policy acts {policy.action_kind!r}, environment expects {env.action_kind!r}")
        self.tensor_env = is_tensor_env(env)
        if config.device == "auto" and self.tensor_env:
            self.device = env.device  # type: ignore[attr-defined]
        else:
            self.device = resolve_device(config.device)
        if self.tensor_env and env.device != self.device:  # type: ignore[attr-defined]
            raise ConfigError(f"PPOConfig.device is {self.device} but the environment lives on {env.device}; "  # type: ignore[attr-defined]
                              "build it with make_training_env(..., device=...)")
        # sync-free rollout (no per-step host round trip) with tensor environments or off the CPU
        self.on_device = self.tensor_env or self.device.type != "cpu"
        policy.module.to(self.device)
        self.policy = policy
        self.env = env
        self.eval_env = eval_env
        self.config = config
        self.seed = int(seed)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.description = description or f"ppo {policy.kind}"
        self.num_envs = int(env.num_envs)
        self.num_updates = config.num_updates(self.num_envs)
        self.batch_size = config.batch_size(self.num_envs)
        self.methods = list(methods)  # optional training methods (himari.agents.ppo.methods), hooks below
        hashed = {"ppo": {k: v for k, v in config.to_dict().items()  # same run on any device; methods off: as before
                          if k != "device" and not (k in (*METHOD_FIELDS, "obs_augment", "synthetic") and v is None)},
                  "policy": policy.metadata()["config"], "kind": policy.kind,
                  "obs_spec": policy.spec.to_dict(), "seed": self.seed, "run": run_config or {}}
        self.config_hash = config_hash(hashed)
        # the same run but for its budget: a finished run may be extended to a larger total_steps
        self.extend_hash = config_hash({**hashed, "ppo": {k: v for k, v in hashed["ppo"].items() if k != "total_steps"}})
        self.extended_from: int | None = None  # global step of the run this one extends
        self.logger = MetricsLogger(self.run_dir, tensorboard=tensorboard)
        self._params = [p for p in policy.module.parameters() if p.requires_grad]
        self._params += [p for m in self.methods for p in m.parameters()]
        self.optimizer = torch.optim.Adam(
            self._params, lr=config.learning_rate, eps=config.adam_eps, foreach=True
        )
        action_shape = (spec.n_assets,)
        action_dtype = torch.int64 if policy.action_kind == "discrete" else torch.float32
        self.buffer = RolloutBuffer(config.n_steps, self.num_envs, spec.obs_dim, action_shape, action_dtype, self.device)
        self.sample_gen = torch.Generator(device=self.device)
        # online observation augmentation (PPOConfig.obs_augment; identity when off)
        self.augment = ObservationAugmenter(config.obs_augment, (spec.window, spec.n_assets, spec.n_features), self.seed,
                                            self.device)
        self.batch_gen = torch.Generator()
        # early stopping / model selection
        self.best_metric: float | None = None
        self.best_update: int | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.global_step = 0
        self.next_update = 0
        self._best_state: dict[str, torch.Tensor] | None = None
        # rollout carry-over
        self._obs_raw: torch.Tensor | None = None
        self._state: Any = None
        self._episode_start: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------------ schedules
    def learning_rate_at(self, update: int) -> float:
        frac = update / max(1, self.num_updates)
        c = self.config
        return c.learning_rate * (1.0 - frac * (1.0 - c.lr_final_fraction))

    def ent_coef_at(self, update: int) -> float:
        frac = update / max(1, self.num_updates)
        return self.config.ent_coef + frac * (self.config.ent_coef_final - self.config.ent_coef)

    # ------------------------------------------------------------------------------------------ rollout
    def _boundary_reset(self, update: int) -> None:
        env_seed, sample_seed, batch_seed = derived_seeds(self.seed, update)
        obs = self.env.reset(seed=env_seed)
        self._obs_raw = observation_tensor(obs, self.device)
        self._state = self.policy.net.initial_state(self.num_envs)
        self._episode_start = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self.sample_gen.manual_seed(sample_seed)
        self.augment.reseed(sample_seed)
        self.batch_gen.manual_seed(batch_seed)
        for i, method in enumerate(self.methods):
            method.reseed(derived_seeds(self.seed, METHOD_SEED_STREAM + update, len(self.methods))[i])

    def collect_rollout(self) -> dict[str, float]:
        """Fill the buffer with ``n_steps`` transitions; returns rollout statistics."""
        policy, net, buf, env = self.policy, self.policy.net, self.buffer, self.env
        head = net.head
        with torch.no_grad():
            self._state = net.refresh_state(self._state)  # caches recomputed with the current weights
        buf.state0 = _clone_state(self._state)
        dev = self.device
        rewards_sum = torch.zeros((), dtype=torch.float64, device=dev)
        episodes_done = torch.zeros((), dtype=torch.int64, device=dev)
        to_env = policy.env_action_tensor if self.tensor_env else policy.env_action
        with torch.inference_mode():
            state = self._state
            obs_raw = self._obs_raw
            assert obs_raw is not None and self._episode_start is not None
            episode_start = self._episode_start
            raw_seen = torch.empty((buf.n_steps, *obs_raw.shape), dtype=torch.float32, device=dev)
            for t in range(buf.n_steps):
                for method in self.methods:
                    method.before_env_step(self, t)
                raw_seen[t] = obs_raw
                x = policy.obs_norm(self.augment(obs_raw))
                params, value, state = net.forward_step(x, state)
                action = head.sample(params, self.sample_gen)
                buf.obs[t] = x
                buf.actions[t] = action
                buf.log_probs[t] = head.log_prob(params, action)
                buf.values[t] = value
                buf.episode_starts[t] = episode_start
                result = env.step(to_env(action))
                reward = torch.as_tensor(result.reward, dtype=torch.float32, device=dev)
                terminated = torch.as_tensor(result.terminated, dtype=torch.bool, device=dev)
                truncated = torch.as_tensor(result.truncated, dtype=torch.bool, device=dev)
                buf.rewards[t] = reward
                buf.terminated[t] = terminated
                buf.truncated[t] = truncated
                if self.on_device:  # bootstrap value for every env, kept where truncated: no host sync
                    final_raw = observation_tensor(result.final_obs, dev)
                    _, final_value, _ = net.forward_step(policy.obs_norm(final_raw), state)
                    buf.next_values[t] = torch.where(truncated, final_value, torch.zeros_like(final_value))
                elif bool(truncated.any()):
                    idx = torch.nonzero(truncated).squeeze(-1)
                    final_raw = observation_tensor(result.final_obs, dev)[idx]
                    _, final_value, _ = net.forward_step(policy.obs_norm(final_raw), net.select_state(state, idx))
                    buf.next_values[t].zero_()
                    buf.next_values[t, idx] = final_value
                else:
                    buf.next_values[t].zero_()
                done = terminated | truncated
                rewards_sum += reward.sum(dtype=torch.float64)
                episodes_done += done.sum()
                state = net.reset_state(state, done)
                episode_start = done
                obs_raw = observation_tensor(result.obs, dev)
            # bootstrap value of the observation after the rollout (state is not advanced by this look-ahead)
            _, last_value, _ = net.forward_step(policy.obs_norm(obs_raw), state)
            self._state, self._obs_raw, self._episode_start = state, obs_raw, episode_start
        # V(s_{t+1}) where the episode continued
        continues = ~(buf.truncated | buf.terminated)
        following = torch.cat([buf.values[1:], last_value.unsqueeze(0)], dim=0)
        buf.next_values.copy_(torch.where(continues, following, buf.next_values))
        gae_args = (buf.rewards, buf.values, buf.next_values, buf.terminated, buf.truncated)
        if self.on_device:
            advantages_t, returns_t = compute_gae_torch(*gae_args, self.config.gamma, self.config.gae_lambda)
            buf.advantages.copy_(advantages_t)
            buf.returns.copy_(returns_t)
        else:
            advantages, returns = compute_gae(
                *(a.numpy() for a in gae_args), self.config.gamma, self.config.gae_lambda
            )
            buf.advantages.copy_(torch.from_numpy(advantages))
            buf.returns.copy_(torch.from_numpy(returns))
        # Normalizer statistics absorb this rollout's raw observations only after it was collected, so stored
        # (normalized) observations are exactly what the policy acted on.
        if self.config.normalize_observations:
            policy.obs_norm.update(raw_seen.reshape(-1, raw_seen.shape[-1]))
        return {
            "rollout_mean_reward": float(rewards_sum) / (buf.n_steps * self.num_envs),
            "rollout_episodes": float(episodes_done),
        }

    # ------------------------------------------------------------------------------------------ update
    def update(self, update_index: int) -> dict[str, float]:
        c = self.config
        net, buf = self.policy.net, self.buffer
        head = net.head
        lr = self.learning_rate_at(update_index)
        ent_coef = self.ent_coef_at(update_index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.policy.module.train()
        # statistics stay tensors until the update ends (no host sync per minibatch unless target_kl needs one)
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clip_frac", "ratio_dev")
        }
        stop = False
        for _ in range(c.n_epochs):
            if net.recurrent:
                batches = buf.sequence_minibatches(c.n_minibatches, self.batch_gen, net.select_state)
            else:
                batches = buf.flat_minibatches(c.n_minibatches, self.batch_gen)
            for mb in batches:
                mb_obs = mb.obs
                for method in self.methods:
                    mb_obs = method.minibatch_obs(self, mb_obs, mb)
                params, new_value = net.forward_sequence(mb_obs, mb.state0, mb.episode_starts)
                actions = mb.actions.reshape(-1, *mb.actions.shape[-1:])
                new_logp, entropy_per_sample = head.log_prob_entropy(params, actions)
                old_logp = mb.log_probs.reshape(-1)
                log_ratio = new_logp - old_logp
                ratio = log_ratio.exp()
                adv = mb.advantages.reshape(-1)
                if c.normalize_advantages and adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - c.clip_coef, 1 + c.clip_coef)).mean()
                returns = mb.returns.reshape(-1)
                if c.clip_value:
                    old_v = mb.values.reshape(-1)
                    v_clipped = old_v + torch.clamp(new_value - old_v, -c.clip_coef, c.clip_coef)
                    v_loss = 0.5 * torch.max((new_value - returns).square(), (v_clipped - returns).square()).mean()
                else:
                    v_loss = 0.5 * (new_value - returns).square().mean()
                entropy = entropy_per_sample.mean()
                loss = pg_loss - ent_coef * entropy + c.vf_coef * v_loss
                for method in self.methods:
                    extra = method.extra_loss(self)
                    if extra is not None:
                        loss = loss + extra
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self._params, c.max_grad_norm, foreach=True)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    stats["pg_loss"].append(pg_loss.detach())
                    stats["v_loss"].append(v_loss.detach())
                    stats["entropy"].append(entropy.detach())
                    stats["approx_kl"].append(approx_kl)
                    stats["clip_frac"].append(((ratio - 1).abs() > c.clip_coef).float().mean())
                    stats["ratio_dev"].append((ratio - 1).abs().max())
                if c.target_kl is not None and float(approx_kl) > c.target_kl:
                    stop = True
                    break
            if stop:
                break
        self.policy.module.eval()
        values, returns = buf.values.reshape(-1), buf.returns.reshape(-1)
        var_ret = float(returns.var())
        explained = float("nan") if var_ret == 0 else 1.0 - float((returns - values).var()) / var_ret
        host = {k: torch.stack(v).cpu().tolist() for k, v in stats.items()}
        out = {k: float(np.mean(v)) for k, v in host.items() if k != "ratio_dev"}
        out["ratio_max_dev"] = float(np.max(host["ratio_dev"]))
        out.update(learning_rate=lr, ent_coef=ent_coef, explained_variance=explained)
        for method in self.methods:
            out.update(method.metrics())
        return out

    # ------------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_root(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints"

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "next_update": self.next_update,
            "global_step": self.global_step,
            "best_metric": self.best_metric,
            "best_update": self.best_update,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "config_hash": self.config_hash,
            "extend_hash": self.extend_hash,
            "num_updates": self.num_updates,
        }

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_root is None:
            return None
        weights = self.policy.state_dict()
        for method in self.methods:  # e.g. auxiliary heads, saved and restored with the policy
            weights.update({f"{METHOD_PREFIX}{method.name}.{k}": v for k, v in method.state_dict().items()})
        return save_checkpoint(
            self.checkpoint_root, self.next_update, weights, self.optimizer.state_dict(), self._trainer_state(),
        )

    def restore(self) -> bool:
        """Load the latest checkpoint of ``run_dir``; False when there is none. Refuses another config."""
        if self.checkpoint_root is None:
            raise RunDirError("resume needs a run directory")
        directory = latest_checkpoint(self.checkpoint_root)
        if directory is None:
            return False
        weights, optimizer_state, state = load_checkpoint(directory)
        extending = state.get("config_hash") != self.config_hash and state.get("extend_hash") == self.extend_hash
        if extending and int(state["next_update"]) > self.num_updates:
            raise RunDirError(
                f"{directory}: the run already trained {state['global_step']} steps ({state['next_update']} updates); "
                f"total_steps {self.config.total_steps} gives only {self.num_updates} updates: give more steps to "
                "extend it"
            )
        if state.get("config_hash") != self.config_hash and not extending:
            raise RunDirError(
                f"{directory}: checkpoint was written with config {state.get('config_hash')}, this run's config is "
                f"{self.config_hash}; resume with the same config or use a new --out"
            )
        for method in self.methods:
            prefix = f"{METHOD_PREFIX}{method.name}."
            method.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
        self.policy.load_state_dict({k: v for k, v in weights.items() if not k.startswith(METHOD_PREFIX)})
        self.optimizer.load_state_dict(optimizer_state)
        self.next_update = int(state["next_update"])
        self.global_step = int(state["global_step"])
        self.best_metric = state["best_metric"]
        self.best_update = state["best_update"]
        self.bad_evals = int(state["bad_evals"])
        self.stopped_early = bool(state["stopped_early"])
        if extending:  # more steps were asked for: early stopping starts afresh, the best so far stays the reference
            self.extended_from = self.global_step
            self.stopped_early, self.bad_evals = False, 0
        best_dir = self.run_dir / "best_policy" if self.run_dir is not None else None
        if self.best_update is not None and best_dir is not None and (best_dir / "weights.safetensors").exists():
            self._best_state = type(self.policy).load(best_dir).state_dict()
        self.logger.truncate_after(self.next_update)
        return True

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float] | None:
        if self.eval_env is None:
            return None
        steps = self.config.eval_steps
        if steps is None and getattr(getattr(self.eval_env, "state", None), "length", None) is None:
            steps = self.config.n_steps
        return evaluate_policy(self.policy, self.eval_env, steps, seed=derived_seeds(self.seed, EVAL_SEED_STREAM)[0])

    def _select(self, metrics: dict[str, float], update: int) -> None:
        value = metrics["mean_reward"]
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_update, self.bad_evals = value, update, 0
            self._best_state = self.policy.state_dict()
            if self.run_dir is not None:
                self.policy.save(self.run_dir / "best_policy")
        else:
            self.bad_evals += 1
            patience = self.config.early_stop_patience
            if patience is not None and self.bad_evals >= patience:
                self.stopped_early = True

    # ------------------------------------------------------------------------------------------ main loop
    def train(self, resume: bool = False) -> TrainResult:
        configure_torch_threads(self.config.torch_threads)
        self.policy.module.to(self.device)
        if resume:
            self.restore()
        elif self.checkpoint_root is not None and latest_checkpoint(self.checkpoint_root) is not None:
            raise RunDirError(f"{self.run_dir}: holds checkpoints of an earlier run; pass resume or use a new --out")
        history: list[dict[str, Any]] = []
        evaluations: list[dict[str, Any]] = []
        start_update = self.next_update
        start_time = time.perf_counter()
        steps_this_session = 0
        c = self.config
        with progress_bar(self.description, total=self.num_updates * self.batch_size, enabled=self.progress) as bar:
            bar.advance(self.global_step)
            update = start_update
            while update < self.num_updates and not self.stopped_early:
                for method in self.methods:
                    method.start_update(self, update)
                if update % c.checkpoint_every_updates == 0 or (update == start_update and self.extended_from is not None):
                    self._boundary_reset(update)  # an extension starts from the final (maybe mid-period) checkpoint
                elif update == start_update:  # checkpoints are only written at boundaries (or when finished)
                    raise RunDirError(f"cannot resume at update {update}: not a checkpoint boundary")
                t0 = time.perf_counter()
                metrics: dict[str, Any] = {"update": update}
                metrics.update(self.collect_rollout())
                metrics.update(self.update(update))
                self.global_step += self.batch_size
                steps_this_session += self.batch_size
                elapsed = time.perf_counter() - start_time
                metrics["global_step"] = self.global_step
                metrics["steps_per_s"] = steps_this_session / max(elapsed, 1e-9)
                metrics["update_s"] = time.perf_counter() - t0
                self.next_update = update + 1
                last = self.next_update == self.num_updates
                if self.eval_env is not None and (self.next_update % c.eval_every_updates == 0 or last):
                    evaluation = self.evaluate()
                    assert evaluation is not None
                    self._select(evaluation, update)
                    evaluations.append({"update": update, "global_step": self.global_step, **evaluation})
                    metrics.update({f"val_{k}": v for k, v in evaluation.items()})
                for callback in self.callbacks:
                    if callback(self, metrics) is False:
                        self.stopped_early = True
                self.logger.log(metrics, self.global_step)
                history.append(metrics)
                if self.next_update % c.checkpoint_every_updates == 0 or last or self.stopped_early:
                    self.save_checkpoint()
                bar.advance(
                    self.batch_size,
                    info=f"{metrics['steps_per_s']:,.0f} steps/s r={metrics['rollout_mean_reward']:+.5f} "
                    f"kl={metrics['approx_kl']:.4f} clip={metrics['clip_frac']:.2f}"
                    + (f" val={self.best_metric:+.5f}" if self.best_metric is not None else ""),
                )
                update += 1
        wall = time.perf_counter() - start_time
        if self._best_state is not None:
            self.policy.load_state_dict(self._best_state)  # model selection on validation
        self.policy.module.to("cpu")
        self.logger.close()
        return TrainResult(
            global_step=self.global_step,
            updates=self.next_update,
            best_metric=self.best_metric,
            best_update=self.best_update,
            stopped_early=self.stopped_early,
            wall_s=wall,
            steps_per_s=steps_this_session / max(wall, 1e-9) if steps_this_session else math.nan,
            history=history,
            evaluations=evaluations,
        )


def _clone_state(state: Any) -> Any:
    """A normal (non-inference) copy of a recurrent state, usable in the autograd update."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.clone()
    return type(state)(_clone_state(s) for s in state)


def transfer_weights(source: PPOPolicy, target: PPOPolicy) -> None:
    """Copy network weights from ``source`` (e.g. synthetic pre-training) into ``target`` (fine-tuning).

    The observation normalizer is *not* copied: the fine-tuning run fits its own on its training data.
    """
    if source.kind != target.kind or source.spec != target.spec or source.config != target.config:
        raise ConfigError(
            f"cannot transfer weights: {source.kind}/{source.spec} vs {target.kind}/{target.spec} "
            "(same kind, observation layout and network config needed)"
        )
    target.net.load_state_dict(source.net.state_dict())
