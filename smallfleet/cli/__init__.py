"""The ``smallfleet`` command line: the group (:mod:`._app`) and one module per family of commands
(serving, fleet, keys, knowledge, learn, memory, privacy, traces, verify), each registering its commands on the group."""

from __future__ import annotations

import os

from ..evals.cli import bench as _bench  # heavy imports stay inside the command
from ..guards.cli import detector as _detector
from . import fleet, keys, knowledge, learn, memory, privacy, serving, traces, verify
from ._app import cli

__all__ = ["cli", "fleet", "keys", "knowledge", "learn", "main", "memory", "privacy", "serving", "traces", "verify"]

cli.add_command(_bench)
cli.add_command(_detector)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli(prog_name="smallfleet")
