"""Tools: not benchmarks; they build a shipped artifact or serve a benchmark (see bench/README.md). Run as
``python -m bench.tools.NAME``."""
