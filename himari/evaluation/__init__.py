"""Evaluation: performance metrics, statistics of an edge (PSR, DSR, PBO, bootstrap), baselines and the verdict."""
