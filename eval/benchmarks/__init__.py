"""Benchmarks in their official formats, one module each; every one is an :class:`eval.runner.Benchmark`."""
