"""The verifiers' shipped JSON artifacts, and where their training data lives (benchmarks and training only)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import NotAvailableError


def read_artifact(name: str, path: str | Path | None, features: tuple[str, ...], retrain: str) -> dict[str, Any]:
    """A JSON artifact: the one shipped as data/<name>, or the file at path; its features must match."""
    if path is None:
        raw = resources.files("smallfleet.verify").joinpath(f"data/{name}").read_text(encoding="utf-8")
    else:
        raw = Path(path).read_text(encoding="utf-8")
    a: dict[str, Any] = json.loads(raw)
    if a.get("features") != list(features):
        raise NotAvailableError(f"{name}: trained on other features; retrain with `{retrain}`.")
    return a


def default_data_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "data"
