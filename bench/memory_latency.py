"""What session memory adds to a request's latency: memory off, fact extraction before the answer
(``[memory] defer = false``) and after it (``defer = true``, the default), through the Engine.

Each conversation states four facts in its first user turn (the fact sets of bench/memory.py, in bench/_facts.py), then
asks for one of them in a follow-up, sent either right after the first answer (back-to-back: the worst
case for deferral, since the follow-up waits for the first turn's extraction before it can pin the
facts) or after a pause long enough for the background read to end (a person reading and typing, an
agent running a tool).
The modes take turns per conversation so llama.cpp's prompt cache favours none. The answering model
and the extractor are the packaged Qwen2.5-Coder-0.5B (the default small tier), 2 threads.

    python bench/memory_latency.py [--sets 8] [--out bench/results/memory_latency.json]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, parser, write_json

from bench import _facts as MB  # the planted facts of bench/memory.py: fact sets, scoring
from smallfleet.config import load_config
from smallfleet.engine import Engine
from smallfleet.fleet import Fleet
from smallfleet.ledger import Ledger

MODEL = "qwen2.5-coder-0.5b"
MODES = {"memory off": "enabled = false", "extract, then answer": "defer = false", "answer, then extract": "defer = true"}
FOLLOW_UP = ("order", "What is my order id?")


def config(tmp: Path, mode: str) -> Path:
    p = tmp / f"{len(list(tmp.glob('*.toml')))}.toml"
    p.write_text(f'[ledger]\npath = "{tmp / "ledger.db"}"\n[memory]\npath = "{tmp / "memory.db"}"\nmodel = "{MODEL}"\n'
                 f"{MODES[mode]}\n")
    return p


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def run(n_sets: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="smallfleet-memlat-"))
    env = {"SMALLFLEET_THREADS": "2"}
    configs = {m: load_config(config(tmp, m), env=env) for m in MODES}
    fleet = Fleet(configs["memory off"])  # one loaded model and one ledger for all three
    ledger = Ledger(configs["memory off"].ledger_path)
    engines = {m: Engine(c, fleet=fleet, ledger=ledger) for m, c in configs.items()}
    fleet.get(MODEL).load()
    sets = MB.fact_sets(n_sets)
    warm = [{"role": "system", "content": MB.SYSTEM}, {"role": "user", "content": "Hello!"}]
    await engines["memory off"].complete({"model": MODEL, "messages": warm, "max_tokens": 8})
    rows: list[dict[str, Any]] = []
    modes = list(MODES)
    for si, fs in enumerate(sets):
        order = modes[si % 3:] + modes[:si % 3]
        for mode in order:
            eng = engines[mode]
            for timing in ("back-to-back", "after a pause"):
                sid = f"{mode}-{timing}-{si}"
                first = [{"role": "system", "content": MB.SYSTEM}, {"role": "user", "content": fs["plant"].format(**fs)}]
                t0 = time.perf_counter()
                out1 = await eng.complete({"model": MODEL, "messages": first, "max_tokens": 24}, session_id=sid)
                t1 = time.perf_counter()
                if timing == "after a pause":  # the user reads the answer and types: the background read ends first
                    await eng.drain()
                t2 = time.perf_counter()
                later = first + [{"role": "assistant", "content": out1.final.result.content or MB.ACK},
                                 {"role": "user", "content": FOLLOW_UP[1]}]
                out2 = await eng.complete({"model": MODEL, "messages": later, "max_tokens": 24}, session_id=sid)
                t3 = time.perf_counter()
                await eng.drain()
                answer = out2.final.result.content or ""
                rows.append({"set": si, "mode": mode, "timing": timing, "first_s": round(t1 - t0, 3),
                             "pause_s": round(t2 - t1, 3), "follow_up_s": round(t3 - t2, 3),
                             "pinned": "session facts pinned" in out2.reason,
                             "recalled": MB.recalled(FOLLOW_UP[0], fs, answer), "answer": answer})
                print(f"set {si + 1}/{len(sets)} {mode:<22} {timing:<13} first {t1 - t0:5.2f} s  "
                      f"follow-up {t3 - t2:5.2f} s", file=sys.stderr)
    for eng in engines.values():
        await eng.drain()
        eng.memory.close()
    await fleet.aclose()
    ledger.close()
    table = []
    for m in MODES:
        for timing in ("back-to-back", "after a pause"):
            sel = [r for r in rows if (r["mode"], r["timing"]) == (m, timing)]
            f, u = [r["first_s"] for r in sel], [r["follow_up_s"] for r in sel]
            table.append({"mode": m, "follow_up": timing, "conversations": len(sel),
                          "first_p50_s": round(statistics.median(f), 3), "first_p95_s": round(pct(f, 0.95), 3),
                          "follow_up_p50_s": round(statistics.median(u), 3), "follow_up_p95_s": round(pct(u, 0.95), 3),
                          "pinned": sum(r["pinned"] for r in sel), "recalled": sum(r["recalled"] for r in sel)})
    return {"date": time.strftime("%Y-%m-%d"), "model": MODEL, "threads": 2, "sets": n_sets, "table": table, "rows": rows,
            "load_avg_after": list(os.getloadavg()),
            "note": "wall time of Engine.complete per request; the follow-up is sent as soon as the first answer is back"}


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--sets", type=int, default=8, help="conversations per mode and timing (default 8, at most 16)")
    ap.add_argument("--out", default=str(RESULTS / "memory_latency.json"), help="default bench/results/memory_latency.json")
    args = ap.parse_args()
    if args.sets < 1 or args.sets > len(MB.NAMES):
        raise SystemExit(f"--sets must be between 1 and {len(MB.NAMES)}")
    res = asyncio.run(run(args.sets))
    print(f"\n{'mode':<22} {'follow-up sent':<14} {'first turn p50/p95 (s)':>24} {'follow-up p50/p95 (s)':>23} {'pinned':>7} "
          f"{'recalled':>9}")
    for r in res["table"]:
        print(f"{r['mode']:<22} {r['follow_up']:<14} {r['first_p50_s']:>11.2f} / {r['first_p95_s']:<10.2f} {r['follow_up_p50_s']:>10.2f} / "
              f"{r['follow_up_p95_s']:<10.2f} {r['pinned']:>4}/{r['conversations']} {r['recalled']:>6}/{r['conversations']}")
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
