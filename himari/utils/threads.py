"""Deliberate torch/BLAS thread settings.

On small CPU machines (2 shared cores) torch's default intra-op threading made small models 10-25x slower than one
thread, so training, benchmarks and serving call :func:`configure_torch_threads` with an explicit count.
"""

from __future__ import annotations

import os

DEFAULT_TORCH_THREADS = 1


def configure_torch_threads(n_threads: int | None = None) -> int:
    """Set torch intra-op and inter-op threads; default from ``HIMARI_TORCH_THREADS`` or 1. Returns the count."""
    import torch

    if n_threads is None:
        n_threads = int(os.environ.get("HIMARI_TORCH_THREADS", DEFAULT_TORCH_THREADS))
    n_threads = max(1, int(n_threads))
    if torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)
    try:
        torch.set_num_interop_threads(n_threads)
    except RuntimeError:
        pass  # can only be set once per process, before any parallel work
    try:  # NumPy/SciPy BLAS too: the same thread count gives the same float summation order in every process
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n_threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    return n_threads
