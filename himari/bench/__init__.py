"""Benchmark implementations (``himari bench ...``); each module defines ``register_bench(group)``."""
