"""The BFCL v4 tool-documentation corpus and its questions, as bench/retrieval.py defines them (see its docstring):
loading them from the ``bfcl-eval`` package, the dev/test split, indexing the tool documents in a ``Store``, and the
document-level metrics. Shared by bench/retrieval.py, bench/grounded.py, bench/tools/train_fusion.py and
bench/probes/retrieval_probes.py, so that all of them read the same corpus the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from _common import load_avg, progress

from smallfleet.retrieval import Store

QUERY_CATEGORIES = ["simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
                    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]
DISTRACTOR_CATEGORIES = ["irrelevance", "live_irrelevance", "live_relevance"]


@dataclass
class Tool:
    key: tuple[str, str]
    name: str
    text: str


@dataclass
class Question:
    id: str
    category: str
    text: str
    relevant: set[int] = field(default_factory=set)

    @property
    def split(self) -> str:
        return "dev" if int(hashlib.sha256(self.id.encode()).hexdigest(), 16) % 3 == 0 else "test"


def _reader(where: Path | None) -> tuple[Callable[[str], bytes | None], str]:
    """A function reading bfcl_eval/data/<name> from the installed package, a data folder or a wheel."""
    if where is None:
        spec = importlib.util.find_spec("bfcl_eval")  # finds the package without importing it (heavy deps)
        if spec is None or spec.origin is None:
            raise SystemExit("bfcl-eval is not installed: pip install --no-deps bfcl-eval==2026.3.23 (or --bfcl PATH)")
        where = Path(spec.origin).parent / "data"
    if where.suffix == ".whl":
        zf = zipfile.ZipFile(where)
        names = set(zf.namelist())
        return (lambda n: zf.read(f"bfcl_eval/data/{n}") if f"bfcl_eval/data/{n}" in names else None), str(where)
    return (lambda n: (where / n).read_bytes() if (where / n).is_file() else None), str(where)


def _render(f: dict[str, Any]) -> str:
    lines = [f"# {f['name']}", "", " ".join(str(f.get("description", "")).split()), ""]
    params = f.get("parameters") or {}
    props = params.get("properties") or {}
    if props:
        required = set(params.get("required") or [])
        lines.append("Parameters:")
        for pname, p in props.items():
            p = p if isinstance(p, dict) else {}
            bits = [str(p.get("type", "any"))] + (["required"] if pname in required else [])
            desc = " ".join(str(p.get("description", "")).split())
            if p.get("enum"):
                desc += f" One of: {', '.join(map(str, p['enum']))}."
            lines.append(f"- {pname} ({', '.join(bits)}): {desc}")
    return "\n".join(lines).strip() + "\n"


def load_bfcl(where: Path | None) -> tuple[list[Tool], list[Question], dict[str, Any]]:
    read, origin = _reader(where)
    tools: list[Tool] = []
    index: dict[tuple[str, str], int] = {}
    questions: list[Question] = []
    digest = hashlib.sha256()
    for cat in QUERY_CATEGORIES + DISTRACTOR_CATEGORIES:
        raw = read(f"BFCL_v4_{cat}.json")
        if raw is None:
            raise SystemExit(f"{origin}: BFCL_v4_{cat}.json missing")
        digest.update(raw)
        answers: dict[str, Any] = {}
        answers_raw = read(f"possible_answer/BFCL_v4_{cat}.json") if cat in QUERY_CATEGORIES else None
        if answers_raw:
            digest.update(answers_raw)
            for line in answers_raw.splitlines():
                if line.strip():
                    a = json.loads(line)
                    answers[a["id"]] = a["ground_truth"]
        for line in raw.splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            by_name: dict[str, int] = {}
            for f in entry["function"]:
                key = (f["name"], " ".join(str(f.get("description", "")).split()))
                if key not in index:
                    index[key] = len(tools)
                    tools.append(Tool(key, f["name"], _render(f)))
                by_name[f["name"]] = index[key]
            if entry["id"] in answers:
                users = [m["content"] for turn in entry["question"] for m in turn if m.get("role") == "user"]
                names = {n for call in answers[entry["id"]] for n in call}
                questions.append(Question(entry["id"], cat, users[-1].strip(), {by_name[n] for n in names}))
    try:
        version = metadata.version("bfcl-eval")
    except metadata.PackageNotFoundError:
        version = None
    return tools, questions, {"origin": origin, "bfcl_eval_version": version, "sha256": digest.hexdigest()}


def doc_ranking(chunk_ids: list[int], chunk_doc: dict[int, int], k: int = 10) -> list[int]:
    """First chunk of each document; chunks without a tool document are their own (negative id) documents."""
    out: list[int] = []
    for cid in chunk_ids:
        d = chunk_doc.get(cid, -cid)
        if d not in out:
            out.append(d)
            if len(out) == k:
                break
    return out


def metrics(rankings: list[list[int]], questions: list[Question]) -> dict[str, float]:
    r5 = r10 = mrr = 0.0
    for ranked, q in zip(rankings, questions):
        r5 += len(q.relevant & set(ranked[:5])) / len(q.relevant)
        r10 += len(q.relevant & set(ranked[:10])) / len(q.relevant)
        mrr += next((1.0 / (i + 1) for i, d in enumerate(ranked[:10]) if d in q.relevant), 0.0)
    n = max(len(questions), 1)
    return {"recall@5": r5 / n, "recall@10": r10 / n, "mrr@10": mrr / n, "questions": len(questions)}


def ingest(store: Store, files: list[tuple[str, str]], folder: Path, label: str) -> dict[str, Any]:
    """Write each (name, text) as a Markdown file and Store.add it; timed from the first add to the last."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (_, text) in enumerate(files):
        p = folder / f"{i:05d}.md"
        p.write_text(text)
        paths.append(p)
    before = store.count()
    with progress() as bar:
        task = bar.add_task(f"ingest {label} (Store.add)", total=len(paths))
        t0 = time.perf_counter()
        for p in paths:
            store.add(p)
            bar.advance(task)
        secs = time.perf_counter() - t0
    chunks = store.count() - before
    return {"docs": len(paths), "chunks": chunks, "seconds": secs, "chunks_per_s": chunks / secs,
            "docs_per_s": len(paths) / secs, "chars": sum(len(t) for _, t in files), "load_avg": load_avg()}


def tool_store(index: Path | None, tools: list[Tool], prefix: str) -> tuple[Store, dict[int, int]]:
    """The store of the tool documents at ``index`` (built there, or in a new temp folder, when empty)
    and its chunk -> document map; for the scripts that train or probe the fusion on this corpus."""
    index = index or Path(tempfile.mkdtemp(prefix=prefix)) / "tools.db"
    tool_dir = index.parent / f"{index.stem}-tools"
    store = Store(index)
    if store.count() == 0:
        ingest(store, [(t.name, t.text) for t in tools], tool_dir, "tools")
    chunk_doc = chunk_map(store.db, tool_dir)
    if len(set(chunk_doc.values())) != len(tools):
        raise SystemExit(f"{index}: does not hold the tool documents; pass another --index")
    return store, chunk_doc


def chunk_map(db: sqlite3.Connection, tool_dir: Path) -> dict[int, int]:
    """chunk id -> tool document index, for the chunks of tool documents."""
    out = {}
    for cid, path in db.execute("SELECT c.id, d.path FROM chunks c JOIN docs d ON d.id = c.doc_id"):
        p = Path(path)
        if p.parent == tool_dir.resolve():
            out[cid] = int(p.stem)
    return out
