"""Causal technical features, Kalman/EKF filters and normalizers (the fitted pipeline is in ``himari.tactical``)."""
