"""Import an agent's own logs: one JSON object a line, ``{"request", "response", "id"?, "trace"?, "feedback"?}``.

So a user can start the learning loop from the traffic of their current frontier-only agent. Every
line is checked with the gateway's own request rules; a malformed one is reported by its number and
skipped, and the rest are pseudonymised and written in one transaction (all or nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..errors import InvalidRequestError, SmallfleetError
from ..privacy.detector import Detector
from ..privacy.pseudonymize import Pseudonymizer
from ..privacy.vault import Vault
from .store import TraceStore
from .trace import Trace, from_logged

MAX_LINE = 8 << 20  # the gateway's default body limit: a line is one request and its answer


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    duplicates: int = 0  # already in the store (same id, or the same line imported before)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def read_lines(path: Path, price_in: float, price_out: float, report: ImportReport,
               progress: Callable[[int], None] | None = None) -> list[Trace]:
    traces: list[Trace] = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            report.lines = n
            if progress is not None and n % 200 == 0:
                progress(n)
            if not line.strip():
                continue
            if len(line) > MAX_LINE:
                report.skipped.append((n, f"longer than {MAX_LINE >> 20} MiB"))
                continue
            try:
                traces.append(from_logged(orjson.loads(line), price_in, price_out))
            except orjson.JSONDecodeError as e:
                report.skipped.append((n, f"not JSON ({str(e)[:80]})"))
            except InvalidRequestError as e:
                report.skipped.append((n, e.message[:200]))
            except RecursionError:
                report.skipped.append((n, "nested too deep"))
    return traces


def import_jsonl(path: str | Path, store: TraceStore, detector: Detector | None = None, *, price_in: float = 2.5,
                 price_out: float = 10.0, progress: Callable[[int], None] | None = None) -> ImportReport:
    """Check, pseudonymise and store every line of ``path``; see the module doc."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SmallfleetError(f"{p} is not a file.", hint="give the path of a JSONL log: one {\"request\", \"response\"} object a line")
    report = ImportReport()
    traces = read_lines(p, price_in, price_out, report, progress)
    det = detector or Detector()
    vaults: dict[str, Vault] = {}
    clean = [t.scrubbed(Pseudonymizer(det, vaults.setdefault(t.trace or t.id, Vault()))) for t in traces]
    report.imported = store.add(clean)
    report.duplicates = len(clean) - report.imported
    return report
