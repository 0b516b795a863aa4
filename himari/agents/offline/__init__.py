"""Offline RL and sequence models, each a ``himari.agents.base.Policy`` saved as policy.json + safetensors.

- ``datasets``: forward-return BUY/HOLD/SELL labels (cost threshold, purging + embargo) and simulator trajectories
- ``classifier`` (BaselineMLP), ``cql`` (discrete CQL), ``decision_transformer`` (DT and critic-guided DT),
  ``flag_trader`` (GPT-2 + LoRA, ``llm`` extra), ``ensemble`` (averaging / voting, presets, fitted weights)
- ``loop``: the one training loop (``LoopConfig``, ``OfflineAlgorithm``, ``fit``): minibatch, loss, gradient clip,
  AdamW step, validation-only selection, early stopping, atomic checkpoints and exact resume; ``supervised``
  (label cross-entropy), ``cql`` and ``decision_transformer`` supply the algorithms
- ``evaluate``: classification metrics beside the majority-class baseline
- ``train``: ``train_offline`` / ``fit_offline`` / ``train_ensemble`` (run directories with model bundles)
"""
