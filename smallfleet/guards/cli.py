"""``smallfleet detector ...``: scan text for injected instructions; retrain the small classifier."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click
import orjson


@click.group(short_help="Injection detector: scan text, retrain the classifier.")
def detector() -> None:
    """The injection detector (heuristics + a small trained classifier), a second layer behind the tool policy."""


@detector.command("scan")
@click.argument("source", type=click.File("r", encoding="utf-8", errors="replace"), default="-")
def scan(source: IO[str]) -> None:
    """Score each line of SOURCE (or stdin): one JSON line out per line in, {flagged, score, reasons}."""
    from .injection import InjectionDetector

    det = InjectionDetector()
    for line in source:
        f = det.scan(line.rstrip("\n"))
        sys.stdout.write(orjson.dumps({"flagged": f.flagged, "score": f.score, "reasons": list(f.reasons)}).decode() + "\n")


@detector.command("train")
@click.option("--shared", type=click.Path(file_okay=False, exists=True), default="../shared", show_default=True,
              help="The shared folder with data/pii and data/gsm8k (negatives).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Artifact path (default: the packaged one).")
def train_cmd(shared: str, out: str | None) -> None:
    """Rebuild the classifier from composed injections and ordinary text; prints its metadata."""
    from .classifier import ARTIFACT, train

    meta = train(Path(shared), Path(out) if out else ARTIFACT)
    click.echo(orjson.dumps(meta, option=orjson.OPT_INDENT_2).decode())
