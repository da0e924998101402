"""Benchmarks: scripts writing JSON under bench/results/; BENCHMARKS.md is generated from them."""
