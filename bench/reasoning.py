"""Reasoning steps cross-checked by a program (#18), first part: how much the program-of-thought signal
tells about the small model's answers on GSM8K *test* problems.

For each problem the model answers in words (step by step, ending on '#### <number>') and, separately,
writes ``solve()``; the program runs in smallfleet's sandbox (smallfleet/verify/program.py). Reported:
accuracy of the written-out answers; how often the program agrees, disagrees or fails; the precision of
"agrees" (right answers among them) and the share of wrong answers that do not agree (caught); and
the added latency of the program against the answer's own generation time.

    python bench/reasoning.py [--n 60] [--seed 11] [--tiers small,large] [--with EARLIER.json]

With both tiers, the cascade "start small, escalate when the program does not agree" is scored from
the same rows: accuracy, share escalated, share verified and the precision of "verified".

Prints a table and writes bench/results/reasoning.json.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

from _common import RESULTS, SHARED_DATA, parser, write_json

from smallfleet.config import load_config
from smallfleet.fleet import Fleet
from smallfleet.verify.program import agreement, extract_code, final_number, program_request, run_program

DATA = SHARED_DATA / "gsm8k" / "test.jsonl"
COT = "Solve the problem step by step. End with a line '#### <number>'."


async def one(backend, question: str) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    cot = await backend.chat({"messages": [{"role": "system", "content": COT}, {"role": "user", "content": question}],
                              "max_tokens": 400, "temperature": 0})
    t1 = time.perf_counter()
    prog = await backend.chat(program_request(question))
    result = await asyncio.to_thread(run_program, extract_code(prog.content or ""))
    t2 = time.perf_counter()
    answer = final_number(cot.content or "")
    return {"answer": answer, "program": result.value, "program_status": result.status, "program_error": result.error[:120],
            "agreement": agreement(answer, result), "answer_s": round(t1 - t0, 3), "program_s": round(t2 - t1, 3),
            "run_s": round(result.seconds, 3)}


async def run(n: int, seed: int, tiers: list[str]) -> dict:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    cfg = load_config(env={})
    fleet = Fleet(cfg)
    out: dict = {}
    for tier in tiers:
        spec = cfg.tier_model(tier)
        backend = fleet.get(spec.name)
        backend.load()
        recs = []
        for i, r in enumerate(rows[:n]):
            gold = float(r["answer"].split("####")[-1].strip().replace(",", ""))
            rec = await one(backend, r["question"])
            rec.update(i=i, gold=gold, correct=rec["answer"] is not None and abs(rec["answer"] - gold) < 1e-6)
            recs.append(rec)
            print(f"{tier} {i + 1}/{n} correct={rec['correct']} {rec['agreement']}", file=sys.stderr, flush=True)
        out[tier] = {"model": spec.name, "rows": recs, "summary": summarise(recs)}
    await fleet.aclose()
    return out


def summarise(recs: list[dict]) -> dict:
    n = len(recs)
    agree = [r for r in recs if r["agreement"] == "agree"]
    wrong = [r for r in recs if not r["correct"]]
    caught = [r for r in wrong if r["agreement"] != "agree"]
    q = lambda xs, p: statistics.quantiles(xs, n=20)[int(p * 20) - 1] if len(xs) > 1 else (xs[0] if xs else None)  # noqa: E731
    return {
        "problems": n, "accuracy": round(sum(r["correct"] for r in recs) / n, 3),
        "program_accuracy": round(sum(r["program"] is not None and abs(r["program"] - r["gold"]) < 1e-6 for r in recs) / n, 3),
        "agree": len(agree), "disagree": sum(r["agreement"] == "disagree" for r in recs),
        "program_failed": sum(r["agreement"] == "program failed" for r in recs),
        "precision_of_agree": round(sum(r["correct"] for r in agree) / len(agree), 3) if agree else None,
        "wrong_caught": round(len(caught) / len(wrong), 3) if wrong else None,
        "right_flagged": round(sum(r["agreement"] != "agree" for r in recs if r["correct"]) / max(1, n - len(wrong)), 3),
        "answer_s_p50": q([r["answer_s"] for r in recs], 0.5), "program_s_p50": q([r["program_s"] for r in recs], 0.5),
        "program_s_p95": q([r["program_s"] for r in recs], 0.95), "sandbox_s_p50": q([r["run_s"] for r in recs], 0.5),
    }


def cascade(small: list[dict], large: list[dict]) -> dict:
    """Small first; a step whose program does not agree goes to the large model, whose answer is final.
    "Verified": the final answer's own program agrees with it."""
    assert [r["i"] for r in small] == [r["i"] for r in large], "the two tiers must have answered the same problems"
    finals, escalated, verified = [], 0, []
    for s_, l_ in zip(small, large):
        up = s_["agreement"] != "agree"
        escalated += up
        final = l_ if up else s_
        finals.append(final["correct"])
        if final["agreement"] == "agree":
            verified.append(final["correct"])
    n = len(small)
    return {"policy": "escalate when the small model's program does not agree", "accuracy": round(sum(finals) / n, 3),
            "escalated": round(escalated / n, 3), "verified": round(len(verified) / n, 3),
            "precision_of_verified": round(sum(verified) / len(verified), 3) if verified else None,
            "small_only": round(sum(r["correct"] for r in small) / n, 3), "large_only": round(sum(r["correct"] for r in large) / n, 3)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--tiers", default="small")
    ap.add_argument("--with", dest="also", action="append", default=[], metavar="FILE",
                    help="add the tiers of an earlier run of this script (same --n and --seed); may be repeated")
    ap.add_argument("--out", default=str(RESULTS / "reasoning.json"))
    a = ap.parse_args()
    res = asyncio.run(run(a.n, a.seed, [t.strip() for t in a.tiers.split(",") if t.strip()])) if a.tiers else {}
    for f in a.also:
        earlier = json.loads(Path(f).read_text())
        if earlier["setup"]["seed"] != a.seed or earlier["setup"]["n"] < a.n:
            sys.exit(f"{f} was run with --n {earlier['setup']['n']} --seed {earlier['setup']['seed']}: it needs this seed and n >= {a.n}")
        for v in earlier["results"].values():  # the same shuffle: its first n problems are this run's
            v["rows"] = v["rows"][:a.n]
            v["summary"] = summarise(v["rows"])
        res = {**earlier["results"], **res}
    print(f"\n{'tier':<8}{'acc':>6}{'agree':>7}{'prec(agree)':>13}{'wrong caught':>14}{'right flagged':>15}{'prog fail':>11}"
          f"{'answer s':>10}{'program s':>11}")
    for tier, v in res.items():
        s = v["summary"]
        print(f"{tier:<8}{s['accuracy']:>6.2f}{s['agree']:>7}{s['precision_of_agree'] or 0:>13.2f}{s['wrong_caught'] or 0:>14.2f}"
              f"{s['right_flagged']:>15.2f}{s['program_failed']:>11}{s['answer_s_p50']:>10.2f}{s['program_s_p50']:>11.2f}")
    out_cascade = cascade(res["small"]["rows"], res["large"]["rows"]) if "small" in res and "large" in res else None
    if out_cascade:
        print(f"\ncascade: {out_cascade}")
    setup = {"n": a.n, "seed": a.seed, "data": "gsm8k test", "date": time.strftime("%Y-%m-%d %H:%M")}
    write_json(a.out, {"results": res, "cascade": out_cascade, "setup": setup})


if __name__ == "__main__":
    main()
