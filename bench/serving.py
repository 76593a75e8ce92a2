"""Serving benchmark: smallfleet's embedded backend vs raw xllamacpp, and shared-prefix reuse.

Part 1 — throughput: the same prompts, alternating raw ``xllamacpp.Server.handle_chat_completions``
and ``LlamaCppBackend.chat`` (as users get it: logprobs on, tool/JSON handling active), each with
prompt caching off so every call does the full work. Reports end-to-end generated tokens/s.

Part 2 — prefix reuse: repeated agent steps sharing a long system prompt + tool definitions, with
``cache_prompt`` off (cold) vs on (warm, the default). Reports mean latency per step and speed-up.

    python bench/serving.py [--model package:qwen2.5-coder-0.5b] [--rounds 8] [--max-tokens 64]

Prints a table and writes bench/results/serving.json.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from _common import PROMPTS, RESULTS, parser, write_json

from smallfleet.config import load_config
from smallfleet.demo.inbox import TOOLS, load_inbox
from smallfleet.models.llamacpp import LlamaCppBackend, resolve_location


def raw_server(path: Path, threads: int, ctx: int):
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(path)
    p.n_ctx = ctx
    p.n_parallel = 1
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.verbosity = -1
    p.cache_ram_mib = 256
    return xllamacpp.Server(p)


async def throughput(ours: LlamaCppBackend, raw, rounds: int, max_tokens: int) -> dict:
    res = {"raw": [], "ours": []}
    for i in range(rounds):
        prompt = PROMPTS[i % len(PROMPTS)]
        req = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.0,
               "cache_prompt": False}
        order = ("raw", "ours") if i % 2 == 0 else ("ours", "raw")  # alternate to cancel drift
        for who in order:
            t0 = time.perf_counter()
            if who == "raw":
                r = await asyncio.to_thread(raw.handle_chat_completions, dict(req))
                n = r["usage"]["completion_tokens"]
                decode = r["timings"]["predicted_per_second"]
            else:
                r = await ours.chat(req)
                n = r.tokens_out
                decode = r.extra["timings"]["predicted_per_second"]
            wall = time.perf_counter() - t0
            res[who].append({"tokens": n, "wall_s": wall, "tok_s": n / wall, "decode_tok_s": decode})
    out = {}
    for who, rows in res.items():
        toks = sum(r["tokens"] for r in rows)
        wall = sum(r["wall_s"] for r in rows)
        out[who] = {"calls": len(rows), "tokens": toks, "wall_s": round(wall, 3), "tok_s": round(toks / wall, 2),
                    "decode_tok_s_median": round(statistics.median(r["decode_tok_s"] for r in rows), 2)}
    out["ours_vs_raw_pct"] = round(100 * (out["ours"]["tok_s"] / out["raw"]["tok_s"] - 1), 2)
    return out


async def prefix_reuse(ours: LlamaCppBackend, steps: int) -> dict:
    inbox = load_inbox()
    system = {"role": "system", "content": (
        f"You are the support agent of {inbox['company']}. Be accurate and brief. Only use facts from the e-mail and "
        "tool results. Policies: refunds need an order id; never promise dates; escalate legal threats; reply in "
        "the customer's language; sign as 'Lumen Home support'. ") * 2}
    mails = inbox["emails"]
    out = {}
    for mode, cache in (("cold", False), ("warm", True)):
        lat, cached, prompt_tok = [], [], []
        for i in range(steps + 1):
            m = mails[i % len(mails)]
            req = {"messages": [system, {"role": "user", "content": f"Handle this e-mail with one tool call.\n\n{m['body']}"}],
                   "tools": TOOLS, "tool_choice": "required", "max_tokens": 48, "cache_prompt": cache}
            t0 = time.perf_counter()
            r = await ours.chat(req)
            if i == 0:
                continue  # the first step fills the cache in warm mode; skip it in both modes
            lat.append(time.perf_counter() - t0)
            cached.append(r.cached_tokens)
            prompt_tok.append(r.tokens_in)
        out[mode] = {"steps": len(lat), "mean_latency_s": round(statistics.mean(lat), 3),
                     "p50_latency_s": round(statistics.median(lat), 3), "mean_prompt_tokens": round(statistics.mean(prompt_tok)),
                     "mean_cached_tokens": round(statistics.mean(cached))}
    out["speedup"] = round(out["cold"]["mean_latency_s"] / out["warm"]["mean_latency_s"], 2)
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", default="package:qwen2.5-coder-0.5b", help="the model's location (default: the packaged 0.5B)")
    ap.add_argument("--rounds", type=int, default=8, help="throughput prompts, each sent to both backends (default 8)")
    ap.add_argument("--steps", type=int, default=8, help="timed agent steps per prefix-reuse mode (default 8)")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens generated per throughput prompt (default 64)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads (default: the cores, 2 here)")
    ap.add_argument("--out", default=str(RESULTS / "serving.json"), help="default bench/results/serving.json")
    a = ap.parse_args()

    cfg = load_config(env={})
    spec = replace(cfg.tier_model("small"), location=a.model, threads=a.threads, context=4096, name="bench")
    path = resolve_location(spec)
    print(f"model {path.name}, {a.threads} threads, {a.rounds} rounds x {a.max_tokens} tokens", file=sys.stderr)
    ours = LlamaCppBackend(spec)
    ours.load()
    raw = raw_server(path, a.threads, spec.context)

    async def run() -> dict:
        tp = await throughput(ours, raw, a.rounds, a.max_tokens)
        pr = await prefix_reuse(ours, a.steps)
        return {"throughput": tp, "prefix_reuse": pr}

    res = asyncio.run(run())
    res["setup"] = {"model": path.name, "threads": a.threads, "rounds": a.rounds, "max_tokens": a.max_tokens,
                    "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d %H:%M")}
    tp, pr = res["throughput"], res["prefix_reuse"]
    print(f"\n{'throughput':<28}{'raw xllamacpp':>16}{'smallfleet':>14}")
    print(f"{'generated tok/s (end-to-end)':<28}{tp['raw']['tok_s']:>16.2f}{tp['ours']['tok_s']:>14.2f}")
    print(f"{'decode tok/s (median)':<28}{tp['raw']['decode_tok_s_median']:>16.2f}{tp['ours']['decode_tok_s_median']:>14.2f}")
    print(f"{'tokens / wall s':<28}{tp['raw']['tokens']:>10} / {tp['raw']['wall_s']:<5.1f}{tp['ours']['tokens']:>8} / {tp['ours']['wall_s']:.1f}")
    print(f"smallfleet vs raw: {tp['ours_vs_raw_pct']:+.2f} % (goal: within 5 %)")
    print(f"\n{'prefix reuse (agent steps)':<28}{'cold':>10}{'warm':>10}")
    for k in ("mean_latency_s", "p50_latency_s", "mean_prompt_tokens", "mean_cached_tokens"):
        print(f"{k:<28}{pr['cold'][k]:>10}{pr['warm'][k]:>10}")
    print(f"speed-up from prefix reuse: {pr['speedup']:.2f}x (goal: >= 3x)")
    print()
    write_json(a.out, res)


if __name__ == "__main__":
    main()
