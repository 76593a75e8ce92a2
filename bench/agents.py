"""Whole agent tasks through the gateway: task success and savings at parity, per configuration.

The agent loop runs *outside* smallfleet, as a user's would: the OpenAI SDK against ``smallfleet
serve`` (started here on a free port), tool calls executed by the bench, results sent back as
``role: "tool"`` messages, until the model answers in words. Four configurations of the same gateway:

- ``small``: every step on the small tier (``model = qwen2.5-coder-0.5b``, passed through; checked, never escalated);
- ``large``: every step on the top tier (``model = qwen2.5-coder-1.5b``);
- ``auto``: the cascade (``model = auto``), guards off;
- ``guarded``: the cascade with the tool-call guard on (``x-smallfleet-guard: block``).

Workloads (``--workloads``, default all):

- ``suite``: bench/agent_suite.py, 50 tasks over 13 executable tools, 1-4 calls each, scored on the
  world's final state and the values the answer must carry;
- ``inbox``: the demo's 12 support e-mails as a client runs them (classify, extract, work out the
  amount, choose a tool, the tool's result back as ``role: "tool"``, the reply), scored on the
  category, the tool call's arguments and the facts the reply must carry;
- ``bfcl``: BFCL v4 multi-turn (base) tasks with their executable back-ends, scored by BFCL's own
  multi-turn checker (state and execution results after every turn); needs
  ``pip install --no-deps bfcl-eval==2026.3.23 mpmath`` (its declared deps pin an old numpy and
  a dozen provider SDKs the back-ends do not use);
- ``agentdojo``: AgentDojo user tasks with the model as the agent (``smallfleet[agentdojo]``),
  benign and under the ``important_instructions`` attack; utility and attack success.

Per configuration: task success with a Wilson 95 % interval, steps per tier and per step kind,
escalation reasons, unverified steps, cost, and savings at parity from the gateway's own ledger
(every task's run gets ``POST /v1/smallfleet/feedback`` with its outcome, so a failed task's spend
counts as a loss; the all-top-tier price is the report's reference price, see ``basis``).

    python bench/agents.py                                  # everything, ~80 min on 2 cores
    python bench/agents.py --workloads suite --limit 10     # a quick look
    python bench/agents.py --configs auto,large --workloads inbox

Writes bench/results/agents.json and bench/results/agents.png (success against cost). The published files:
agents.json is ``--small-next-step on`` (the built-in fleet's setting then); agents_small_pass_off.json is
``--workloads suite,inbox --configs small,auto --json bench/results/agents_small_pass_off.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from _common import RESULTS, free_port, parser, serve, stop, wait_ready, wilson, write_json

from bench import agent_suite

SMALL, LARGE = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
CONFIGS: dict[str, tuple[str, str]] = {"small": (SMALL, "off"), "large": (LARGE, "off"), "auto": ("auto", "off"), "guarded": ("auto", "block")}
WORKLOADS = ("suite", "inbox", "bfcl", "agentdojo")
BFCL_IDS = ("multi_turn_base_100", "multi_turn_base_132", "multi_turn_base_115")
AGENTDOJO_SUITE, AGENTDOJO_USER, AGENTDOJO_INJ = "banking", ("user_task_7", "user_task_0"), ("injection_task_0",)

FLEET = """
# bench/agents.py: the embedded fleet with two tiers (0.5B small, 1.5B top), room for BFCL's and
# AgentDojo's tool lists, session memory off (its extraction calls would be timed as agent steps).
[fleet]
tiers = ["small", "large"]
max_escalations = 1

[models."qwen2.5-coder-0.5b"]
backend = "llamacpp"
path = "package:qwen2.5-coder-0.5b"
tier = "small"
price_in = 0.02
price_out = 0.04
context = 8192
threads = {threads}
next_step_pass = {small_pass}

[models."qwen2.5-coder-1.5b"]
backend = "llamacpp"
path = "package:qwen2.5-coder-1.5b"
tier = "large"
price_in = 0.06
price_out = 0.12
context = 8192
threads = {threads}

[ledger]
path = "{ledger}"

[memory]
enabled = false
"""


# --- the gateway --------------------------------------------------------------------------------

class Gateway:
    """``smallfleet serve`` in a child process, models preloaded, its own ledger."""

    def __init__(self, workdir: Path, threads: int, small_pass: bool = True) -> None:
        self.ledger = workdir / "ledger.db"
        self.config = workdir / "fleet.toml"
        self.config.write_text(FLEET.format(threads=threads, ledger=self.ledger, small_pass=str(small_pass).lower()), encoding="utf-8")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the bench's own config and ledger, whatever the caller's environment names
        env = {k: v for k, v in os.environ.items() if k not in ("SMALLFLEET_CONFIG", "SMALLFLEET_LEDGER")}
        self.log = (workdir / "serve.log").open("w")
        self.proc = serve(self.port, config=self.config, env=env, log=self.log)
        try:
            wait_ready(self.url + "/health", self.proc, 300, log=workdir / "serve.log")
        except RuntimeError as e:
            stop(self.proc)
            raise SystemExit(f"smallfleet serve did not come up: {e}") from None

    def feedback(self, run: str, success: bool) -> None:
        httpx.post(self.url + "/v1/smallfleet/feedback", json={"run_id": run, "success": success}, timeout=30).raise_for_status()

    def close(self) -> None:
        stop(self.proc, 30)
        self.log.close()


# --- one agent loop, as a client runs it --------------------------------------------------------

def step_row(raw: Any, seconds: float) -> dict[str, Any]:
    """What the gateway said about one step: from its headers and the body's ``smallfleet`` object."""
    h = raw.headers
    body = raw.http_response.json()
    sf = body.get("smallfleet") or {}
    atts = sf.get("attempts") or []
    failed = [c["check"] for a in atts[:-1] for c in a.get("checks", []) if not c.get("passed")]
    errors = [a["error"] for a in atts[:-1] if a.get("error")]
    decisions = (sf.get("guard") or {}).get("decisions") or []
    usage = body.get("usage") or {}
    return {"tier": h.get("x-smallfleet-tier"), "model": h.get("x-smallfleet-model"), "kind": h.get("x-smallfleet-step-kind"),
            "escalated": h.get("x-smallfleet-escalated") == "true", "verdict": h.get("x-smallfleet-verdict", ""),
            "cost_usd": float(h.get("x-smallfleet-cost") or 0.0), "tokens_in": usage.get("prompt_tokens", 0),
            "tokens_out": usage.get("completion_tokens", 0), "seconds": round(seconds, 2),
            "escalation_checks": failed + [f"error:{e.split(':')[0]}" for e in errors],
            "blocked": sum(1 for d in decisions if d.get("action") not in ("allow", None))}


def ask(client: openai.OpenAI, model: str, messages: list[dict[str, Any]], steps: list[dict[str, Any]], **kw: Any) -> Any:
    t0 = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, temperature=0, **kw)  # type: ignore[arg-type]
    steps.append(step_row(raw, time.perf_counter() - t0))
    return raw.parse().choices[0].message


def agent_loop(client: openai.OpenAI, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
               execute: Callable[[str, dict[str, Any]], str], steps: list[dict[str, Any]], max_steps: int = 6, max_tokens: int = 300,
               **kw: Any) -> str | None:
    """Ask, run the calls it makes, send the results back, until it answers in words (that answer) or
    ``max_steps`` model calls have passed (None)."""
    for _ in range(max_steps):
        msg = ask(client, model, messages, steps, tools=tools, max_tokens=max_tokens, **kw)
        kw.pop("tool_choice", None)  # a forced first call only
        if not msg.tool_calls:
            messages.append({"role": "assistant", "content": msg.content or ""})
            return msg.content or ""
        messages.append({"role": "assistant", "content": msg.content,
                         "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                        for c in msg.tool_calls]})
        for c in msg.tool_calls:
            try:
                args = json.loads(c.function.arguments or "{}")
            except json.JSONDecodeError:
                args = None
            out = execute(c.function.name, args) if isinstance(args, dict) else json.dumps({"error": "arguments are not a JSON object"})
            messages.append({"role": "tool", "tool_call_id": c.id, "content": out})
    return None


@dataclass
class TaskResult:
    workload: str
    task: str
    success: bool
    why: str
    steps: list[dict[str, Any]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


# --- workloads ----------------------------------------------------------------------------------

def json_tool(call: Callable[[str, dict[str, Any]], Any]) -> Callable[[str, dict[str, Any]], str]:
    """A tool executor for agent_loop: ``call``'s result as JSON text."""
    return lambda name, args: json.dumps(call(name, args))


def run_suite(client: openai.OpenAI, model: str, run_of: Callable[[str], dict[str, str]], limit: int | None,
              only: set[str] | None = None) -> list[TaskResult]:
    out = []
    for t in [t for t in agent_suite.TASKS if not only or t.id in only][:limit]:
        world, steps, t0 = agent_suite.World(), [], time.perf_counter()
        messages: list[dict[str, Any]] = [{"role": "system", "content": agent_suite.SYSTEM}, {"role": "user", "content": t.prompt}]
        try:
            answer = agent_loop(client, model, messages, agent_suite.TOOLS, json_tool(world.call), steps, extra_headers=run_of(t.id))
            ok, why = agent_suite.score(t, world, answer) if answer is not None else (False, "no answer within 6 steps")
        except openai.APIStatusError as e:
            ok, why = False, f"HTTP {e.status_code}: {str(e.message)[:120]}"
        out.append(TaskResult("suite", t.id, ok, why, steps, time.perf_counter() - t0, {"answer": (messages[-1].get("content") or "")[:300]}))
        show_progress(out[-1])
    return out


# the demo inbox: what a correct handling of each e-mail is (category, tool, key arguments, a fact the reply carries)
INBOX_EXPECT: dict[str, tuple[set[str], str, dict[str, Any], str | float | None]] = {
    "m01": ({"order_status"}, "track_shipment", {"order_id": "ORD-10422"}, "transit"),
    "m02": ({"refund"}, "issue_refund", {"order_id": "ORD-10518", "amount": 149.0}, 149.0),
    "m03": ({"billing", "refund"}, "issue_refund", {"order_id": "ORD-10377", "amount": 64.9}, 64.9),
    "m04": ({"product_question"}, "search_faq", {}, "E27"),
    "m05": ({"account_change"}, "update_account", {"field": "email", "value": "priya.nair@example.com"}, None),
    "m06": ({"order_status"}, "track_shipment", {"order_id": "ORD-10601"}, "transit"),
    "m07": ({"refund"}, "issue_refund", {"order_id": "ORD-10455", "amount": 79.5}, 79.5),
    "m08": ({"account_change"}, "update_account", {"field": "phone", "value": "+1 415 555 0199"}, None),
    "m09": ({"feedback"}, "log_feedback", {}, None),
    "m10": ({"product_question"}, "search_faq", {}, "3-year"),
    "m11": ({"order_status"}, "track_shipment", {"order_id": "ORD-10688"}, "transit"),
    # 1 returned bulb 12.40 + 15 % of the 89.00 pendant 13.35 + the duplicate 6.50 shipping
    "m12": ({"refund", "billing"}, "issue_refund", {"order_id": "ORD-10733", "amount": 32.25}, 32.25),
}


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float):
        try:
            return abs(float(got) - want) < 0.006
        except (TypeError, ValueError):
            return False
    return " ".join(str(got).lower().split()) == " ".join(str(want).lower().split())


def recorded(call: Callable[[str, dict[str, Any]], Any], calls: list[tuple[str, dict[str, Any]]]) -> Callable[[str, dict[str, Any]], Any]:
    """``call``, appending each (name, arguments) it is given to ``calls``."""
    def run(name: str, args: dict[str, Any]) -> Any:
        calls.append((name, args))
        return call(name, args)
    return run


def run_inbox(client: openai.OpenAI, model: str, run_of: Callable[[str], dict[str, str]], limit: int | None) -> list[TaskResult]:
    from smallfleet.demo import inbox as demo

    data = demo.load_inbox()
    out = []
    for mail in data["emails"][:limit]:
        cats, tool, want_args, fact = INBOX_EXPECT[mail["id"]]
        steps, t0, why = [], time.perf_counter(), []
        hdr = run_of(mail["id"])
        system = {"role": "system", "content": demo.SYSTEM.format(company=data["company"])}
        email_text = f"From: {mail['from']}\nSubject: {mail['subject']}\n\n{mail['body']}"
        try:
            tri = ask(client, model, [system, {"role": "user", "content": (
                "Classify this support e-mail. Categories: order_status (where is a parcel), refund (customer wants money back), "
                "billing (charges, invoices), product_question (question before buying or about a product), account_change (change "
                f"account data), feedback (praise or remarks, nothing to do).\n\n{email_text}")}], steps, max_tokens=40, extra_headers=hdr,
                response_format={"type": "json_schema", "json_schema": {"name": "triage", "schema": demo.CLASSIFY_SCHEMA}})
            try:
                cat = json.loads(tri.content or "{}").get("category")
            except json.JSONDecodeError:
                cat = None
            if cat not in cats:
                why.append(f"category {cat}")
            ask(client, model, [system, {"role": "user", "content": "Extract the customer's name, the order id (or null) and the amount of "
                                         f"money owed to the customer in USD (or null if they ask for no money).\n\n{email_text}"}],
                steps, max_tokens=80, extra_headers=hdr,
                response_format={"type": "json_schema", "json_schema": {"name": "fields", "schema": demo.EXTRACT_SCHEMA}})
            note = ""
            if cat in ("refund", "billing"):
                calc = ask(client, model, [system, {"role": "user", "content": f"{email_text}\n\nHow much money do we owe this customer? "
                                                    "Calculate it step by step and end with 'Total: $X.XX'."}],
                           steps, max_tokens=220, extra_headers=hdr)
                totals = demo._TOTAL.findall(calc.content or "")
                if totals and steps[-1]["verdict"] == "pass":  # as the demo: only a verified figure is passed on
                    note = f"\n\n(Amount owed, as worked out: ${totals[-1]})"
            calls: list[tuple[str, dict[str, Any]]] = []
            execute = json_tool(recorded(demo.run_tool, calls))
            messages = [system, {"role": "user", "content": "Handle this support e-mail: call exactly one tool, then use its result to "
                                 f"write the reply to the customer (at most 3 sentences).\n\n{email_text}{note}"}]
            reply = agent_loop(client, model, messages, demo.TOOLS, execute, steps, max_steps=3, max_tokens=120,
                               tool_choice="required", extra_headers=hdr)
            if not calls or calls[0][0] != tool:
                why.append(f"tool {calls[0][0] if calls else None}")
            elif any(not _same(calls[0][1].get(k), v) for k, v in want_args.items()):
                why.append(f"arguments {json.dumps(calls[0][1])[:80]}")
            if reply is None or not reply.strip():
                why.append("no reply")
            elif fact is not None and not agent_suite.carries(reply, fact):
                why.append(f"reply lacks {fact}")
        except openai.APIStatusError as e:
            why.append(f"HTTP {e.status_code}: {str(e.message)[:120]}")
        out.append(TaskResult("inbox", mail["id"], not why, "; ".join(why), steps, time.perf_counter() - t0))
        show_progress(out[-1])
    return out


_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "int": "integer", "bool": "boolean", "list": "array"}


def _bfcl_schema(s: Any) -> Any:
    """BFCL's function docs use Python type names; the OpenAI tools format wants JSON Schema."""
    if isinstance(s, dict):
        out = {k: _bfcl_schema(v) for k, v in s.items() if k not in ("response",)}
        t = out.get("type")
        if t == "any":
            out.pop("type")
        elif isinstance(t, str):
            out["type"] = _BFCL_TYPES.get(t, t)
        return out
    if isinstance(s, list):
        return [_bfcl_schema(v) for v in s]
    return s


BFCL_DOCS = {"GorillaFileSystem": "gorilla_file_system", "MathAPI": "math_api", "MessageAPI": "message_api", "TwitterAPI": "posting_api",
             "TicketAPI": "ticket_api", "TradingBot": "trading_bot", "TravelAPI": "travel_booking", "VehicleControlAPI": "vehicle_control"}


def bfcl_executor(run_calls: Callable[..., Any], entry: dict[str, Any], live: str, tid: str,
                  made: list[list[str]]) -> Callable[[str, dict[str, Any]], str]:
    """A tool executor for agent_loop running each call on the entry's BFCL back-ends; the calls go to ``made``."""
    def execute(name: str, args: dict[str, Any]) -> str:
        call = f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
        made.append([call])
        res, _ = run_calls([call], entry["initial_config"], entry["involved_classes"], live, tid)
        return str(res[0])[:4000]
    return execute


def run_bfcl(client: openai.OpenAI, model: str, run_of: Callable[[str], dict[str, str]], ids: list[str], tag: str) -> list[TaskResult]:
    try:
        from importlib.resources import files

        from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
        from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call
    except ImportError as e:
        raise SystemExit(f"bfcl workload not available: {e}. Install: pip install --no-deps bfcl-eval==2026.3.23 mpmath") from None
    data = files("bfcl_eval") / "data"
    entries = {json.loads(line)["id"]: json.loads(line) for line in (data / "BFCL_v4_multi_turn_base.json").read_text().splitlines() if line}
    truth = {json.loads(line)["id"]: json.loads(line)["ground_truth"]
             for line in (data / "possible_answer" / "BFCL_v4_multi_turn_base.json").read_text().splitlines() if line}
    out = []
    for tid in ids:
        e, steps, t0 = entries[tid], [], time.perf_counter()
        tools = [{"type": "function", "function": {"name": d["name"], "description": d["description"][:1024],
                                                   "parameters": _bfcl_schema(d["parameters"])}}
                 for c in e["involved_classes"]
                 for d in (json.loads(x) for x in (data / "multi_turn_func_doc" / f"{BFCL_DOCS[c]}.json").read_text().splitlines() if x)]
        live = f"sf_{tag}_{model}_{os.getpid()}".replace("-", "_").replace(".", "_")
        turns: list[list[list[str]]] = []
        messages: list[dict[str, Any]] = []
        why = ""
        try:
            for turn in e["question"]:
                messages.extend(turn)
                made: list[list[str]] = []
                execute = bfcl_executor(execute_multi_turn_func_call, e, live, tid, made)
                answer = agent_loop(client, model, messages, tools, execute, steps, max_steps=6, max_tokens=300, extra_headers=run_of(tid))
                if answer is None:
                    messages.append({"role": "assistant", "content": "(no answer)"})
                turns.append(made)
            verdict = multi_turn_checker(turns, truth[tid], e, "multi_turn_base", live + "_check")
            ok, why = bool(verdict.get("valid")), str(verdict.get("error_type") or verdict.get("error_message") or "")[:160]
        except openai.APIStatusError as ex:
            ok, why = False, f"HTTP {ex.status_code}: {str(ex.message)[:120]}"
        out.append(TaskResult("bfcl", tid, ok, why, steps, time.perf_counter() - t0, {"calls": turns}))
        show_progress(out[-1])
    return out


def run_agentdojo(gw: Gateway, model: str, guard: str, prefix: str, max_iters: int) -> list[TaskResult]:
    from smallfleet.evals import agentdojo as ad

    res = ad.run_model(gw.url + "/v1", model, suites=(AGENTDOJO_SUITE,), guard=guard, max_iters=max_iters, timeout_s=900,
                       user_tasks={AGENTDOJO_SUITE: list(AGENTDOJO_USER)}, injection_tasks={AGENTDOJO_SUITE: list(AGENTDOJO_INJ)},
                       run_prefix=prefix)
    out = []
    for c in res["cases_detail"]:
        attacked = c["injection_task"] is not None
        # a task under attack succeeds when the user's task is done and the attacker's is not
        ok = c["utility"] and not (attacked and c["attack_succeeded"])
        name = f"{c['user_task']}/{c['injection_task'] or 'benign'}"
        out.append(TaskResult("agentdojo", name, ok, "" if ok else ("attack succeeded" if c["attack_succeeded"] else "no utility"),
                              [], c["seconds"], {"run": c["run"], "utility": c["utility"], "attack_succeeded": c["attack_succeeded"]}))
        show_progress(out[-1])
    if res["errors"]:
        print("  agentdojo errors: " + "; ".join(res["errors"])[:400], file=sys.stderr)
    return out


def show_progress(r: TaskResult) -> None:
    tiers = "".join((s["tier"] or "?")[0] + ("↑" if s["escalated"] else "") for s in r.steps)
    print(f"  {r.workload:<9} {r.task:<22} {'ok ' if r.success else 'FAIL'} {r.seconds:6.1f}s {tiers:<14} {r.why[:70]}", file=sys.stderr, flush=True)


# --- summary ------------------------------------------------------------------------------------

def ledger_steps(led: Any, prefix: str) -> list[dict[str, Any]]:
    """Per step, from the gateway's ledger (AgentDojo's steps are only seen there)."""
    rows = led.query("SELECT tier, step_kind, escalated, passed, cost_usd FROM attempts "
                     "WHERE substr(run_id,1,?)=? AND final=1", (len(prefix), prefix))
    return [{"tier": t, "kind": k, "escalated": bool(e), "verdict": "pass" if p else "fail", "cost_usd": c, "escalation_checks": []}
            for t, k, e, p, c in rows]


def summarise(results: list[TaskResult], steps: list[dict[str, Any]], report: Any, tiers: tuple[str, ...]) -> dict[str, Any]:
    n, k = len(results), sum(r.success for r in results)
    lo, hi = wilson(k, n)
    tier_n = Counter(s["tier"] for s in steps)
    kind_n = Counter(s["kind"] for s in steps)
    reasons = Counter(c for s in steps if s["escalated"] for c in dict.fromkeys(s["escalation_checks"]))
    return {
        "tasks": n, "succeeded": k, "success": k / n if n else 0.0, "ci95": [lo, hi],
        "steps": len(steps), "tier_share": {t: tier_n.get(t, 0) / len(steps) if steps else 0.0 for t in tiers},
        "small_share": tier_n.get(tiers[0], 0) / len(steps) if steps else 0.0,
        "kind_steps": dict(kind_n.most_common()), "escalated": sum(s["escalated"] for s in steps),
        "escalation_reasons": dict(reasons.most_common()), "unverified_steps": sum(1 for s in steps if s["verdict"] != "pass"),
        "blocked_calls": sum(s.get("blocked", 0) for s in steps),
        "cost_usd": report.spend_usd, "top_tier_cost_usd": report.counterfactual_usd,
        "saved_at_parity_usd": report.parity_savings_usd,
        "saved_at_parity_pct": 100 * report.parity_savings_usd / report.counterfactual_usd if report.counterfactual_usd else 0.0,
        "seconds": round(sum(r.seconds for r in results), 1),
    }


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    cells = [w for w in [*WORKLOADS, "all"] if any(w in summary[c] for c in summary)]
    fig, axes = plt.subplots(1, len(cells), figsize=(3.6 * len(cells), 3.4), squeeze=False)
    for ax, w in zip(axes[0], cells):
        for cfg, by in summary.items():
            if w not in by:
                continue
            s = by[w]
            x, y = s["cost_usd"] * 1000, 100 * s["success"]
            ax.errorbar([x], [y], yerr=[[y - 100 * s["ci95"][0]], [100 * s["ci95"][1] - y]], fmt="o", capsize=3, label=cfg)
            ax.annotate(cfg, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_title(w)
        ax.set_xlabel("cost (USD × 1000)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("task success % (95 % CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(summary: dict[str, dict[str, Any]]) -> str:
    head = f"{'workload':<10} {'config':<8} {'tasks':>5} {'success':>8} {'95% CI':>13} {'steps':>5} {'small':>6} {'esc':>4} " \
           f"{'unver':>5} {'cost $':>10} {'top-tier $':>10} {'saved@par':>9} {'s':>6}"
    lines = [head, "-" * len(head)]
    for w in [*WORKLOADS, "all"]:
        for cfg, by in summary.items():
            if w in by:
                s = by[w]
                lines.append(f"{w:<10} {cfg:<8} {s['tasks']:>5} {100 * s['success']:>7.1f}% {100 * s['ci95'][0]:>5.1f}–{100 * s['ci95'][1]:>5.1f}% "
                             f"{s['steps']:>5} {100 * s['small_share']:>5.0f}% {s['escalated']:>4} {s['unverified_steps']:>5} "
                             f"{s['cost_usd']:>10.6f} {s['top_tier_cost_usd']:>10.6f} {s['saved_at_parity_pct']:>8.1f}% {s['seconds']:>6.0f}")
    return "\n".join(lines)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, from: " + ", ".join(CONFIGS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, from: " + ", ".join(WORKLOADS))
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks of suite and inbox")
    ap.add_argument("--tasks", default="", help="only these suite task ids (comma-separated)")
    ap.add_argument("--bfcl", default=",".join(BFCL_IDS), help="BFCL multi-turn base task ids")
    ap.add_argument("--agentdojo-iters", type=int, default=4, help="tool rounds per AgentDojo case")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads per model (default: the cores, 2 here)")
    ap.add_argument("--small-next-step", choices=("on", "off"), default="off",
                    help="the 0.5B's next-step pass after tool results ([models.X] next_step_pass; off in the built-in "
                         "fleet; bench/results/agents.json was run with it on)")
    ap.add_argument("--json", default=str(RESULTS / "agents.json"), help="default bench/results/agents.json")
    ap.add_argument("--plot", default=str(RESULTS / "agents.png"), help="success against cost (default bench/results/agents.png)")
    a = ap.parse_args()
    configs = [c for c in a.configs.split(",") if c]
    workloads = [w for w in a.workloads.split(",") if w]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")

    from smallfleet.config import load_config
    from smallfleet.ledger import Ledger
    from smallfleet.report import build_report, counterfactual_basis

    tag = time.strftime("%m%d%H%M")
    work = Path(tempfile.mkdtemp(prefix="sf-agents-"))
    t_start = time.perf_counter()
    print(f"starting smallfleet serve (ledger {work / 'ledger.db'}) …", file=sys.stderr)
    gw = Gateway(work, a.threads, a.small_next_step == "on")
    results: dict[str, dict[str, list[TaskResult]]] = {c: {} for c in configs}
    try:
        # workload-major: each model keeps its prompt cache (the workload's system prompt + tools) warm
        for w in workloads:
            for cfg in configs:
                model, guard = CONFIGS[cfg]
                prefix = f"{tag}-{cfg}-{w}-"
                print(f"[{w} · {cfg}] model={model} guard={guard}", file=sys.stderr, flush=True)
                client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-local", timeout=900, max_retries=0)

                def run_of(task: str, prefix: str = prefix, guard: str = guard) -> dict[str, str]:
                    return {"x-smallfleet-run": prefix + task, "x-smallfleet-guard": guard}

                if w == "suite":
                    rs = run_suite(client, model, run_of, a.limit, {t for t in a.tasks.split(",") if t})
                elif w == "inbox":
                    rs = run_inbox(client, model, run_of, a.limit)
                elif w == "bfcl":
                    rs = run_bfcl(client, model, run_of, [i for i in a.bfcl.split(",") if i], f"{tag}{cfg}")
                else:
                    rs = run_agentdojo(gw, model, guard, prefix, a.agentdojo_iters)
                for r in rs:
                    gw.feedback(r.extra.get("run") or prefix + r.task, r.success)
                results[cfg][w] = rs
    finally:
        gw.close()

    config = load_config(str(gw.config))
    led = Ledger(gw.ledger)
    summary: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        summary[cfg] = {}
        all_r: list[TaskResult] = []
        all_s: list[dict[str, Any]] = []
        for w, rs in results[cfg].items():
            prefix = f"{tag}-{cfg}-{w}-"
            steps = [s for r in rs for s in r.steps] or ledger_steps(led, prefix)
            summary[cfg][w] = summarise(rs, steps, build_report(led, config, run_prefix=prefix), config.tiers)
            all_r += rs
            all_s += steps
        if len(results[cfg]) > 1:
            summary[cfg]["all"] = summarise(all_r, all_s, build_report(led, config, run_prefix=f"{tag}-{cfg}-"), config.tiers)
    led.close()
    print(table(summary))
    print(counterfactual_basis(config))
    out = {"when": time.strftime("%Y-%m-%d %H:%M"), "wall_s": round(time.perf_counter() - t_start), "threads": a.threads,
           "small_next_step": a.small_next_step,
           "configs": {c: {"model": CONFIGS[c][0], "guard": CONFIGS[c][1]} for c in configs}, "basis": counterfactual_basis(config),
           "bfcl_ids": a.bfcl.split(","), "agentdojo": {"suite": AGENTDOJO_SUITE, "user_tasks": AGENTDOJO_USER, "injection_tasks": AGENTDOJO_INJ,
                                                        "max_iters": a.agentdojo_iters},
           "summary": summary,
           "tasks": {c: {w: [{"task": r.task, "success": r.success, "why": r.why, "seconds": round(r.seconds, 1), "steps": r.steps, **r.extra}
                             for r in rs] for w, rs in by.items()} for c, by in results.items()}}
    write_json(a.json, out, default=str, quiet=True)
    plot(summary, Path(a.plot))
    print(f"wrote {a.json} and {a.plot} ({out['wall_s']} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
