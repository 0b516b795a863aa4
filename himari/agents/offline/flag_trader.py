"""FLAG-TRADER: a GPT-2-class causal transformer with LoRA adapters, trained on BUY/HOLD/SELL labels.

After Xiong et al., 2025 ("FLAG-Trader: Fusion LLM-Agent with Gradient-based Reinforcement Learning for Financial
Trading"): a (possibly pretrained) GPT-2 backbone is kept frozen and adapted with LoRA (Hu et al., 2021; rank 16,
``W' = W + (α/r) B A`` on the attention and MLP projections), with a trainable input projection of each bar's
features + regime posterior into the embedding space and a policy head on the decision bar's hidden state::

    h_{1..W} = GPT2(inputs_embeds = P x_{t-W+1..t}),     p(a | x) = softmax(H h_W)

GPT-2 attention is causal, so ``h_j`` depends on bars ``<= j`` of the window only: no later bar can reach a
decision, whereas bidirectional attention over a window would let a position see the bars its label is computed
from (``tests/agents/offline/test_causal_masks.py`` checks causality).

By default the backbone is a small randomly initialised GPT-2 configuration suitable for CPU (d=64, 2 layers,
4 heads, context 64). ``pretrained_path`` loads real GPT-2 weights from a local directory (``GPT2Model
.from_pretrained(path, local_files_only=True)``, e.g. GPT-2 small: d=768, 12 layers, 12 heads; its dimensions
replace the config's) — nothing is downloaded. Requires the ``llm`` extra (``transformers`` and ``peft``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from himari.agents.base import PolicyOutput
from himari.agents.offline.classifier import probs_to_output
from himari.agents.offline.common import N_ACTIONS, TorchPolicyMixin, bar_inputs, softmax_np
from himari.config import FrozenConfig
from himari.env.protocol import Observation
from himari.errors import ConfigError
from himari.utils.seeding import make_rng

LORA_TARGETS: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")


class FlagTraderConfig(FrozenConfig):
    n_inputs: int = Field(ge=1)  # F + R per bar
    context: int = Field(64, ge=1, le=4096)  # bars per decision window
    n_embd: int = Field(64, ge=8)
    n_layer: int = Field(2, ge=1, le=48)
    n_head: int = Field(4, ge=1)
    n_positions: int = Field(64, ge=1)
    vocab_size: int = Field(1, ge=1)  # token embeddings are unused (inputs_embeds); kept to match pretrained shapes
    pretrained_path: str | None = None
    lora_rank: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # GPT-2 residual/attention dropout; > 0 is slow on CPU
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    balanced_classes: bool = False  # class-weighted loss (better balanced accuracy, worse calibration)
    seed: int = 0


def _require_llm() -> tuple[Any, Any, Any, Any]:
    try:
        from peft import LoraConfig, get_peft_model
        from transformers import GPT2Config, GPT2Model
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            f"flag-trader needs the llm extra (pip install 'himari[llm]'): {exc}"
        ) from None
    return GPT2Config, GPT2Model, LoraConfig, get_peft_model


class FlagTraderNet(nn.Module):
    """Input projection -> LoRA-adapted GPT-2 -> policy head; ``forward(windows) -> (n, W, 3)`` per-position logits."""

    def __init__(self, config: FlagTraderConfig, load_pretrained: bool) -> None:
        super().__init__()
        gpt2_config_cls, gpt2_model_cls, lora_config_cls, get_peft_model = _require_llm()
        if config.pretrained_path and load_pretrained:
            path = Path(config.pretrained_path)
            if not path.is_dir():
                raise ConfigError(f"pretrained_path {path}: not a directory with GPT-2 weights (config.json + weights)")
            backbone = gpt2_model_cls.from_pretrained(str(path), local_files_only=True)
        else:
            gpt2_config = gpt2_config_cls(
                n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head, n_positions=config.n_positions,
                vocab_size=config.vocab_size, bos_token_id=0, eos_token_id=0, resid_pdrop=config.dropout,
                embd_pdrop=config.dropout, attn_pdrop=config.dropout,
            )
            backbone = gpt2_model_cls(gpt2_config)
        lora = lora_config_cls(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                               target_modules=list(LORA_TARGETS), fan_in_fan_out=True, bias="none")
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5 (harmless)
            warnings.filterwarnings("ignore", category=FutureWarning)
            self.backbone = get_peft_model(backbone, lora)  # freezes the backbone, adds trainable LoRA A, B
        self.input_proj = nn.Sequential(nn.LayerNorm(config.n_inputs), nn.Linear(config.n_inputs, config.n_embd))
        self.head = nn.Sequential(nn.LayerNorm(config.n_embd), nn.Linear(config.n_embd, N_ACTIONS))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(inputs_embeds=self.input_proj(windows)).last_hidden_state
        return self.head(hidden)  # type: ignore[no-any-return]


class FlagTraderPolicy(TorchPolicyMixin):
    """``himari.agents.base.Policy`` for FLAG-TRADER (stateless: the window is in the observation)."""

    kind: ClassVar[str] = "flag-trader"
    config_class: ClassVar[type[FrozenConfig]] = FlagTraderConfig
    action_kind = "discrete"

    def __init__(self, config: FlagTraderConfig, n_assets: int = 1, load_pretrained: bool = False) -> None:
        if config.n_embd % config.n_head:
            raise ConfigError(f"FlagTraderConfig: n_embd {config.n_embd} not divisible by n_head {config.n_head}")
        if config.context > config.n_positions:
            raise ConfigError(f"FlagTraderConfig: context {config.context} exceeds n_positions {config.n_positions}")
        torch.manual_seed(config.seed)
        self.net = FlagTraderNet(config, load_pretrained)
        self.config = config
        self.net.eval()
        self.window = config.context
        self.n_assets = n_assets
        self.meta: dict[str, Any] = {}
        self._rng = make_rng(config.seed)

    @classmethod
    def create(cls, config: FlagTraderConfig, n_assets: int = 1) -> FlagTraderPolicy:
        """Build for training: loads ``pretrained_path`` when set and records its dimensions in the config."""
        if config.pretrained_path:
            _, gpt2_model_cls, _, _ = _require_llm()
            probe = gpt2_model_cls.from_pretrained(config.pretrained_path, local_files_only=True).config
            config = config.replace(n_embd=probe.n_embd, n_layer=probe.n_layer, n_head=probe.n_head,
                                    n_positions=probe.n_positions, vocab_size=probe.vocab_size)
        return cls(config, n_assets, load_pretrained=True)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def logits_all_positions(self, windows: torch.Tensor) -> torch.Tensor:
        """``(n, W, F+R) -> (n, W, 3)``; position ``j`` sees bars ``<= j`` of the window only."""
        return self.net(windows)  # type: ignore[no-any-return]

    def logits_from_windows(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)[:, -1]  # type: ignore[no-any-return]

    def initial_state(self, n: int) -> None:
        return None

    def reset_state(self, state: Any, done: np.ndarray) -> None:
        return None

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        n, _, a, _ = obs.features.shape
        with torch.no_grad():
            logits = self.logits_from_windows(torch.from_numpy(bar_inputs(obs, self.window))).numpy()
        return probs_to_output(softmax_np(logits).reshape(n, a, N_ACTIONS), deterministic, self._rng), None
