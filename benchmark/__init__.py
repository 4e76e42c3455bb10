"""Benchmark suite for item identifiers in LLM-based generative recommendation."""
__version__ = "0.1.0"
