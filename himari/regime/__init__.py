"""Regimes: rule labeller, Student-t HMM, evaluation and plots."""
