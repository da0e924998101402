"""Quantization (placeholder until the quantizers land)."""
