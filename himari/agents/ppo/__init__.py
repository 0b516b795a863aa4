"""PPO family: one trainer (``trainer.PPOTrainer``) shared by the MLP, LSTM, transformer, multi-asset and sizer
policies (``policies``). Math lives in ``gae`` and ``losses``, storage in ``buffer``, network builders in
``networks``."""

from himari.agents.ppo.config import (
    LSTMConfig,
    MLPConfig,
    MultiAssetConfig,
    PPOConfig,
    SizerConfig,
    TransformerConfig,
)

__all__ = ["LSTMConfig", "MLPConfig", "MultiAssetConfig", "PPOConfig", "SizerConfig", "TransformerConfig"]
