"""Does a judge model help where the distilled verifier is unsure? ProcessBench GSM8K, held out.

The holdout="gsm8k" process verifier (bench/results/verifier-holdout-gsm8k.json: trained on
ProcessBench MATH + synthetic flawed GSM8K-*train* traces, never on these) scores every ProcessBench
GSM8K trace. Traces whose p_flawed (the largest step score) falls inside --band go to the judge model
with the cascade's own judge prompt (``smallfleet.verify.judge.judge_request``: "the number of the first
incorrect step, or 0"), and its reading replaces the verifier's first error step; an unreadable reply
keeps the verifier's. Printed and written side by side, ProcessBench protocol (accuracy on erroneous
samples = exact first error step, accuracy on correct samples, F1):

- the verifier alone, on all traces and on the band's traces;
- the judge alone on the band's traces;
- verifier + judge on all traces (what ``[verify] judge`` does in the cascade);
- seconds per judged trace and the judge's unreadable replies.

The outcome verifier (p_wrong) is not part of this run: the cascade's band also covers its scores, but
ProcessBench scores the first error step, which p_wrong does not give.

    python bench/judge_band.py [--judge qwen2.5-coder-1.5b] [--band 0.3,0.6] [--limit N] [--threads 2]

Writes bench/results/judge_band.json. Temperature 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import replace
from typing import Any

from _common import RESULTS, ROOT, SHARED_DATA, parser, write_json

from smallfleet.config import load_config
from smallfleet.fleet import Fleet
from smallfleet.verify import ProcessVerifier, processbench_f1
from smallfleet.verify.judge import judge_request, read_judgement
from smallfleet.verify.process import MAX_STEPS


def scores(pred: list[int], gold: list[int]) -> dict[str, float | int]:
    acc_err, acc_ok, f1 = processbench_f1(pred, gold)
    return {"n": len(gold), "erroneous": sum(g != -1 for g in gold), "acc_erroneous": round(100 * acc_err, 1),
            "acc_correct": round(100 * acc_ok, 1), "f1": round(100 * f1, 1)}


async def run(judge_name: str, band: tuple[float, float], limit: int | None, threads: int) -> dict[str, Any]:
    artifact = RESULTS / "verifier-holdout-gsm8k.json"
    if not artifact.is_file():
        raise SystemExit(f"{artifact} is missing: run `python bench/verifier.py` first (it trains the held-out model)")
    v = ProcessVerifier.load(artifact)
    traces = json.loads((SHARED_DATA / "processbench" / "gsm8k.json").read_text(encoding="utf-8"))
    cfg = load_config(env={})
    cfg = replace(cfg, models={k: replace(m, threads=threads) for k, m in cfg.models.items()})
    fleet = Fleet(cfg)
    judge = fleet.get(judge_name)
    judge.load()
    gold, verifier_pred, combined, rows = [], [], [], []
    in_band = [i for i, t in enumerate(traces) if band[0] <= v.verify(t["problem"], t["steps"]).p_flawed <= band[1]]
    todo = set(in_band[:limit] if limit else in_band)
    t_start = time.time()
    for i, t in enumerate(traces):
        res = v.verify(t["problem"], t["steps"])
        gold.append(t["label"])
        verifier_pred.append(res.first_error_step)
        pred = res.first_error_step
        if i in todo:
            steps = t["steps"][:MAX_STEPS]
            t0 = time.time()
            out = await judge.chat(judge_request(t["problem"], steps))
            k = read_judgement(out.content, len(steps))
            rows.append({"index": i, "label": t["label"], "p_flawed": round(res.p_flawed, 4), "verifier": res.first_error_step,
                         "judge_reply": out.content, "judge": k, "tokens_in": out.tokens_in, "s": round(time.time() - t0, 2)})
            if k is not None:
                pred = k
            print(f"  judged {len(rows)}/{len(todo)} at {time.time() - t_start:.0f} s", file=sys.stderr, end="\r")
        combined.append(pred)
    print(file=sys.stderr)
    judged = [r["index"] for r in rows]
    band_gold = [gold[i] for i in judged]
    judge_only = [r["judge"] if r["judge"] is not None else -1 for r in rows]
    secs = sorted(r["s"] for r in rows)
    return {
        "judge": judge_name, "band": list(band), "verifier": str(artifact.relative_to(ROOT)), "threshold": v.threshold,
        "traces": len(traces), "in_band": len(in_band), "judged": len(rows),
        "verifier_alone": scores(verifier_pred, gold),
        "verifier_on_band": scores([verifier_pred[i] for i in judged], band_gold),
        "judge_on_band": scores(judge_only, band_gold),
        "verifier_plus_judge": scores(combined, gold),
        "unreadable_replies": sum(r["judge"] is None for r in rows),
        "judge_said_all_correct": sum(r["judge"] == -1 for r in rows),
        "s_per_judged_trace_p50": secs[len(secs) // 2] if secs else None,
        "s_per_judged_trace_p95": secs[int(0.95 * (len(secs) - 1))] if secs else None,
        "threads": threads, "rows": rows,
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--judge", default="qwen2.5-coder-1.5b", help="a fleet model (default: the large local model)")
    ap.add_argument("--band", default="0.3,0.6", help="LOW,HIGH p_flawed range sent to the judge (the [verify] band default)")
    ap.add_argument("--limit", type=int, default=None, help="judge only the first N traces in the band (quick runs)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads of the judge (default 2)")
    ap.add_argument("--out", default=str(RESULTS / "judge_band.json"), help="default bench/results/judge_band.json")
    a = ap.parse_args()
    try:
        lo, hi = (float(x) for x in a.band.split(","))
    except ValueError:
        ap.error("--band takes LOW,HIGH, e.g. 0.3,0.6")
    if not 0 <= lo <= hi <= 1:
        ap.error("--band needs 0 <= LOW <= HIGH <= 1")
    t0 = time.time()
    r = asyncio.run(run(a.judge, (lo, hi), a.limit, a.threads))
    r["wall_s"] = round(time.time() - t0)
    print(f"\nProcessBench GSM8K, verifier trained without it ({r['verifier']}, threshold {r['threshold']}); "
          f"judge {r['judge']} on p_flawed in [{lo}, {hi}]: {r['in_band']} of {r['traces']} traces, {r['judged']} judged")
    print(f"{'':<34} {'traces':>6} {'acc erroneous':>13} {'acc correct':>11} {'F1':>6}")
    for key, label in (("verifier_alone", "verifier alone, all traces"), ("verifier_on_band", "verifier alone, band traces"),
                       ("judge_on_band", "judge alone, band traces"), ("verifier_plus_judge", "verifier + judge, all traces")):
        s = r[key]
        print(f"{label:<34} {s['n']:>6} {s['acc_erroneous']:>13.1f} {s['acc_correct']:>11.1f} {s['f1']:>6.1f}")
    print(f"judge replies without a step number: {r['unreadable_replies']}; 'all correct': {r['judge_said_all_correct']}; "
          f"s per judged trace p50/p95: {r['s_per_judged_trace_p50']}/{r['s_per_judged_trace_p95']}; wall {r['wall_s']} s")
    write_json(a.out, r, ensure_ascii=False)


if __name__ == "__main__":
    main()
