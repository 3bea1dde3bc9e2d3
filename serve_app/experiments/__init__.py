"""Experiments: configuration and sticky assignment (`config`), outcome storage (`store`), the per-arm
report (`report`) and its statistics (`stats`)."""
