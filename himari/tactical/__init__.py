"""Tactical inputs (L2): the fitted pipeline that turns bars into normalized causal features and the regime posterior.

It composes ``himari.features`` (features, filters, normalizers) and ``himari.regime`` (labeller, Student-t HMM), so it
sits above both: data <- features <- regime <- tactical <- env <- agents ...
"""
