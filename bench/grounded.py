"""Grounded answering with the local small model: answer accuracy and unsupported-claim rate with and
without grounding and the citation check (issue #6).

Corpus: the BFCL v4 tool documentation, built exactly as bench/retrieval.py builds it (its functions are
imported, not copied): 2,724 Markdown documents (``# name``, description, one line per parameter) added
to a smallfleet ``Store`` (~2,950 chunks). Why BFCL: see bench/retrieval.py's docstring (the only real
public corpus with questions and exact labels shipped inside a package reachable here). The index is
cached in /tmp (``--index PATH`` to use or build one elsewhere; bench/retrieval.py's ``--keep DIR/bfcl.db``
works too).

Questions: N requests (default 32) drawn with ``random.Random(seed)`` from the TEST split of
bench/retrieval.py (sha256(id) % 3 != 0) among those whose ground truth names exactly one function. The
user message is the BFCL request plus ``SUFFIX`` below, identical for every configuration.

Configurations, all through ``Engine.make_step(...)`` + ``Engine.run_step``, default fleet, no ledger,
temperature 0, max_tokens 80, step kind forced to ``generation`` (``--step-kind auto`` uses the
classifier; forcing it keeps the kind's own checks to nonempty + not_refusal, so the only check that can
escalate is ``evidence_grounded``):

- ``none``:     model=qwen2.5-coder-0.5b, no knowledge base;
- ``grounded``: model=qwen2.5-coder-0.5b, kb=index: top-k chunks injected as numbered sources; the
                evidence_grounded check runs and is recorded, a named model never escalates;
- ``checked``:  model=auto, kb=index: an answer that fails evidence_grounded escalates to the 1.5B.

Metrics per configuration:

- accuracy: the gold function name appears in the answer, case-insensitively, as a whole token
  (``full``: the whole name, e.g. ``math.factorial``; ``last``: also its last dotted component alone,
  e.g. ``factorial`` — the two differ only for dotted names); also restricted to the questions whose
  gold document is among the retrieved chunks;
- unsupported-claim rate: share of answers for which
  ``smallfleet.retrieval.grounded.unsupported(answer, evidence_texts, question)`` is non-empty, with the
  SAME top-k chunks for all three configurations (``none`` is judged against what the grounded
  configurations saw). Two views: ``check`` = the chunk texts ``Hit.text``, which is what the
  evidence_grounded check uses; ``shown`` = each chunk as ``evidence_message`` shows it to the model,
  ``(file — heading)`` + text (the Markdown heading — the function name — is stored apart from the
  chunk text, so the check's view lacks it);
- abstention rate (the answer says "not in the sources", smallfleet's own pattern), citation rate (an
  answer with ``[n]``), escalation rate and the share of final answers from each model;
- latency per question: wall time of ``Engine.run_step`` (retrieval included), mean and p50;
- retrieval hit rate: the gold document among the top-k chunks (and: a chunk titled with the gold name).

Reproduce:  pip install --no-deps bfcl-eval==2026.3.23
            python bench/grounded.py [--quick] [--n 32] [--seed 1234] [--index PATH] [--json OUT]

Prints a table and writes bench/results/grounded.json (``--quick``: 8 questions, grounded-quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, load_avg, now, parser, progress, write_json

from bench import _bfcl as rb  # the corpus of bench/retrieval.py: tool docs, questions, ingestion, chunk -> document map
from smallfleet.config import load_config
from smallfleet.engine import Engine
from smallfleet.retrieval import Embedder, Store
from smallfleet.retrieval.grounded import _ABSTAIN, _CITE, unsupported

SMALL, LARGE = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
SUFFIX = ("\n\nWhich function from the documentation should be called for this request, and with which argument "
          "values? Answer in one or two sentences naming the function.")
CONFIGS = {  # name: (label, model, grounded)
    "none": ("no grounding (0.5B)", SMALL, False),
    "grounded": ("grounded (0.5B, check recorded)", SMALL, True),
    "checked": ("grounded + check (auto: 0.5B -> 1.5B)", "auto", True),
}
CACHE = Path("/tmp/smallfleet-bench-grounded")
DEFAULT_N, QUICK_N, SEED = 32, 8, 1234  # ~31 s a question (3 configs) in a first probe; 53 s in the full run (load 6)


# -- index ------------------------------------------------------------------------------------------
def build_index(path: Path, tools: list[rb.Tool], data_sha: str) -> dict[str, Any]:
    """The tool docs alone in a Store at ``path`` (docs written to ``path.parent/tools``); reused when its
    manifest matches the data, or when it is an index built by bench/retrieval.py --keep."""
    tool_dir = path.parent / "tools"
    manifest_path = path.with_suffix(".manifest.json")
    if path.is_file():
        m = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        if m.get("data_sha256") in (data_sha, None) and tool_dir.is_dir():
            return {**m, "reused": True}
        raise SystemExit(f"{path} exists but was built from other data or without {tool_dir}; remove it or pass --index")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".building")
    for old in path.parent.glob(tmp.name + "*"):
        old.unlink()
    emb = Embedder()
    emb.embed(["warm up"])
    store = Store(tmp, embedder=emb)
    ing = rb.ingest(store, [(t.name, t.text) for t in tools], tool_dir, "tool docs")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    tmp.rename(path)
    m = {"data_sha256": data_sha, "ingestion": ing}
    manifest_path.write_text(json.dumps(m, indent=2))
    return {**m, "reused": False}


def chunk_docs(path: Path) -> tuple[dict[int, int], dict[int, str]]:
    """chunk id -> tool document index, and chunk id -> heading, read from the index."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        docs = rb.chunk_map(db, path.parent / "tools")
        heads = dict(db.execute("SELECT id, heading FROM chunks"))
    finally:
        db.close()
    return docs, heads


# -- scoring ----------------------------------------------------------------------------------------
def mentions(answer: str, name: str, last_ok: bool) -> bool:
    """``name`` as a whole token of ``answer`` (case-insensitive); with ``last_ok`` its last dotted
    component alone counts too."""
    a = answer.casefold()
    cands = [name.casefold()] + ([name.rsplit(".", 1)[-1].casefold()] if last_ok and "." in name else [])
    for c in cands:
        before = r"(?<!\w)" if c != name.casefold() else r"(?<![\w.])"
        if re.search(before + re.escape(c) + r"(?!\w|\.\w)", a):
            return True
    return False


def pct(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [r["latency_s"] for r in rows]
    hit = [r for r in rows if r["retrieval_hit"]]
    return {
        "n": len(rows),
        "accuracy_full": pct([r["correct_full"] for r in rows]),
        "accuracy_last": pct([r["correct_last"] for r in rows]),
        "accuracy_full_given_hit": pct([r["correct_full"] for r in hit]), "hit_n": len(hit),
        "accuracy_full_given_miss": pct([r["correct_full"] for r in rows if not r["retrieval_hit"]]),
        "accuracy_full_given_name_hit": pct([r["correct_full"] for r in rows if r["retrieval_name_hit"]]),
        "answer_only_citations": pct([not _CITE.sub("", r["answer"]).strip(" .,;\n") for r in rows]),
        "unsupported_rate_check": pct([bool(r["unsupported"]) for r in rows]),
        "unsupported_rate_shown": pct([bool(r["unsupported_shown"]) for r in rows]),
        "abstention_rate": pct([r["abstained"] for r in rows]),
        "citation_rate": pct([r["cites"] for r in rows]),
        "escalation_rate": pct([r["escalated"] for r in rows]),
        "final_model_share": {m: c / len(rows) for m, c in Counter(r["model"] for r in rows).items()},
        "evidence_check_failed_on_final": pct([r["evidence_check"] is False for r in rows]),
        "latency_mean_s": statistics.fmean(lat), "latency_p50_s": statistics.median(lat),
        "tokens_out_mean": statistics.fmean(r["tokens_out"] for r in rows),
        "truncated_rate": pct([r["finish_reason"] == "length" for r in rows]),
    }


# -- run --------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, index: Path, sample: list[rb.Question], tools: list[rb.Tool],
              evidence: list[dict[str, Any]], configs: list[str], bar: Any) -> tuple[dict[str, list], dict]:
    cfg = load_config(env={})
    cfg = replace(cfg, grounding=replace(cfg.grounding, k=args.k))
    engine = Engine(cfg, ledger=False)
    info: dict[str, Any] = {"k": cfg.grounding.k, "min_relevance": cfg.grounding.min_relevance,
                            "tiers": list(cfg.tiers), "models": {n: m.tier for n, m in cfg.models.items()},
                            "threads": {n: m.threads for n, m in cfg.models.items()}}
    try:
        t0 = time.perf_counter()
        needed = {SMALL} | ({LARGE} if "checked" in configs else set())
        for name in sorted(needed):  # loaded before timing starts
            await asyncio.to_thread(engine.fleet.get(name).load)
        engine.grounding.store(engine.make_step({"messages": [{"role": "user", "content": "warm up"}]}, kb_path=index)).search(
            "warm up", cfg.grounding.k)  # the engine's own store: embedder + vectors loaded
        info["load_s"] = round(time.perf_counter() - t0, 1)
        out: dict[str, list] = {}
        for cname in configs:
            label, model, grounded = CONFIGS[cname]
            task = bar.add_task(f"{cname}: {label}", total=len(sample))
            rows = []
            for q, ev in zip(sample, evidence):
                prompt = q.text + SUFFIX
                req = {"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": args.max_tokens, "temperature": 0.0,
                       "cache_prompt": False}  # no prefix reuse: answers do not depend on the order of the run
                step = engine.make_step(req, kb_path=index if grounded else None,
                                        step_kind=None if args.step_kind == "auto" else args.step_kind)
                t1 = time.perf_counter()
                outcome = await engine.run_step(step)
                wall = time.perf_counter() - t1
                fin = outcome.final
                answer = (fin.result.message.get("content") or "") if fin.result else ""
                gold = tools[next(iter(q.relevant))].name
                seen = [h.id for h in step.evidence.hits] if step.evidence is not None else None
                ev_check = next((v.passed for v in fin.verdicts if v.check == "evidence_grounded"), None)
                rows.append({
                    "id": q.id, "category": q.category, "gold": gold, "answer": answer,
                    "correct_full": mentions(answer, gold, False), "correct_last": mentions(answer, gold, True),
                    "unsupported": unsupported(answer, ev["texts"], prompt),
                    "unsupported_shown": unsupported(answer, ev["shown"], prompt),
                    "abstained": bool(_ABSTAIN.search(answer)), "cites": bool(_CITE.search(answer)),
                    "retrieval_hit": ev["hit"], "retrieval_name_hit": ev["name_hit"], "escalated": outcome.escalated, "model": fin.spec.name,
                    "step_kind": step.kind.value, "evidence_check": ev_check,
                    "evidence_same": seen == ev["chunk_ids"] if seen is not None else None,
                    "weak_evidence": step.evidence.weak if step.evidence is not None else None,
                    "attempts": [{"model": a.spec.name, "passed": a.passed, "error": a.error,
                                  "answer": (a.result.message.get("content") or "") if a.result else None,
                                  "failed": a.failed_reason or None,
                                  "latency_ms": round(a.result.latency_ms, 1) if a.result else None,
                                  "tokens_in": a.result.tokens_in if a.result else None}
                                 for a in outcome.attempts],
                    "tokens_out": fin.result.tokens_out if fin.result else 0,
                    "finish_reason": fin.result.finish_reason if fin.result else None,
                    "latency_s": round(wall, 3),
                })
                bar.advance(task)
            out[cname] = rows
        return out, info
    finally:
        await engine.aclose()


def print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=150)
    s = res["summary"]
    short = {"none": "(a) no grounding, 0.5B", "grounded": "(b) grounded, 0.5B", "checked": "(c) grounded + check, auto"}
    t = Table(title=f"grounded answering on BFCL v4 tool docs: {res['n']} test questions (seed {res['seed']}), "
                    f"k={res['engine']['k']}, max_tokens={res['max_tokens']}, step kind {res['step_kind']}")
    cols = ("configuration", "acc", "acc last", f"acc|hit ({res['retrieval']['hits']})", "unsup check",
            "unsup shown", "abstain", "cites", "only \\[n]", "escalated", "final model", "mean s", "p50 s")
    for c in cols:
        t.add_column(c, justify="left" if c in ("configuration", "final model") else "right")

    def f(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.0f}%"

    for name, m in s.items():
        share = " ".join(f"{k.removeprefix('qwen2.5-coder-')} {100 * v:.0f}%" for k, v in sorted(m["final_model_share"].items()))
        t.add_row(short[name], f(m["accuracy_full"]), f(m["accuracy_last"]), f(m["accuracy_full_given_hit"]),
                  f(m["unsupported_rate_check"]), f(m["unsupported_rate_shown"]), f(m["abstention_rate"]),
                  f(m["citation_rate"]), f(m["answer_only_citations"]), f(m["escalation_rate"]), share,
                  f"{m['latency_mean_s']:.1f}", f"{m['latency_p50_s']:.1f}")
    con.print(t)
    con.print("acc: gold function name in the answer (whole name); acc last: or its last dotted part; acc|hit: acc "
              "where the gold document was retrieved; unsup check / shown: unsupported() non-empty against the "
              "chunk texts (the check's view) / (file — heading) + text (the model's view); only \\[n]: the answer is "
              "nothing but citations")
    r = res["retrieval"]
    con.print(f"retrieval (the engine's query = request + instruction, top {res['engine']['k']} chunks): gold document "
              f"{r['hits']}/{res['n']} = {100 * r['hit_rate']:.0f}%; a chunk titled with the gold name "
              f"{100 * r['name_hit_rate']:.0f}%; with the request alone as the query: {100 * r['hit_rate_request_only']:.0f}%")
    con.print(f"wall time {res['wall_s']:.0f} s (models and index loaded in {res['engine']['load_s']} s); "
              f"load average {res['load_avg_before']} -> {res['load_avg_after']} on {os.cpu_count()} cores")


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=DEFAULT_N, help=f"questions (default {DEFAULT_N})")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_N} questions")
    ap.add_argument("--seed", type=int, default=SEED, help=f"seed of the question sample (default {SEED})")
    ap.add_argument("--index", type=Path, default=None,
                    help=f"index to use or build (default {CACHE}/bfcl.db; its docs go to the folder 'tools' beside it)")
    ap.add_argument("--bfcl", type=Path, default=None, help="bfcl_eval/data folder or wheel (default: installed package)")
    ap.add_argument("--k", type=int, default=4, help="chunks of evidence (smallfleet's default grounding.k is 4)")
    ap.add_argument("--max-tokens", type=int, default=80, help="answer length cap (default 80)")
    ap.add_argument("--step-kind", default="generation", help="step kind for every question, or 'auto' (classifier)")
    ap.add_argument("--configs", default="none,grounded,checked", help="comma list of none, grounded, checked")
    ap.add_argument("--json", type=Path, default=None, help="output (default bench/results/grounded.json)")
    args = ap.parse_args()
    n = QUICK_N if args.quick else args.n
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if bad := [c for c in configs if c not in CONFIGS]:
        raise SystemExit(f"unknown configuration(s) {bad}; use {', '.join(CONFIGS)}")
    out_path = args.json or RESULTS / ("grounded-quick.json" if args.quick else "grounded.json")

    tools, questions, data_info = rb.load_bfcl(args.bfcl)
    index = (args.index or CACHE / "bfcl.db").expanduser().resolve()
    built = build_index(index, tools, data_info["sha256"])
    pool = sorted((q for q in questions if q.split == "test" and len(q.relevant) == 1), key=lambda q: q.id)
    sample = random.Random(args.seed).sample(pool, min(n, len(pool)))
    print(f"index {index} ({'reused' if built['reused'] else 'built'}); {len(pool)} single-function test questions, "
          f"{len(sample)} drawn with seed {args.seed}", file=sys.stderr)

    # The evidence every configuration is judged against: the engine's own search (same query, same k)
    cdoc, heads = chunk_docs(index)
    store = Store(index)
    evidence, hits_req = [], 0
    try:
        for q in sample:
            gold_doc = next(iter(q.relevant))
            hits = store.search(q.text + SUFFIX, args.k)
            ids = [h.id for h in hits]
            evidence.append({"chunk_ids": ids, "texts": [h.text for h in hits],
                             "shown": [f"({h.source.rsplit('/', 1)[-1]} — {h.heading})\n{h.text}" for h in hits],  # as evidence_message
                             "headings": [h.heading for h in hits],
                             "hit": any(cdoc.get(i) == gold_doc for i in ids),
                             "name_hit": any(heads.get(i) == tools[gold_doc].name for i in ids)})
            hits_req += any(cdoc.get(h.id) == gold_doc for h in store.search(q.text, args.k))
        n_chunks = store.count()
    finally:
        store.close()

    load0 = load_avg()
    t0 = time.perf_counter()
    with progress(48) as bar:
        rows, engine_info = asyncio.run(run(args, index, sample, tools, evidence, configs, bar))
    wall = time.perf_counter() - t0
    load1 = load_avg()

    import xllamacpp

    res = {
        "date": now(),
        "quick": args.quick, "n": len(sample), "seed": args.seed, "max_tokens": args.max_tokens,
        "step_kind": args.step_kind, "temperature": 0.0, "prompt_suffix": SUFFIX,
        "configs": {c: {"label": CONFIGS[c][0], "model": CONFIGS[c][1], "kb": CONFIGS[c][2]} for c in configs},
        "corpus": {"name": "BFCL v4 function documentation (bfcl-eval on PyPI, Apache-2.0), tool docs only",
                   "docs": len(tools), "chunks": n_chunks, "index": str(index), "index_reused": built["reused"],
                   "ingestion": built.get("ingestion"), **data_info},
        "questions": {"pool": "test split of bench/retrieval.py (sha256(id) % 3 != 0), ground truth naming exactly "
                              "one function", "pool_size": len(pool), "sample_ids": [q.id for q in sample],
                      "categories": dict(Counter(q.category for q in sample))},
        "rules": {"accuracy_full": "gold function name, case-insensitive, as a whole token (not inside a longer "
                                   "dotted or word token)",
                  "accuracy_last": "as accuracy_full, or the last dotted component of the gold name alone",
                  "unsupported_check": "unsupported(answer, [Hit.text of the top-k chunks], user message) non-empty: "
                                       "the evidence_grounded check's own view",
                  "unsupported_shown": "the same with each chunk's label '(file — heading)' prepended, as evidence_message shows it to the model",
                  "abstained": "smallfleet.retrieval.grounded._ABSTAIN matches the answer",
                  "retrieval_hit": "a chunk of the gold document among the top-k (engine's query: request + instruction)",
                  "latency": "wall time of Engine.run_step per question (retrieval included; models preloaded)"},
        "retrieval": {"hits": sum(e["hit"] for e in evidence), "hit_rate": pct([e["hit"] for e in evidence]),
                      "name_hit_rate": pct([e["name_hit"] for e in evidence]),
                      "hit_rate_request_only": hits_req / max(len(sample), 1)},
        "engine": engine_info,
        "summary": {c: summarise(r) for c, r in rows.items()},
        "rows": {c: [{**r, "evidence_headings": e["headings"]} for r, e in zip(rs, evidence)] for c, rs in rows.items()},
        "wall_s": round(wall, 1), "load_avg_before": load0, "load_avg_after": load1,
        "environment": environment(xllamacpp=getattr(xllamacpp, "__version__", None)),
    }
    print_table(res)
    write_json(out_path, res, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
