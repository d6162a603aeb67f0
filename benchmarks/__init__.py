"""Benchmark and endurance scripts: each prints its numbers; ``suite`` gathers them into BENCHMARKS.md."""
