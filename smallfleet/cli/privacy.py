"""Personal data from the shell: redact (and restore)."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from ._app import cli, console


# -- redact ------------------------------------------------------------------------------------------
@cli.command(short_help="Pseudonymise personal data in JSON lines (or --restore it).")
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--restore", is_flag=True, help="Reverse: put the original values back, using --vault.")
@click.option("--vault", "vault_path", type=click.Path(dir_okay=False),
              help="Encrypted vault file (key in SMALLFLEET_VAULT_KEY): written after redacting, read for --restore.")
@click.option("--entities", default=None, help="Comma-separated entity types to look for (default: all).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Minimum detection score.")
@click.option("--no-ner", is_flag=True, help="Patterns only (no spaCy): faster, finds no names or places.")
@click.pass_context
def redact(ctx: click.Context, source: Any, restore: bool, vault_path: str | None, entities: str | None,
           threshold: float, no_ner: bool) -> None:
    """Pseudonymise personal data, locally: JSON lines in, JSON lines out.

    \b
    Input lines:   {"text": "Mail jane@example.com"}
    Output lines:  {"redacted": "Mail <EMAIL_ADDRESS_1>",
                    "entities": [{"type": "EMAIL_ADDRESS", "start": 5, "end": 21, "placeholder": "<EMAIL_ADDRESS_1>"}]}
    With --restore: {"text": "..."} in, {"restored": ..., "mangled": [...], "unknown": [...]} out.

    All lines share one vault, so the same value gets the same placeholder throughout. A bad line
    gets {"line": N, "error": ...} and the rest go on; the exit code is 1 if any line failed.
    """
    from ..errors import ConfigError
    from ..privacy import Detector, Pseudonymizer, Vault

    if restore and not vault_path:
        raise click.UsageError("--restore needs --vault FILE (written by an earlier `smallfleet redact --vault FILE`)")
    kinds = [k.strip() for k in entities.split(",")] if entities else None
    try:
        detector = Detector(entities=kinds, threshold=threshold, ner=not no_ner)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    vault = Vault.load(vault_path) if restore and vault_path else Vault()  # --restore without --vault was refused above
    pz = Pseudonymizer(detector, vault)
    failed = 0

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")

    def parse(line: str) -> tuple[str | None, str | None]:
        """(text, None) or (None, what is wrong with the line)."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            return None, f"not valid JSON: {e}"
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            return None, 'expected an object with a string field "text"'
        return obj["text"], None

    batch: list[tuple[int, str]] = []

    def flush() -> None:
        texts = [t for _, t in batch]
        if restore:
            for _, t in batch:
                restored = pz.restore(t)
                emit({"restored": restored.text, "mangled": restored.mangled, "unknown": restored.unknown})
        else:
            for (n, t), ents in zip(batch, detector.detect_batch(texts)):
                r = pz.redact(t, ents)
                out: dict[str, Any] = {"redacted": r.text, "entities": r.entities}
                if r.chunks > 1:
                    out["chunks"] = r.chunks
                    console.print(f"[yellow]line {n}: {len(t)} characters, detected in {r.chunks} chunks[/]")
                emit(out)
        batch.clear()

    for n, line in enumerate(source, 1):
        if not line.strip():
            continue
        text, error = parse(line)
        if error is not None:
            flush()  # keep output in input order
            failed += 1
            emit({"line": n, "error": error})
            continue
        batch.append((n, text or ""))
        if len(batch) >= 64:
            flush()
    flush()
    if vault_path and not restore:
        vault.save(vault_path)
        console.print(f"[dim]vault with {len(vault)} values written to {vault_path} (encrypted)[/]")
    if failed:
        console.print(f"[red]{failed} line(s) failed[/]")
        sys.exit(1)
