"""How long replaying agent steps with 5k-token prompts takes on the small model (goal: 100 steps in 10 min).

``smallfleet learn replay`` runs a conversation's steps in order, so each step's prompt (the agent's
long system prompt and tools, then the growing history) mostly comes from llama.cpp's prompt cache.
Here: 10 conversations of 10 steps with one agent's ~4.4k-token system prompt and 8 tools, each step
adding a turn (prompts of about 5k to 5.6k tokens), replayed through smallfleet.learn.replay on the
built-in small model (answers capped at 32 tokens). Compared with the same 100 steps in a shuffled
order, where consecutive steps rarely share a history (the cache holds only the system prompt).

    python bench/replay_speed.py          # ~10-20 min on 2 cores
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from typing import Any

from _common import RESULTS, environment, parser, write_json

RULES = ["Refunds above {n} EUR need a manager's approval.", "Orders older than {n} days cannot be cancelled.",
         "Never share a customer's address with a third party; ticket {n} explains why.",
         "Escalate any complaint mentioning a lawyer within {n} hours.", "Shipping to the islands adds {n} EUR."]


def agent() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = random.Random(7)
    policy = " ".join(rng.choice(RULES).format(n=rng.randint(2, 900)) for _ in range(320))
    system = {"role": "system", "content": "You are the support agent of a lamp shop. Follow the policy.\n" + policy}
    tools = [{"type": "function", "function": {"name": n, "description": f"{n.replace('_', ' ')} for an order", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}, "note": {"type": "string"}}, "required": ["order_id"]}}}
        for n in ("track_order", "cancel_order", "refund_order", "change_address", "open_ticket", "close_ticket",
                  "send_email", "lookup_customer")]
    return system, tools


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--conversations", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--shuffled", action="store_true", help="also the shuffled order (doubles the time)")
    ap.add_argument("--json", default=str(RESULTS / "replay_speed.json"))
    args = ap.parse_args()

    from smallfleet.capture.trace import Trace
    from smallfleet.config import load_config
    from smallfleet.engine import Engine
    from smallfleet.learn.clusters import Cluster
    from smallfleet.learn.replay import replay

    system, tools = agent()
    traces = []
    for c in range(args.conversations):
        history: list[dict[str, Any]] = []
        for s in range(args.steps):
            history = [*history, {"role": "user", "content": f"Customer {c}: where is order ORD-{c}{s:03d}? It was due on day {s + 3}."}]
            traces.append(Trace(id=f"c{c}s{s}", kind="tool_choice", trace=f"conv{c}", ts=float(c * 100 + s),
                                request={"messages": [system, *history], "tools": tools, "max_tokens": 32},
                                final={"role": "assistant", "content": f"Order ORD-{c}{s:03d} ships tomorrow."}))
            history = [*history, {"role": "assistant", "content": f"Order ORD-{c}{s:03d} ships tomorrow."}]
    cluster = Cluster(id="c1", kind="tool_choice", signature="", name="support", tools=[], terms=[], size=len(traces),
                      members=[t.id for t in traces])
    cfg = load_config(None, env={})
    cfg = replace(cfg, capture=replace(cfg.capture, enabled=False))
    small = cfg.tier_model(cfg.tiers[0])
    out: dict[str, Any] = {"environment": environment(), "model": small.name, "steps": len(traces)}

    async def run(order: list[Trace], label: str) -> dict[str, Any]:
        eng = Engine(cfg, ledger=False)
        eng.fleet.get(small.name).load()
        t0 = time.monotonic()

        def progress(i: int, n: int, s: Any) -> None:
            if i % 10 == 0:
                print(f"  {label}: {i}/{n} at {time.monotonic() - t0:.0f} s", flush=True)

        try:
            rep = await replay(eng, order, [cluster], small.name, min_steps=1, progress=progress)
        finally:
            await eng.aclose()
        wall = time.monotonic() - t0
        tokens = [s.tokens_in for s in rep.steps]
        return {"wall_s": wall, "per_100_steps_min": wall / len(order) * 100 / 60, "prompt_tokens_min": min(tokens),
                "prompt_tokens_max": max(tokens), "prompt_tokens_mean": sum(tokens) / len(tokens)}

    print(f"replaying {len(traces)} steps on {small.name}, conversations in order", flush=True)
    out["in_order"] = asyncio.run(run(traces, "in order"))
    if args.shuffled:
        shuffled = traces[:]
        random.Random(0).shuffle(shuffled)
        out["shuffled"] = asyncio.run(run([replace(t, trace=f"solo{i}") for i, t in enumerate(shuffled)], "shuffled"))
    write_json(args.json, out)
    for k in ("in_order", "shuffled"):
        if k in out:
            r = out[k]
            print(f"{k:<10} {r['wall_s']:.0f} s, {r['per_100_steps_min']:.1f} min per 100 steps, prompts "
                  f"{r['prompt_tokens_min']}-{r['prompt_tokens_max']} tokens")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
