"""The main job: a support-inbox agent whose every step goes through the smallfleet cascade.

Per e-mail: classify → extract fields → choose a tool → (the tool runs locally) → draft the reply.
The tools are small deterministic functions over a fake order book, so the workflow is real agent
traffic (tool calls, tool results, reshaping) without any external service.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from ..config import Config
from ..engine import Engine
from ..outcome import Outcome
from ..report import build_report

CATEGORIES = ["order_status", "refund", "billing", "product_question", "account_change", "feedback"]

CLASSIFY_SCHEMA = {
    "type": "object",
    "properties": {"category": {"enum": CATEGORIES}, "urgency": {"enum": ["low", "normal", "high"]}},
    "required": ["category", "urgency"],
}
EXTRACT_SCHEMA = {
    "type": "object",
    "properties": {
        "customer_name": {"type": "string", "maxLength": 60},
        "order_id": {"anyOf": [{"type": "string", "pattern": "^ORD-[0-9]{5}$"}, {"type": "null"}]},
        "amount_owed": {"anyOf": [{"type": "number"}, {"type": "null"}],
                        "description": "money the customer asks to get back, in USD, computed if needed"},
    },
    "required": ["customer_name", "order_id", "amount_owed"],
}
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "track_shipment", "description": "Look up where an order's parcel is.",
                                      "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "issue_refund", "description": "Refund money to the customer for an order.",
                                      "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                                                     "required": ["order_id", "amount"]}}},
    {"type": "function", "function": {"name": "search_faq", "description": "Search the product FAQ for an answer to a product question.",
                                      "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}},
    {"type": "function", "function": {"name": "update_account", "description": "Change a field on the customer's account.",
                                      "parameters": {"type": "object",
                                                     "properties": {"field": {"enum": ["email", "phone", "address"]}, "value": {"type": "string"}},
                                                     "required": ["field", "value"]}}},
    {"type": "function", "function": {"name": "log_feedback", "description": "Record praise or feedback that needs no action.",
                                      "parameters": {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 120}},
                                                     "required": ["summary"]}}},
]
SYSTEM = ("You are the support agent of {company}. Be accurate and brief. Only use facts from the e-mail and tool results.")


_TOTAL = re.compile(r"Total:[^\n]*?([0-9][0-9,]*(?:\.[0-9]+)?)[^0-9\n]*$", re.I | re.M)


def _category(o: Outcome) -> str | None:
    try:
        return json.loads(o.final.result.content).get("category") if o.final.result else None
    except (json.JSONDecodeError, AttributeError):
        return None


def load_inbox() -> dict[str, Any]:
    inbox: dict[str, Any] = json.loads(resources.files("smallfleet.demo").joinpath("inbox.json").read_text(encoding="utf-8"))
    return inbox


def run_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The demo's local tools: deterministic answers over a tiny fake order book."""
    oid = str(args.get("order_id", ""))
    if name == "track_shipment":
        return {"order_id": oid, "status": "in transit", "last_scan": "regional depot", "eta_days": 2}
    if name == "issue_refund":
        return {"order_id": oid, "refunded": args.get("amount"), "status": "refund issued, 3-5 business days"}
    if name == "search_faq":
        return {"answer": "Arc pendant: E27 socket. Halo ceiling light: 3-year warranty including the LED driver."}
    if name == "update_account":
        return {"updated": args.get("field"), "status": "done"}
    if name == "log_feedback":
        return {"status": "logged"}
    return {"error": f"unknown tool {name}"}


@dataclass
class StepRecord:
    email: str
    step: str
    outcome: Outcome
    seconds: float

    def row(self) -> dict[str, Any]:
        o = self.outcome
        checks = [f"{v.check}{'' if v.passed else '✗'}" for a in o.attempts for v in a.verdicts]
        msg = o.final.result.message if o.final.result else {}
        answer = (msg.get("content") or "") if not msg.get("tool_calls") else \
            "; ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in msg["tool_calls"])
        return {"email": self.email, "step": self.step, "kind": o.step.kind.value, "model": o.final.spec.name,
                "tier": o.final.tier, "checks": " ".join(dict.fromkeys(checks)).replace("_valid", "").replace("confidence", "conf"),
                "escalated": o.escalated,
                "latency_s": round(self.seconds, 2), "cost_usd": o.cost_usd, "frontier_cost_usd": o.frontier_cost_usd,
                "answer": answer.strip(), "reason": o.reason, "verified": o.final.passed,
                "crosscheck": crosschecked(o)}


def crosschecked(o: Outcome) -> str:
    """What a reasoning step was cross-checked with, per attempt: the program's verdict and the combined score."""
    parts = []
    for a in o.attempts:
        prog = next((v for v in a.verdicts if v.check == "program"), None)
        score = next((v for v in a.verdicts if v.check == "reasoning"), None)
        if prog is None:
            continue
        said = prog.reason.split(":")[0]
        parts.append(f"{a.tier}: {said}" + (f", p_right {score.score:.2f} {'passed' if score.passed else 'failed'}"
                                              if score is not None and score.score is not None else ""))
    if o.crosschecked:
        parts.append(f"cross-checked figure {o.crosschecked}")
    return "; ".join(parts)


async def process_email(engine: Engine, company: str, mail: dict[str, Any], run_id: str,
                        on_step: Callable[[StepRecord], None]) -> list[StepRecord]:
    records: list[StepRecord] = []
    system = {"role": "system", "content": SYSTEM.format(company=company)}
    email_text = f"From: {mail['from']}\nSubject: {mail['subject']}\n\n{mail['body']}"

    async def step(name: str, request: dict[str, Any]) -> Outcome:
        t0 = time.perf_counter()
        o = await engine.complete({"model": "auto", **request}, run_id=run_id)
        rec = StepRecord(mail["id"], name, o, time.perf_counter() - t0)
        records.append(rec)
        on_step(rec)
        return o

    triage = await step("classify", {
        "messages": [system, {"role": "user", "content": "Classify this support e-mail. Categories: order_status (where is a parcel), "
                                           "refund (customer wants money back), billing (charges, invoices), product_question "
                                           "(question before buying or about a product), account_change (change account data), "
                                           f"feedback (praise or remarks, nothing to do).\n\n{email_text}"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "triage", "schema": CLASSIFY_SCHEMA}},
        "max_tokens": 40})
    await step("extract", {
        "messages": [system, {"role": "user", "content": f"Extract the customer's name, the order id (or null) and the amount of money owed "
                                                           f"to the customer in USD (or null if they ask for no money).\n\n{email_text}"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "fields", "schema": EXTRACT_SCHEMA}},
        "max_tokens": 80})
    note = ""
    if _category(triage) in ("refund", "billing"):
        # Money owed often has to be worked out from several figures: a reasoning step.
        calc = await step("work out amount", {
            "messages": [system, {"role": "user", "content": f"{email_text}\n\nHow much money do we owe this customer? "
                                                             "Calculate it step by step and end with 'Total: $X.XX'."}],
            "max_tokens": 220})
        totals = _TOTAL.findall(calc.final.result.content if calc.final.result else "")
        # Only a verified figure is passed on; an unverified one would steer the refund tool wrongly. When no
        # tier verified, a figure a program and an answer agree on is the next best thing, and says so.
        if totals and calc.final.passed:
            note = f"\n\n(Amount owed, as worked out: ${totals[-1]})"
        elif calc.crosschecked:
            note = f"\n\n(Amount owed, cross-checked by a program: ${calc.crosschecked.split()[0]})"
    ask = [system, {"role": "user", "content": "Handle this support e-mail: call exactly one tool, then use its result to write "
                                               f"the reply to the customer (at most 3 sentences).\n\n{email_text}{note}"}]
    o = await step("choose tool", {"messages": ask, "tools": TOOLS, "tool_choice": "required", "max_tokens": 120})
    calls = o.final.result.tool_calls if o.final.result else []
    if calls:
        call = calls[0]
        try:
            args = json.loads(call["function"]["arguments"])
        except json.JSONDecodeError:
            args = {}
        result = run_tool(call["function"]["name"], args)
        # The agent loop as any client runs it: the call goes back as the assistant's message and the
        # result as a role "tool" message; the next turn must be the reply (or another call).
        await step("draft reply", {
            "messages": [*ask, {"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)}],
            "tools": TOOLS, "max_tokens": 120})
    else:
        await step("draft reply", {"messages": ask[:1] + [{"role": "user", "content": f"Write a short reply to this e-mail.\n\n{email_text}"}],
                                   "max_tokens": 120})
    return records


def run_demo(config: Config, out: Console, err: Console, *, limit: int | None = None, json_out: str | None = None,
             load: Callable[[Engine], None] | None = None) -> list[dict[str, Any]]:
    inbox = load_inbox()
    mails = inbox["emails"][:limit] if limit else inbox["emails"]
    engine = Engine(config)
    if load:
        load(engine)
    run_id = f"demo-{int(time.time())}"
    rows: list[dict[str, Any]] = []
    table = Table(title=f"support inbox · {len(mails)} e-mails · run {run_id}")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("mail", "left"), ("step", "left"), ("kind", "left"), ("tier", "left"), ("checks (✗ = failed)", "left"),
        ("esc", "center"), ("s", "right"), ("cost $", "right"), ("answer", "left"))
    for col, just in columns:
        table.add_column(col, justify=just, no_wrap=True, overflow="ellipsis", max_width=50 if col == "answer" else None)

    def on_step(rec: StepRecord) -> None:
        r = rec.row()
        rows.append(r)
        err.print(f"[dim]{r['email']} {r['step']:<12} {r['kind']:<15} {r['model']:<20} "
                  f"{'ESCALATED ' if r['escalated'] else ''}{r['latency_s']:.1f}s[/]")

    async def go() -> None:
        try:
            for mail in mails:
                await process_email(engine, inbox["company"], mail, run_id, on_step)
        finally:
            await engine.aclose()

    t0 = time.perf_counter()
    asyncio.run(go())
    wall = time.perf_counter() - t0
    for r in rows:
        table.add_row(r["email"], r["step"], r["kind"], r["tier"] + ("" if r["verified"] else " ?"), r["checks"], "↑" if r["escalated"] else "",
                      f"{r['latency_s']:.1f}", f"{r['cost_usd']:.6f}", " ".join(r["answer"].split())[:50])
    out.print(table)
    from ..ledger import Ledger

    led = Ledger(config.ledger_target)
    rep = build_report(led, config, run_id)
    led.close()
    small = sum(1 for r in rows if r["tier"] == config.tiers[0])
    esc = sum(1 for r in rows if r["escalated"])
    tiers = ", ".join(f"{t} = {config.tier_model(t).name}" for t in config.tiers)
    out.print(f"[dim]{tiers}[/]")
    out.print(f"{len(rows)} steps in {wall:.0f} s · {small} answered by the {config.tiers[0]} tier · {esc} escalated")
    for r in rows:
        if r["escalated"]:
            out.print(f"  ↑ {r['email']} {r['step']}: {r['reason']}")
    checked = [r for r in rows if r["crosscheck"]]
    if checked:
        out.print("reasoning steps, cross-checked by a program:")
        for r in checked:
            out.print(f"  {r['email']} {r['step']}: {r['crosscheck']}")
    unverified = [f"{r['email']} {r['step']}" for r in rows if not r["verified"]]
    if unverified:
        out.print(f"[yellow]not verified even at the top tier (for a human, or a real frontier model):[/] {', '.join(unverified)}")
    out.print(f"[bold]savings:[/] spent ${rep.spend_usd:.6f} vs ${rep.counterfactual_usd:.6f} all-frontier → "
              f"saved ${rep.savings_usd:.6f} ({rep.savings_pct:.1f}%); [bold]at parity[/] (an unverified step's spend "
              f"counts as a loss: {rep.unverified_steps} of {rep.verified_steps + rep.unverified_steps}) "
              f"${rep.parity_savings_usd:.6f} ({rep.parity_savings_pct:.1f}%)")
    out.print(f"[dim]{rep.basis}[/]")
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({"run_id": run_id, "wall_s": wall, "steps": rows, "report": rep.as_dict()}, f, indent=1, default=str)
    return rows
