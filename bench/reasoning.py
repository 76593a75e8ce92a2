"""Reasoning steps that know when they are wrong (#18): the signals, the combined score and the cascade on GSM8K.

Three subcommands, run in this order:

    python bench/reasoning.py collect --split train --tier small --n 100 --samples 3
    python bench/reasoning.py collect --split test --tier small --n 300
    python bench/reasoning.py collect --split test --tier large --n 300
    python bench/reasoning.py fit        # the combined score, fitted on the train rows only
    python bench/reasoning.py sample     # samples for the test rows in the score's sampling band
    python bench/reasoning.py report     # the cascade on the test rows: table, JSON and plot
    python bench/reasoning.py latency    # what the checks add to a step, one problem at a time (quiet machine)
    python bench/reasoning.py label      # step labels for the process verifier from completions (Math-Shepherd)

``collect`` asks a local model each problem the way a reasoning step does (step by step, ending on
'#### <number>'), has it write ``solve()`` for the same problem (run in smallfleet's sandbox), and with
``--samples K`` draws K more answers at temperature 0.7 in one call (llama.cpp's parallel slots). It keeps
the answer's text and token log-probabilities, so every other signal (recomputed arithmetic, the process
verifier, the outcome model) is computed from the rows later. Rows are appended to
``bench/results/reasoning_rows/SPLIT-MODEL.jsonl``: a run that stops resumes where it was, and the problems
are the same for every tier (the split shuffled with ``--seed``, its first N).

``fit`` trains smallfleet's combined reasoning score (smallfleet/verify/score.py) on the train rows and
writes it where the package ships it. ``report`` scores the test rows and plays the cascade: start on the
small model, accept when the score clears the threshold, else escalate to the large one; the large one's
answer is "verified" when its own score clears the threshold. It writes bench/results/reasoning.json
and reasoning.png.

``label`` (item 4) labels the first wrong step of the small model's own GSM8K-*train* answers with
smallfleet.verify.shepherd: from a step's prefix, do k sampled continuations of the completer model (default
the large tier) still reach the known answer? Steps are the answer's paragraphs, as in ProcessBench; binary
search over them; a problem the completer cannot solve from scratch is skipped. Rows go to
``reasoning_rows/labels-TRACES-by-COMPLETER.jsonl`` (resumable), in ProcessBench's shape, for
``smallfleet verifier train --labels`` and ``python bench/verifier.py --labels``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, SHARED_DATA, parser, write_json

from smallfleet.config import load_config
from smallfleet.fleet import Fleet
from smallfleet.models.base import Sampler
from smallfleet.verify.checks import split_steps
from smallfleet.verify.program import ProgramResult, extract_code, final_number, program_request, run_program
from smallfleet.verify.score import ARTIFACT, ReasoningScore, Signals, auroc, fit_score, signals
from smallfleet.verify.shepherd import label_trace, sampler_completer

SHIPPED = Path(__file__).resolve().parents[1] / "smallfleet" / "verify" / "data" / ARTIFACT

ROWS = RESULTS / "reasoning_rows"
COT = "Solve the problem step by step. End with a line '#### <number>'."


def problems(split: str, seed: int, n: int) -> list[tuple[int, str, float]]:
    """(line number, question, gold answer) of the split's first n problems after a seeded shuffle."""
    lines = [json.loads(x) for x in (SHARED_DATA / "gsm8k" / f"{split}.jsonl").read_text().splitlines() if x.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    return [(i, lines[i]["question"], float(lines[i]["answer"].split("####")[-1].strip().replace(",", ""))) for i in order[:n]]


def cot_request(question: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": COT}, {"role": "user", "content": question}],
            "max_tokens": 400, "temperature": 0}


async def one(backend: Any, pid: int, question: str, gold: float, k: int) -> dict[str, Any]:
    async def answer() -> dict[str, Any]:
        t0 = time.perf_counter()
        r = await backend.chat(cot_request(question))
        return {"text": r.content, "answer": final_number(r.content), "tokens_out": r.tokens_out,
                "answer_s": round(time.perf_counter() - t0, 3),
                "logprobs": [round(x, 3) for x in r.token_logprobs or []]}

    async def program() -> dict[str, Any]:
        t0 = time.perf_counter()
        r = await backend.chat(program_request(question))
        code = extract_code(r.content)
        res = await asyncio.to_thread(run_program, code)
        return {"code": code[:2000], "program": res.value, "program_status": res.status, "program_error": res.error[:160],
                "program_tokens": r.tokens_out, "program_s": round(time.perf_counter() - t0, 3), "run_s": round(res.seconds, 3)}

    async def samples() -> dict[str, Any]:
        if not k:
            return {}
        assert isinstance(backend, Sampler)
        s = await backend.samples(cot_request(question), k)
        return {"samples": [final_number(t) for t in s.texts], "samples_tokens": s.tokens_out,
                "samples_s": round(s.latency_ms / 1000, 3)}

    a, p, s = await asyncio.gather(answer(), program(), samples())
    return {"id": pid, "gold": gold, **a, **p, **s}


async def collect(split: str, tier: str, n: int, seed: int, k: int, concurrency: int) -> None:
    cfg = load_config(env={})
    spec = cfg.tier_model(tier)
    out = ROWS / f"{split}-{spec.name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(x)["id"] for x in out.read_text().splitlines() if x.strip()} if out.exists() else set()
    todo = [p for p in problems(split, seed, n) if p[0] not in done]
    print(f"{spec.name} on {split}: {len(done)} rows already, {len(todo)} to go", file=sys.stderr)
    fleet = Fleet(cfg)
    backend = fleet.get(spec.name)
    backend.load()
    gate = asyncio.Semaphore(concurrency)
    count, t0 = 0, time.perf_counter()

    async def run_one(p: tuple[int, str, float]) -> None:
        nonlocal count
        async with gate:
            row = await one(backend, p[0], p[1], p[2], k)
        row.update(model=spec.name, split=split, concurrency=concurrency)
        with out.open("a") as f:  # one line per problem as it ends: a stopped run resumes
            f.write(json.dumps(row) + "\n")
        count += 1
        right = row["answer"] is not None and abs(row["answer"] - row["gold"]) < 1e-6
        print(f"{split} {spec.name} {count}/{len(todo)} right={right} program={row['program']} "
              f"({(time.perf_counter() - t0) / count:.1f} s/problem)", file=sys.stderr, flush=True)

    try:
        await asyncio.gather(*(run_one(p) for p in todo))
    finally:
        await fleet.aclose()


def load_rows(split: str, model: str) -> list[dict[str, Any]]:
    """The collected rows of one split and model, with the samples drawn later (``sample``) merged in."""
    f = ROWS / f"{split}-{model}.jsonl"
    if not f.exists():
        return []
    rows = {r["id"]: r for r in map(json.loads, filter(str.strip, f.read_text().splitlines()))}
    extra = ROWS / f"{split}-{model}.samples.jsonl"
    if extra.exists():
        for e in map(json.loads, filter(str.strip, extra.read_text().splitlines())):
            if e["id"] in rows:
                rows[e["id"]].update(e)
    return list(rows.values())


def right(row: dict[str, Any]) -> bool:
    return row["answer"] is not None and abs(row["answer"] - row["gold"]) < 1e-6


def row_signals(row: dict[str, Any], question: str, with_samples: bool = True) -> Signals:
    prog = ProgramResult(row["program"], row["program_status"], row["program_error"])
    return signals(question, split_steps(row["text"]), row["logprobs"], row["answer"], prog,
                   row.get("samples") if with_samples else None)


def questions(split: str) -> list[str]:
    return [json.loads(x)["question"] for x in (SHARED_DATA / "gsm8k" / f"{split}.jsonl").read_text().splitlines() if x.strip()]


def fit(models: list[str], target: float, out: Path) -> None:
    qs = questions("train")
    rows = [r for m in models for r in load_rows("train", m)]
    if not rows:
        sys.exit("no train rows: run `collect --split train --samples 3` first")
    sig = [row_signals(r, qs[r["id"]]) for r in rows]
    k = max(len(r.get("samples") or []) for r in rows)
    score = fit_score(sig, [right(r) for r in rows], target=target, samples=k,
                      meta={"fitted_on": f"GSM8K train, {len(rows)} answers by {', '.join(models)}",
                            "date": time.strftime("%Y-%m-%d")})
    score.save(out)
    print(json.dumps(score.meta, indent=1))
    print(f"wrote {out}")


async def sample(split: str, tier: str, score_path: Path | None) -> None:
    """Draw the samples for the rows whose base score is in the sampling band: what the cascade would sample."""
    cfg = load_config(env={})
    spec = cfg.tier_model(tier)
    score = ReasoningScore.load(score_path)
    qs = questions(split)
    rows = load_rows(split, spec.name)
    todo = [r for r in rows if r.get("samples") is None
            and score.needs_samples(score.p_right(row_signals(r, qs[r["id"]], with_samples=False)))]
    print(f"{spec.name} on {split}: {len(todo)} of {len(rows)} rows in the band {score.band}", file=sys.stderr)
    fleet = Fleet(cfg)
    backend = fleet.get(spec.name)
    backend.load()
    assert isinstance(backend, Sampler)
    out = ROWS / f"{split}-{spec.name}.samples.jsonl"
    try:
        for i, r in enumerate(todo, 1):
            s = await backend.samples(cot_request(qs[r["id"]]), score.samples)
            with out.open("a") as f:
                f.write(json.dumps({"id": r["id"], "samples": [final_number(t) for t in s.texts],
                                    "samples_tokens": s.tokens_out, "samples_s": round(s.latency_ms / 1000, 3)}) + "\n")
            print(f"sampled {i}/{len(todo)}", file=sys.stderr, flush=True)
    finally:
        await fleet.aclose()


def _q(xs: list[float], p: float) -> float | None:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3) if xs else None


def judge(rows: list[dict[str, Any]], qs: list[str], score: ReasoningScore) -> list[dict[str, Any]]:
    """Each row's score as the cascade computes it: the base score, then, in the band, the full one with samples."""
    out = []
    for r in rows:
        base = row_signals(r, qs[r["id"]], with_samples=False)
        p = pb = score.p_right(base)
        sig, sampled, missing = base, False, False
        if score.needs_samples(pb):
            if r.get("samples") is None:
                missing = True  # `sample` was not run for this row: judged without samples
            else:
                sig, sampled = row_signals(r, qs[r["id"]]), True
                p = score.p_right(sig)
        out.append({"id": r["id"], "right": right(r), "p": p, "p_base": pb, "accepted": score.accepts(sig, p),
                    "sampled": sampled, "missing_samples": missing, "program": base.program,
                    "tokens": r["tokens_out"], "program_tokens": r["program_tokens"],
                    "samples_tokens": r.get("samples_tokens", 0) if sampled else 0,
                    "answer_s": r["answer_s"], "program_s": r["program_s"], "samples_s": r.get("samples_s") if sampled else None})
    return out


def tier_summary(j: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(j)
    acc = [x for x in j if x["accepted"]]
    agree = [x for x in j if x["program"] == "agree"]
    ys = np.array([x["right"] for x in j], dtype=float)
    return {
        "problems": n, "accuracy": round(ys.mean(), 3) if n else None,
        "verified": round(len(acc) / n, 3) if n else None,
        "precision_of_verified": round(sum(x["right"] for x in acc) / len(acc), 3) if acc else None,
        "right_verified": round(sum(x["right"] for x in acc) / max(1, ys.sum()), 3),
        "auroc": round(auroc(np.array([x["p"] for x in j]), ys), 3) if n else None,
        "program_agrees": round(len(agree) / n, 3) if n else None,
        "precision_of_program_agree": round(sum(x["right"] for x in agree) / len(agree), 3) if agree else None,
        "sampled": round(sum(x["sampled"] for x in j) / n, 3) if n else None,
        "missing_samples": sum(x["missing_samples"] for x in j),
        "tokens_answer": sum(x["tokens"] for x in j), "tokens_program": sum(x["program_tokens"] for x in j),
        "tokens_samples": sum(x["samples_tokens"] for x in j),
        "answer_s_p50": _q([x["answer_s"] for x in j], 0.5), "answer_s_p95": _q([x["answer_s"] for x in j], 0.95),
        "program_s_p50": _q([x["program_s"] for x in j], 0.5), "program_s_p95": _q([x["program_s"] for x in j], 0.95),
        "samples_s_p50": _q([x["samples_s"] for x in j if x["samples_s"] is not None], 0.5),
    }


def play(small: list[dict[str, Any]], large: dict[int, dict[str, Any]], escalate: Any) -> dict[str, Any]:
    """The cascade on the problems both tiers answered: the small answer stands unless ``escalate(row)``."""
    both = [s for s in small if s["id"] in large]
    finals, verified, up = [], [], 0
    for s in both:
        if escalate(s):
            up += 1
            f = large[s["id"]]
        else:
            f = s
        finals.append(f["right"])
        if f["accepted"]:
            verified.append(f["right"])
    n = max(1, len(both))
    return {"problems": len(both), "accuracy": round(sum(finals) / n, 3), "escalated": round(up / n, 3),
            "verified": round(len(verified) / n, 3),
            "precision_of_verified": round(sum(verified) / len(verified), 3) if verified else None}


def bounds(both: list[dict[str, Any]], large: dict[int, dict[str, Any]]) -> dict[str, float]:
    """The least escalation that reaches the large model's accuracy for two ideal rules, so a goal can be read
    against what these two models allow: an oracle that knows both answers escalates only where the small one is
    wrong and the large one right; a perfect verifier of the small answer escalates only where it is wrong, but
    cannot tell which of those the large model gets right (so on average it needs that share of them)."""
    n = len(both)
    sw_lr = sum(1 for s in both if not s["right"] and large[s["id"]]["right"])
    sr_lw = sum(1 for s in both if s["right"] and not large[s["id"]]["right"])
    sw = sum(1 for s in both if not s["right"])
    if not n or sw_lr <= sr_lw:
        return {"oracle": 0.0, "perfect_small_verifier": 0.0}
    return {"oracle": round((sw_lr - sr_lw) / n, 3),
            "perfect_small_verifier": round(sw * (1 - sr_lw / sw_lr) / n, 3)}


def report(small_tier: str, large_tier: str, score_path: Path | None, out: Path) -> None:
    cfg = load_config(env={})
    small_m, large_m = cfg.tier_model(small_tier).name, cfg.tier_model(large_tier).name
    score = ReasoningScore.load(score_path)
    qs = questions("test")
    js = judge(load_rows("test", small_m), qs, score)
    jl = judge(load_rows("test", large_m), qs, score)
    if not js:
        sys.exit(f"no test rows for {small_m}: run `collect --split test --tier {small_tier}` first")
    large = {x["id"]: x for x in jl}
    res: dict[str, Any] = {"tiers": {small_m: tier_summary(js), large_m: tier_summary(jl)}, "score": score.meta}
    both = [s for s in js if s["id"] in large]
    curve: list[dict[str, Any]] = []
    if both:
        small_acc = sum(s["right"] for s in both) / len(both)
        large_acc = sum(large[s["id"]]["right"] for s in both) / len(both)
        res["cascade"] = {"score": play(js, large, lambda s: not s["accepted"]),
                          "program agrees": play(js, large, lambda s: s["program"] != "agree"),
                          "small only": play(js, large, lambda s: False), "large only": play(js, large, lambda s: True)}
        for t in sorted({0.0, *(s["p"] for s in both), 1.01}):
            c = play(js, large, lambda s, t=t: s["p"] < t)  # type: ignore[misc]
            curve.append({"threshold": round(t, 4), "escalated": c["escalated"], "accuracy": c["accuracy"]})
        reach = [c for c in curve if c["accuracy"] >= large_acc - 1e-9]
        res["escalation_to_large_accuracy"] = min(c["escalated"] for c in reach) if reach else None
        res["random_escalation_to_large_accuracy"] = 1.0 if large_acc > small_acc else 0.0
        res["bounds_to_large_accuracy"] = bounds(both, large)
        res["curve"] = curve
    res["setup"] = {"small": small_m, "large": large_m, "data": "GSM8K test, the same seeded shuffle for both tiers",
                    "date": time.strftime("%Y-%m-%d %H:%M")}
    write_json(out, res)
    print(f"\n{'model':<22}{'n':>5}{'acc':>7}{'verified':>10}{'prec':>7}{'auroc':>7}{'sampled':>9}{'prog agree prec':>17}")
    for m, t in res["tiers"].items():
        if t["problems"]:
            print(f"{m:<22}{t['problems']:>5}{t['accuracy']:>7.3f}{t['verified']:>10.3f}{t['precision_of_verified'] or 0:>7.3f}"
                  f"{t['auroc']:>7.3f}{t['sampled']:>9.3f}{t['precision_of_program_agree'] or 0:>17.3f}")
    for name, c in res.get("cascade", {}).items():
        print(f"cascade [{name}]: {c}")
    if "escalation_to_large_accuracy" in res:
        print(f"escalation needed to reach the large model's accuracy: {res['escalation_to_large_accuracy']} "
              f"(ideal rules: {res['bounds_to_large_accuracy']})")
    if curve:
        plot(res, out.with_suffix(".png"))


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = res["cascade"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([x["escalated"] for x in res["curve"]], [x["accuracy"] for x in res["curve"]], "-", label="combined score, any threshold")
    s, large = c["small only"], c["large only"]
    ax.plot([0, 1], [s["accuracy"], large["accuracy"]], ":", color="grey", label="escalate at random")
    for name, mark in (("score", "o"), ("program agrees", "s")):
        ax.plot([c[name]["escalated"]], [c[name]["accuracy"]], mark, label=f"{name} (operating point)")
    ax.axhline(large["accuracy"], color="black", lw=0.6)
    b = res.get("bounds_to_large_accuracy") or {}
    for name, mark in (("oracle", "^"), ("perfect_small_verifier", "v")):
        if b.get(name) is not None:
            ax.plot([b[name]], [large["accuracy"]], mark, color="grey", label=f"ideal: {name.replace('_', ' ')}")
    ax.set_xlabel("share of steps escalated to the large model")
    ax.set_ylabel("accuracy (GSM8K test)")
    ax.set_title(f"{res['setup']['small']} → {res['setup']['large']}, {c['score']['problems']} problems")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


async def latency(tier: str, n: int, k: int, seed: int) -> None:
    """One problem at a time, nothing else running: the answer, then the program, then k samples in one call,
    then k samples as k calls. What each adds to a reasoning step, and what one n=k call saves over k calls."""
    cfg = load_config(env={})
    spec = cfg.tier_model(tier)
    fleet = Fleet(cfg)
    backend = fleet.get(spec.name)
    backend.load()
    assert isinstance(backend, Sampler)
    rows = []
    try:
        await backend.chat(cot_request("What is 2 + 3?"))  # warm-up
        for pid, q, _ in problems("test", seed + 1, n):  # other problems than the collected ones' order
            t0 = time.perf_counter()
            a = await backend.chat(cot_request(q))
            t1 = time.perf_counter()
            p = await backend.chat(program_request(q))
            res = await asyncio.to_thread(run_program, extract_code(p.content))
            t2 = time.perf_counter()
            one = await backend.samples(cot_request(q), k)
            t3 = time.perf_counter()
            seq_tokens = 0
            for i in range(k):
                r = await backend.chat({**cot_request(q), "temperature": 0.7, "seed": i})
                seq_tokens += r.tokens_out
            t4 = time.perf_counter()
            rows.append({"id": pid, "answer_s": t1 - t0, "answer_tokens": a.tokens_out, "program_s": t2 - t1,
                         "sandbox_s": res.seconds, "samples_one_call_s": t3 - t2, "samples_one_call_tokens": one.tokens_out,
                         "samples_k_calls_s": t4 - t3, "samples_k_calls_tokens": seq_tokens})
            print(f"latency {len(rows)}/{n}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        await fleet.aclose()
    med = {key: round(float(np.median([r[key] for r in rows])), 3) for key in rows[0] if key != "id"}
    tok_s_one = sum(r["samples_one_call_tokens"] for r in rows) / sum(r["samples_one_call_s"] for r in rows)
    tok_s_k = sum(r["samples_k_calls_tokens"] for r in rows) / sum(r["samples_k_calls_s"] for r in rows)
    out = {"model": spec.name, "problems": n, "k": k, "median": med,
           "p95": {key: _q([r[key] for r in rows], 0.95) for key in ("answer_s", "program_s", "samples_one_call_s")},
           "samples_tokens_per_s": {"one call (n=k)": round(tok_s_one, 1), "k calls": round(tok_s_k, 1)},
           "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M"), "threads": spec.threads, "slots": spec.parallel}
    write_json(RESULTS / "reasoning_latency.json", out)
    print(json.dumps({k_: v for k_, v in out.items() if k_ != "rows"}, indent=1))


def paragraphs(text: str) -> list[str]:
    """A written-out answer as steps the way ProcessBench cuts its traces: paragraphs, so a displayed
    equation stays with its lines (a line split would make each "\\[" a step)."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return paras if len(paras) >= 2 else split_steps(text)


async def label(traces: str, completer_tier: str, k: int, n: int, max_tokens: int) -> None:
    cfg = load_config(env={})
    spec = cfg.tier_model(completer_tier)
    out = ROWS / f"labels-{traces}-by-{spec.name}.jsonl"
    done = {json.loads(x)["id"] for x in out.read_text().splitlines() if x.strip()} if out.exists() else set()
    rows = load_rows("train", traces)[:n]
    if not rows:
        raise SystemExit(f"no train rows of {traces}: run `collect --split train` first")
    todo = [r for r in rows if r["id"] not in done]
    print(f"labelling {len(todo)} of {len(rows)} {traces} traces by completions of {spec.name} (k={k}); "
          f"{len(done)} done", file=sys.stderr)
    qs = questions("train")
    cut = int(cot_request("")["max_tokens"])  # an answer this long was cut off, not finished
    fleet = Fleet(cfg)
    backend = fleet.get(spec.name)
    backend.load()
    assert isinstance(backend, Sampler)
    complete = sampler_completer(backend, COT, max_tokens=max_tokens)
    t0 = time.perf_counter()
    try:
        for i, r in enumerate(todo, 1):
            steps = paragraphs(r["text"])
            if not steps:
                continue
            lab = await label_trace(qs[r["id"]], steps, r["gold"], complete, k, finished=int(r["tokens_out"]) < cut)
            with out.open("a") as f:
                f.write(json.dumps({"id": r["id"], "gold": r["gold"], "answer_right": right(r), **lab.as_dict(),
                                    "traces": traces, "completer": spec.name, "k": k}) + "\n")
            print(f"{i}/{len(todo)} id={r['id']} steps={len(steps)} label={lab.label} probes={len(lab.probes)} "
                  f"{lab.seconds:.0f} s ({(time.perf_counter() - t0) / i:.0f} s a trace): {lab.reason}",
                  file=sys.stderr, flush=True)
    finally:
        await fleet.aclose()


def main() -> None:
    ap = parser(__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="ask a local model the problems; append rows (resumable)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--split", choices=("train", "test"), required=True)
    c.add_argument("--tier", default="small")
    c.add_argument("--n", type=int, default=300)
    c.add_argument("--seed", type=int, default=11)
    c.add_argument("--samples", type=int, default=0, help="sampled answers per problem, drawn in one call (default 0)")
    c.add_argument("--concurrency", type=int, default=1,
                   help="problems in flight (each is 2-3 model calls at once; the answer, program and samples "
                        "run side by side on llama.cpp's slots)")
    f = sub.add_parser("fit", help="fit the combined score on the train rows and write it where the package ships it")
    f.add_argument("--models", default="qwen2.5-coder-0.5b", help="whose train rows (comma-separated model names)")
    f.add_argument("--target", type=float, default=0.95, help="precision of 'verified' to choose the threshold for")
    f.add_argument("--out", type=Path, default=SHIPPED)
    s = sub.add_parser("sample", help="draw samples for the collected rows in the score's sampling band")
    s.add_argument("--split", choices=("train", "test"), default="test")
    s.add_argument("--tier", default="small")
    s.add_argument("--score", type=Path, default=None, help="a score artifact other than the shipped one")
    r = sub.add_parser("report", help="score the test rows and play the cascade; table, JSON and plot")
    r.add_argument("--small", default="small")
    r.add_argument("--large", default="large")
    r.add_argument("--score", type=Path, default=None)
    r.add_argument("--out", type=Path, default=RESULTS / "reasoning.json")
    lat = sub.add_parser("latency", help="added latency per reasoning step, one problem at a time (quiet machine)")
    lat.add_argument("--tier", default="small")
    lat.add_argument("--n", type=int, default=10)
    lat.add_argument("--samples", type=int, default=3)
    lat.add_argument("--seed", type=int, default=11)
    lb = sub.add_parser("label", help="first-wrong-step labels of the train rows from completions (Math-Shepherd)")
    lb.add_argument("--traces", default="qwen2.5-coder-0.5b", help="model whose train rows are labelled")
    lb.add_argument("--completer", default="large", help="tier whose model continues the prefixes")
    lb.add_argument("--k", type=int, default=4, help="continuations per prefix, drawn in one call")
    lb.add_argument("--n", type=int, default=100, help="label the first N train rows")
    lb.add_argument("--max-tokens", type=int, default=300, help="tokens per continuation")
    a = ap.parse_args()
    if a.cmd == "label":
        asyncio.run(label(a.traces, a.completer, a.k, a.n, a.max_tokens))
    elif a.cmd == "latency":
        asyncio.run(latency(a.tier, a.n, a.samples, a.seed))
    elif a.cmd == "collect":
        asyncio.run(collect(a.split, a.tier, a.n, a.seed, a.samples, a.concurrency))
    elif a.cmd == "fit":
        fit([m.strip() for m in a.models.split(",") if m.strip()], a.target, a.out)
    elif a.cmd == "sample":
        asyncio.run(sample(a.split, a.tier, a.score))
    elif a.cmd == "report":
        report(a.small, a.large, a.score, a.out)


if __name__ == "__main__":
    main()
