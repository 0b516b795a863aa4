"""Causal technical features, Kalman/EKF filters, normalizers and the fitted :class:`TacticalPipeline`."""
