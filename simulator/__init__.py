"""The simulated upstream: a deterministic OpenAI-compatible (and minimal Anthropic) provider.

Tests and benchmarks import it (`simulator.server.MockServer`); `triage serve` on embedded
defaults starts it as a subprocess (`python -m simulator`). No production module imports it.
"""
