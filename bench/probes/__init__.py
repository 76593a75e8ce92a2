"""Probes: one-off experiments whose answer decided a design (see bench/README.md). Run as ``python -m bench.probes.NAME``."""
