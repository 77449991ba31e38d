"""Benchmarks and load tests; every script names the machine it ran on in its result file."""
