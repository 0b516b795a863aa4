"""The market simulator: a pure batched step over N parallel episodes, rewards, and Gymnasium adapters."""
