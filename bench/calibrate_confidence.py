"""Calibrate the free-text confidence threshold for reasoning steps on held-out data.

Runs the small model on GSM8K *train* problems (../shared/data/gsm8k/train.jsonl; the demo and the
tests never use them), records each answer's mean token probability and whether the final number
is right, and picks the threshold that best separates right from wrong answers (Youden's J:
share of wrong answers flagged minus share of right answers flagged). Prints the table and writes
bench/results/confidence_calibration.json.

    python bench/calibrate_confidence.py [--n 60] [--seed 7]
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time
from dataclasses import replace

from _common import RESULTS, SHARED_DATA, parser, write_json

from smallfleet.config import load_config
from smallfleet.models.llamacpp import LlamaCppBackend

DATA = SHARED_DATA / "gsm8k" / "train.jsonl"
NUM = re.compile(r"-?\d[\d,]*\.?\d*")


def last_number(text: str) -> float | None:
    m = re.search(r"answer\s*[:=]?\s*\$?\s*(-?\d[\d,]*\.?\d*)", text, re.I)
    found = [m.group(1)] if m else NUM.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


async def run(n: int, seed: int, model: str) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    cfg = load_config(env={})
    b = LlamaCppBackend(replace(cfg.tier_model("small"), location=model))
    b.load()
    out = []
    for i, r in enumerate(rows[:n]):
        gold = float(r["answer"].split("####")[-1].strip().replace(",", ""))
        res = await b.chat({"messages": [{"role": "user", "content": r["question"] + "\nSolve it step by step and end with 'Answer: <number>'."}],
                            "max_tokens": 320})
        got = last_number(res.content)
        out.append({"i": i, "mean_p": res.mean_token_prob(), "correct": got is not None and abs(got - gold) < 1e-6,
                    "tokens": res.tokens_out})
        print(f"{i + 1}/{n} p={out[-1]['mean_p']:.3f} correct={out[-1]['correct']}", file=sys.stderr)
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=60, help="GSM8K train problems (default 60)")
    ap.add_argument("--seed", type=int, default=7, help="shuffle seed of the problems (default 7)")
    ap.add_argument("--model", default="package:qwen2.5-coder-0.5b", help="the model's location (default: the packaged 0.5B)")
    ap.add_argument("--out", default=str(RESULTS / "confidence_calibration.json"), help="default bench/results/confidence_calibration.json")
    a = ap.parse_args()
    t0 = time.time()
    rows = asyncio.run(run(a.n, a.seed, a.model))
    right = [r["mean_p"] for r in rows if r["correct"]]
    wrong = [r["mean_p"] for r in rows if not r["correct"]]
    table = []
    for t in [x / 100 for x in range(60, 100, 2)]:
        caught = sum(p < t for p in wrong) / len(wrong) if wrong else 0.0
        false = sum(p < t for p in right) / len(right) if right else 0.0
        kept = [r for r in rows if r["mean_p"] >= t]
        acc_kept = sum(r["correct"] for r in kept) / len(kept) if kept else 0.0
        table.append({"threshold": t, "wrong_flagged": caught, "right_flagged": false, "escalated": 1 - len(kept) / len(rows),
                      "accuracy_of_accepted": acc_kept, "youden_j": caught - false})
    best = max(table, key=lambda r: r["youden_j"])
    # AUROC: chance that a wrong answer scores below a right one
    pairs = [(w < r) + 0.5 * (w == r) for w in wrong for r in right]
    auroc = sum(pairs) / len(pairs) if pairs else float("nan")
    print(f"\nGSM8K train sample: {len(rows)} problems, small model right on {len(right)} ({len(right) / len(rows):.0%})")
    print(f"AUROC of mean token probability for 'wrong answer': {auroc:.3f}")
    print(f"{'threshold':>10}{'wrong flagged':>15}{'right flagged':>15}{'escalated':>11}{'acc accepted':>14}")
    for r in table:
        mark = "  <- best (Youden's J)" if r is best else ""
        print(f"{r['threshold']:>10.2f}{r['wrong_flagged']:>15.0%}{r['right_flagged']:>15.0%}{r['escalated']:>11.0%}"
              f"{r['accuracy_of_accepted']:>14.0%}{mark}")
    write_json(a.out, {"n": len(rows), "seed": a.seed, "model": a.model, "auroc": auroc, "best": best,
                       "table": table, "rows": rows, "wall_s": round(time.time() - t0)})


if __name__ == "__main__":
    main()
