"""The turn after a tool result, on the local models: as the client sends it vs with the answer nudge.

An agent loop: the model called a tool, the client sent the result back as a ``role: "tool"``
message; now the model must answer in words or make the *next* call. Each task below fixes the
first call and its result, asks the model for the next turn through embedded llama.cpp (the
packaged GGUFs' own Hermes-style tool template, rendered by llama.cpp), and scores what comes back
the way the gateway would: tool calls written as JSON text are lifted as the backend lifts them,
then ``loop_answer`` (the check) and the task's expectation decide.

- ``single``: one call is enough; the answer must carry the result's key value.
- ``multi``: the result only leads to the next call (e.g. an order's city, then its weather); the
  turn must be that call.

    python bench/tool_turns.py [--models M,..]     # both models; prints a table, writes bench/results/tool_turns.json
"""

from __future__ import annotations

import json
import time
from typing import Any

from _common import RESULTS, parser, write_json

MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def tool(name: str, desc: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": desc,
                                             "parameters": {"type": "object", "properties": props, "required": list(props)}}}


S, N = {"type": "string"}, {"type": "number"}
WEATHER = tool("get_weather", "Current weather in a city", {"city": S})
CONVERT = tool("convert_currency", "Convert an amount between currencies", {"amount": N, "from_currency": S, "to_currency": S})
ORDER = tool("get_order", "Look up an order by id", {"order_id": S})
TIME = tool("get_time", "Current local time in a timezone", {"timezone": S})
TICKET = tool("create_ticket", "Open a support ticket", {"title": S, "priority": {"type": "string", "enum": ["low", "high"]}})
UNITS = tool("convert_units", "Convert a quantity between units", {"value": N, "from_unit": S, "to_unit": S})
CAL = tool("list_events", "Events in the user's calendar on a date", {"date": S})

# (kind, question, tools, first call name, its arguments, its result, expectation)
# single: words that must be in the answer; multi: (next tool, a string its arguments must contain)
TASKS: list[tuple[str, str, list[dict[str, Any]], str, dict[str, Any], dict[str, Any], Any]] = [
    ("single", "What's the weather in Madrid?", [WEATHER, TIME], "get_weather", {"city": "Madrid"},
     {"city": "Madrid", "temp_c": 31, "sky": "clear"}, ["31"]),
    ("single", "How much is 120 US dollars in euros?", [CONVERT, WEATHER], "convert_currency",
     {"amount": 120, "from_currency": "USD", "to_currency": "EUR"}, {"amount": 110.4, "currency": "EUR", "rate": 0.92}, ["110.4"]),
    ("single", "Where is my order ORD-7731?", [ORDER, TICKET], "get_order", {"order_id": "ORD-7731"},
     {"order_id": "ORD-7731", "status": "shipped", "carrier": "DHL", "eta": "2026-12-03"}, ["shipped"]),
    ("single", "What time is it in Tokyo right now?", [TIME, WEATHER], "get_time", {"timezone": "Asia/Tokyo"},
     {"timezone": "Asia/Tokyo", "time": "21:14"}, ["21:14"]),
    ("single", "Open a high priority ticket titled 'Printer on fire'.", [TICKET, ORDER], "create_ticket",
     {"title": "Printer on fire", "priority": "high"}, {"ticket_id": "T-5521", "status": "open"}, ["T-5521"]),
    ("single", "Is it raining in London?", [WEATHER], "get_weather", {"city": "London"},
     {"city": "London", "temp_c": 9, "sky": "rain"}, ["rain"]),
    ("single", "How many kilometres is 26.2 miles?", [UNITS], "convert_units", {"value": 26.2, "from_unit": "mi", "to_unit": "km"},
     {"value": 42.16, "unit": "km"}, ["42.16"]),
    ("single", "What do I have on 2026-12-04?", [CAL, TICKET], "list_events", {"date": "2026-12-04"},
     {"date": "2026-12-04", "events": [{"time": "10:00", "title": "Dentist"}]}, ["Dentist"]),
    ("multi", "What's the weather where my order ORD-7731 is being delivered?", [ORDER, WEATHER], "get_order",
     {"order_id": "ORD-7731"}, {"order_id": "ORD-7731", "status": "shipped", "delivery_city": "Lyon"}, ("get_weather", "Lyon")),
    ("multi", "Convert 50 GBP to the currency of my order ORD-1's country; look the order up first.", [ORDER, CONVERT],
     "get_order", {"order_id": "ORD-1"}, {"order_id": "ORD-1", "country": "Japan", "currency": "JPY"}, ("convert_currency", "JPY")),
    ("multi", "My order ORD-88 is late: look it up and, if it is delayed, open a high priority ticket about it.", [ORDER, TICKET],
     "get_order", {"order_id": "ORD-88"}, {"order_id": "ORD-88", "status": "delayed", "days_late": 4}, ("create_ticket", "ORD-88")),
    ("multi", "What time is it where my order ORD-5 ships to?", [ORDER, TIME], "get_order", {"order_id": "ORD-5"},
     {"order_id": "ORD-5", "delivery_timezone": "America/Chicago"}, ("get_time", "Chicago")),
]


def score(task: tuple[Any, ...], message: dict[str, Any], finish: str) -> tuple[str, str]:
    """(outcome, loop_answer reason) for one turn, judged as the gateway would."""
    from smallfleet.checks import run_checks
    from smallfleet.config import KindPolicy
    from smallfleet.models._toolcalls import parse_tool_calls
    from smallfleet.models.base import ChatResult
    from smallfleet.step import Step, StepKind

    kind, _, tools, _, _, _, want = task
    msg = dict(message)
    names = {t["function"]["name"] for t in tools}
    if not msg.get("tool_calls"):  # the backend lifts a JSON call out of the text
        calls = parse_tool_calls(msg.get("content") or "", names)
        if calls:
            msg = {"role": "assistant", "content": None, "tool_calls": calls}
    res = ChatResult("m", msg, finish, 0, 0, 0.0)
    v = run_checks(["loop_answer"], Step({"messages": conversation(task), "tools": tools}, StepKind.RESHAPING), res,
                   KindPolicy("small", ()))
    if v and not v[0].passed:
        return "broken", v[0].reason
    calls = msg.get("tool_calls") or []
    if kind == "multi":
        ok = bool(calls) and calls[0]["function"]["name"] == want[0] and want[1].lower() in calls[0]["function"]["arguments"].lower()
        return ("ok" if ok else ("answered instead" if not calls else "wrong call")), ""
    if calls:
        return "called again", ""
    text = (msg.get("content") or "").lower()
    return ("ok" if all(w.lower() in text for w in want) else "missing the value"), ""


def conversation(task: tuple[Any, ...]) -> list[dict[str, Any]]:
    _, q, _, name, args, result, _ = task
    return [{"role": "user", "content": q},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                 "function": {"name": name, "arguments": json.dumps(args)}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(result)}]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated packaged models (default: the 0.5B and the 1.5B)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    ap.add_argument("--max-tokens", type=int, default=100, help="tokens per turn (default 100)")
    ap.add_argument("--out", default=str(RESULTS / "tool_turns.json"), help="default bench/results/tool_turns.json")
    a = ap.parse_args()
    models = [m for m in a.models.split(",") if m]
    import xllamacpp

    from smallfleet.assets import ensure_packaged
    from smallfleet.models._toolcalls import with_result_nudge

    rows: list[dict[str, Any]] = []
    for model in models:
        p = xllamacpp.CommonParams()
        p.model.path = str(ensure_packaged(model))
        p.n_ctx = 4096
        p.cpuparams.n_threads = p.cpuparams_batch.n_threads = a.threads
        p.verbosity = -1
        srv = xllamacpp.Server(p)
        for variant in ("as sent", "with nudge"):
            for task in TASKS:
                msgs = conversation(task)
                if variant == "with nudge":
                    msgs = with_result_nudge(msgs, True)
                t0 = time.perf_counter()
                r = srv.handle_chat_completions({"messages": msgs, "tools": task[2], "max_tokens": a.max_tokens, "temperature": 0})
                choice = r["choices"][0]
                outcome, why = score(task, choice["message"], choice.get("finish_reason") or "stop")
                rows.append({"model": model, "variant": variant, "kind": task[0], "question": task[1], "outcome": outcome,
                             "check": why, "answer": (choice["message"].get("content") or "")[:300],
                             "calls": choice["message"].get("tool_calls"), "seconds": round(time.perf_counter() - t0, 2)})
                print(f"{model:<20}{variant:<12}{task[0]:<8}{outcome:<18}{(choice['message'].get('content') or '')[:70]!r}", flush=True)
        del srv
    print(f"\n{'model':<20}{'variant':<12}{'single-step ok':>16}{'multi-step ok':>15}{'broken turns':>14}")
    summary = []
    for model in models:
        for variant in ("as sent", "with nudge"):
            sel = [r for r in rows if r["model"] == model and r["variant"] == variant]
            s = [r for r in sel if r["kind"] == "single"]
            m = [r for r in sel if r["kind"] == "multi"]
            row = {"model": model, "variant": variant, "single_ok": sum(r["outcome"] == "ok" for r in s), "single": len(s),
                   "multi_ok": sum(r["outcome"] == "ok" for r in m), "multi": len(m),
                   "broken": sum(r["outcome"] == "broken" for r in sel), "turns": len(sel)}
            summary.append(row)
            print(f"{model:<20}{variant:<12}{row['single_ok']:>12}/{row['single']:<3}{row['multi_ok']:>11}/{row['multi']:<3}"
                  f"{row['broken']:>10}/{row['turns']}")
    write_json(a.out, {"summary": summary, "rows": rows, "setup": {"threads": a.threads, "temperature": 0, "max_tokens": a.max_tokens,
                                                                  "date": time.strftime("%Y-%m-%d %H:%M")}})


if __name__ == "__main__":
    main()
