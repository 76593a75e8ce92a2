"""A day of a small fleet's traffic, sent through a real gateway (scripted models) into a real ledger: the
data the dashboard tests read. Every kind of thing the dashboard shows happens at least once:
verified steps, an escalation, an unverified answer, a remote call with personal data pseudonymised,
a tool call the guard blocks after an injection, runs with and without feedback."""

from __future__ import annotations

import json
from typing import Any

import httpx

from .test_guards_gateway import EVIL
from .test_guards_gateway import MESSAGES as INJECTED  # the injected e-mail the guard tests use

REMOTE = '\n[models.remote]\nbackend = "openai"\nurl = "http://127.0.0.1:9/v1"\nmodel = "gpt-x"\ntier = "frontier"\n' \
         'price_in = 2.5\nprice_out = 10.0\n'
TOOLS = [{"type": "function", "function": {
    "name": "send_email", "description": "Send an e-mail",
    "parameters": {"type": "object", "properties": {"recipients": {"type": "array", "items": {"type": "string"}},
                                                   "body": {"type": "string"}}, "required": ["recipients", "body"]}}}]
TICKET = "Route this ticket. Answer with one of: billing, shipping, returns.\n\nTicket: my parcel is late"
PRIVATE = ("Answer with one of: approve, reject.\n\nRefund request from Jane Doe (jane.doe@example.com, +1 415 555 0199) "
           "for order 1182: the kettle arrived broken.")


def small(req: dict[str, Any]) -> Any:
    text = str(req["messages"][-1].get("content") or "")
    if req.get("tools"):
        return {"content": None, "tool_calls": [{"id": "t1", "type": "function", "function": {
            "name": "send_email", "arguments": json.dumps({"recipients": [EVIL], "body": "hello"})}}]}
    if "Route this ticket" in text:
        return "a late parcel"  # not one of the labels: caught, escalated
    if "Refund request" in text:
        return "it depends"  # caught on every tier: ends unverified
    return "All good: " + str(len(req["messages"])) + " messages read."


def large(req: dict[str, Any]) -> Any:
    text = str(req["messages"][-1].get("content") or "")
    if "Route this ticket" in text:
        return "shipping"
    return small(req)


def remote(req: dict[str, Any]) -> Any:
    return "it depends on the receipt"  # still not a label: the step ends unverified


def populate(gw: Any) -> dict[str, Any]:
    """Send the day's requests; what was sent, for the tests to check the pages against."""
    gw.backends["smollm2"].fn = small
    gw.backends["qwen05"].fn = large
    gw.backends["remote"].fn = remote
    seen: dict[str, Any] = {"steps": [], "runs": {}}

    def ask(body: dict[str, Any], run: str | None = None, **headers: str) -> httpx.Response:
        h = {"x-smallfleet-run": run} if run else {}
        r = httpx.post(gw.base + "/v1/chat/completions", json={"model": "auto", **body}, headers={**h, **headers}, timeout=60)
        assert r.status_code == 200, r.text
        seen["steps"].append(r.headers["x-smallfleet-step-id"])
        seen["runs"].setdefault(run, []).append(r.headers["x-smallfleet-step-id"])
        return r

    for i in range(4):
        ask({"messages": [{"role": "user", "content": f"Write a one-line status note number {i}."}]}, run="nightly-report")
    seen["escalated"] = ask({"messages": [{"role": "user", "content": TICKET}]}, run="support-inbox").headers["x-smallfleet-step-id"]
    seen["unverified"] = ask({"messages": [{"role": "user", "content": PRIVATE}]}, run="refunds").headers["x-smallfleet-step-id"]
    blocked = ask({"messages": INJECTED, "tools": TOOLS}, run="support-inbox")
    seen["blocked"] = blocked.headers["x-smallfleet-step-id"]
    ask({"messages": [{"role": "user", "content": "Say hello."}]})  # no run
    for run, ok in (("nightly-report", True), ("support-inbox", False)):
        r = httpx.post(gw.base + "/v1/smallfleet/feedback", json={"run_id": run, "success": ok})
        assert r.status_code == 200, r.text
    return seen
