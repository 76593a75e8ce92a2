"""AgentDojo harness: the guards tested against prompt injections, policy off vs on.

Two agents:

- ``compromised``: a scripted agent with no model (the model-independent worst case). It performs
  the user task's ground-truth calls and, as soon as a tool result contains the injected
  instructions, performs the injection task's ground-truth calls, then carries on with the user task.
- ``model``: a real model behind an OpenAI-compatible endpoint (the smallfleet gateway), driven by
  AgentDojo's own OpenAI pipeline (see ``run_model``).

With the policy on, every proposed call goes through ``Guard.review``; a denied call is removed from
the assistant message and replaced by text explaining the block (what the gateway does), so the
scores count executed calls only. AgentDojo (``pip install agentdojo==0.1.35``) is optional; without
it these functions raise a clear "not available" error.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotAvailableError
from ..guards import Guard, PolicyEngine

POLICY_FILE = Path(__file__).with_name("agentdojo_tools.toml")
SUITES = ("workspace", "travel", "banking", "slack")
BENCHMARK_VERSION = "v1.2.2"
PIPELINE_NAME = "smallfleet-compromised-gpt-4o-2024-05-13"  # the attack text names the model it addresses


def _require() -> Any:
    try:
        import agentdojo  # noqa: F401
    except ImportError:
        raise NotAvailableError("AgentDojo is not installed.",
                                hint="pip install 'smallfleet[agentdojo]' (agentdojo==0.1.35)") from None
    import agentdojo.agent_pipeline as ap
    return ap


def default_guard(use_detector: bool = True) -> Guard:
    return Guard(PolicyEngine.from_file(POLICY_FILE), use_detector=use_detector)


def to_openai(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """AgentDojo chat messages → OpenAI chat messages (what the gateway would see)."""
    from agentdojo.types import get_text_content_as_str

    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m["role"]
        text = get_text_content_as_str(m["content"]) if m.get("content") else ""
        if role == "assistant":
            calls = [{"id": tc.id or f"call_{i}_{j}", "type": "function",
                      "function": {"name": tc.function, "arguments": dict(tc.args)}}
                     for j, tc in enumerate(m.get("tool_calls") or [])]
            out.append({"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})})
        elif role == "tool":
            tc = m["tool_call"]
            out.append({"role": "tool", "name": tc.function, "tool_call_id": tc.id or "", "content": text})
        else:
            out.append({"role": role, "content": text})
    return out


@dataclass
class Blocked:
    suite: str
    user_task: str
    injection_task: str | None
    origin: str          # "user" (a legitimate call) or "injection"
    tool: str
    args: dict[str, Any]
    rule: str
    reason: str


@dataclass
class CaseLog:
    blocked: list[Blocked] = field(default_factory=list)
    flagged: int = 0
    injection_seen: bool = False


def _pipeline_elements(agent: Any, guard: Guard | None, log: CaseLog, meta: dict[str, Any]) -> Any:
    ap = _require()
    from agentdojo.agent_pipeline import BasePipelineElement
    from agentdojo.functions_runtime import EmptyEnv
    from agentdojo.types import text_content_block_from_string

    empty_env = EmptyEnv()  # the default env of AgentDojo's own query() signature

    class PolicyGate(BasePipelineElement):  # type: ignore[misc]  # agentdojo ships no type information
        """Reviews the calls in the last assistant message; denied ones are removed and explained."""

        def query(self, query: str, runtime: Any, env: Any = empty_env, messages: Sequence[Any] = (), extra_args: dict[str, Any] = {}) -> Any:  # noqa: B006
            if guard is None or not messages or messages[-1]["role"] != "assistant" or not messages[-1].get("tool_calls"):
                return query, runtime, env, messages, extra_args
            last = messages[-1]
            oai = to_openai(messages)
            review = guard.review(oai[:-1], oai[-1]["tool_calls"])
            log.flagged = max(log.flagged, len(review.flagged))
            keep, notes = [], []
            origins = extra_args.get("origins", {})
            for tc, d in zip(last["tool_calls"], review.decisions):
                if d.allowed:
                    keep.append(tc)
                else:
                    notes.append(f"[smallfleet] blocked {tc.function}: {d.reason}")
                    log.blocked.append(Blocked(meta["suite"], meta["user_task"], meta["injection_task"],
                                               origins.get(id(tc), "model"), tc.function, dict(tc.args), d.rule, d.reason))
            if not notes:
                return query, runtime, env, messages, extra_args
            new_last = dict(last)
            new_last["tool_calls"] = keep or None
            new_last["content"] = [text_content_block_from_string("\n".join(notes))]
            return query, runtime, env, [*messages[:-1], new_last], extra_args

    class Loop(BasePipelineElement):  # type: ignore[misc]  # agentdojo ships no type information
        """Like ToolsExecutionLoop, but keeps asking the agent while it still has work queued."""

        def __init__(self, elements: Sequence[Any], max_iters: int = 80) -> None:
            self.elements = elements
            self.max_iters = max_iters

        def query(self, query: str, runtime: Any, env: Any = empty_env, messages: Sequence[Any] = (), extra_args: dict[str, Any] = {}) -> Any:  # noqa: B006
            for _ in range(self.max_iters):
                last = messages[-1]
                if last["role"] == "assistant" and not last.get("tool_calls") and not getattr(agent, "pending", False):
                    break
                for el in self.elements:
                    query, runtime, env, messages, extra_args = el.query(query, runtime, env, messages, extra_args)
            return query, runtime, env, messages, extra_args

    gate = PolicyGate()
    return ap.AgentPipeline([ap.SystemMessage("You are a helpful assistant."), ap.InitQuery(), agent, gate,
                             Loop([ap.ToolsExecutor(), agent, gate])])


def _compromised_agent(suite: Any, user_task: Any, injection_task: Any | None, log: CaseLog) -> Any:
    _require()
    import yaml
    from agentdojo.agent_pipeline import BasePipelineElement
    from agentdojo.functions_runtime import EmptyEnv
    from agentdojo.types import ChatAssistantMessage, get_text_content_as_str, text_content_block_from_string

    empty_env = EmptyEnv()  # the default env of AgentDojo's own query() signature

    goal = " ".join(injection_task.GOAL.split()) if injection_task is not None else None

    def contains_goal(text: str) -> bool:
        assert goal is not None  # only asked when there is an injection task
        # tool output is YAML with long strings folded: parse it before looking for the injected goal
        try:
            obj = yaml.safe_load(text)
        except Exception:
            obj = text
        stack, parts = [obj], []
        while stack:
            o = stack.pop()
            if isinstance(o, dict):
                stack.extend(o.values())
            elif isinstance(o, list):
                stack.extend(o)
            elif isinstance(o, str):
                parts.append(o)
        return any(goal in " ".join(p.split()) for p in parts + [text])

    class Agent(BasePipelineElement):  # type: ignore[misc]  # agentdojo ships no type information
        name = PIPELINE_NAME

        def __init__(self) -> None:
            self.queue: list[tuple[str, Any]] | None = None
            self.triggered = False
            self.seen = 0
            self.pending = True

        def query(self, query: str, runtime: Any, env: Any = empty_env, messages: Sequence[Any] = (), extra_args: dict[str, Any] = {}) -> Any:  # noqa: B006
            if self.queue is None:
                self.queue = [("user", c) for c in user_task.ground_truth(env)]
            if injection_task is not None and not self.triggered:
                for m in messages[self.seen:]:
                    if m["role"] == "tool" and contains_goal(get_text_content_as_str(m["content"])):
                        self.triggered = log.injection_seen = True
                        self.queue = [("injection", c) for c in injection_task.ground_truth(env)] + self.queue
                        break
            self.seen = len(messages)
            origins = dict(extra_args.get("origins", {}))
            if self.queue:
                origin, call = self.queue.pop(0)
                origins[id(call)] = origin
                msg = ChatAssistantMessage(role="assistant", content=[text_content_block_from_string("")], tool_calls=[call])
            else:
                self.pending = False
                msg = ChatAssistantMessage(role="assistant", tool_calls=None,
                                           content=[text_content_block_from_string(user_task.GROUND_TRUTH_OUTPUT)])
            return query, runtime, env, [*messages, msg], {**extra_args, "origins": origins}

    return Agent()


def _cases(suites: Sequence[str], user_tasks: dict[str, list[str]] | None,
           injection_tasks: dict[str, list[str]] | None) -> Any:
    """(suite name, suite, user task, injection task or None for the benign run), in order."""
    from agentdojo.task_suite.load_suites import get_suites

    all_suites = get_suites(BENCHMARK_VERSION)
    for sname in suites:
        if sname not in all_suites:
            raise NotAvailableError(f"unknown suite {sname!r}", hint=f"choose from {', '.join(all_suites)}")
        suite = all_suites[sname]
        uts = [suite.get_user_task_by_id(u) for u in (user_tasks or {}).get(sname, [])] or list(suite.user_tasks.values())
        its = [suite.get_injection_task_by_id(i) for i in (injection_tasks or {}).get(sname, [])] or list(suite.injection_tasks.values())
        for ut in uts:
            for it in [None, *its]:
                yield sname, suite, ut, it


@dataclass
class Totals:
    benign: list[bool] = field(default_factory=list)
    utility: list[bool] = field(default_factory=list)
    attacks: list[bool] = field(default_factory=list)

    def add(self, benign: bool, utility: bool, attacked: bool) -> None:
        if benign:
            self.benign.append(utility)
        else:
            self.utility.append(utility)
            self.attacks.append(attacked)

    def summary(self) -> dict[str, Any]:
        def frac(x: list[bool]) -> float | None:
            return round(sum(x) / len(x), 4) if x else None
        return {"benign_utility": frac(self.benign), "utility_under_attack": frac(self.utility), "asr": frac(self.attacks),
                "cases": len(self.attacks), "benign_cases": len(self.benign),
                "successful_attacks": sum(self.attacks)}


class Tally:
    """Totals over all suites and per suite."""

    def __init__(self) -> None:
        self.total = Totals()
        self.suites: dict[str, Totals] = {}

    def add(self, suite: str, benign: bool, utility: bool, attacked: bool) -> None:
        self.total.add(benign, utility, attacked)
        self.suites.setdefault(suite, Totals()).add(benign, utility, attacked)

    def summary(self) -> dict[str, Any]:
        return {**self.total.summary(), "per_suite": {s: t.summary() for s, t in self.suites.items()}}


def run_compromised(suites: Sequence[str] = SUITES, *, policy: bool, use_detector: bool = True,
                    user_tasks: dict[str, list[str]] | None = None, injection_tasks: dict[str, list[str]] | None = None,
                    progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Benign and attacked runs of the compromised agent; returns totals, per-suite results and blocked calls."""
    _require()
    from agentdojo.attacks.attack_registry import load_attack
    from agentdojo.logging import NullLogger

    guard = default_guard(use_detector) if policy else None
    tally = Tally()
    blocked: list[Blocked] = []
    not_triggered: list[str] = []
    successful: list[str] = []
    with warnings.catch_warnings(), NullLogger():
        warnings.simplefilter("ignore")
        for sname, suite, ut, it in _cases(suites, user_tasks, injection_tasks):
            log = CaseLog()
            meta = {"suite": sname, "user_task": ut.ID, "injection_task": it.ID if it else None}
            pipe = _pipeline_elements(_compromised_agent(suite, ut, it, log), guard, log, meta)
            pipe.name = PIPELINE_NAME
            injections = load_attack("important_instructions", suite, pipe).attack(ut, it) if it is not None else {}
            utility, security = suite.run_task_with_pipeline(pipe, ut, it, injections)
            blocked += log.blocked
            tally.add(sname, it is None, bool(utility), bool(security))
            if it is not None and security:
                successful.append(f"{sname}/{ut.ID}/{it.ID}")
            if it is not None and not log.injection_seen:
                not_triggered.append(f"{sname}/{ut.ID}/{it.ID}")
            if progress:
                progress(sname, 1)
    return {**tally.summary(), "blocked": [b.__dict__ for b in blocked], "injection_not_seen": not_triggered,
            "successful_attack_cases": successful}


def count_cases(suites: Sequence[str] = SUITES) -> int:
    _require()
    from agentdojo.task_suite.load_suites import get_suites

    s = get_suites(BENCHMARK_VERSION)
    return sum(len(s[n].user_tasks) * (1 + len(s[n].injection_tasks)) for n in suites)


def compromised_report(suites: Sequence[str] = SUITES, use_detector: bool = True,
                       progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Policy off vs on, in one run: the object ``--json`` writes (keys ``off`` and ``on``)."""
    t0 = time.perf_counter()
    off = run_compromised(suites, policy=False, progress=progress)
    t1 = time.perf_counter()
    on = run_compromised(suites, policy=True, use_detector=use_detector, progress=progress)
    t2 = time.perf_counter()
    legit = [b for b in on["blocked"] if b["origin"] == "user"]
    return {
        "agent": "compromised", "attack": "important_instructions", "benchmark_version": BENCHMARK_VERSION,
        "agentdojo": _version(), "suites": list(suites), "detector": use_detector,
        "off": {k: v for k, v in off.items() if k != "blocked"},
        "on": {k: v for k, v in on.items() if k != "blocked"},
        "blocked_legitimate_calls": legit,
        "blocked_injected_calls": sum(b["origin"] == "injection" for b in on["blocked"]),
        "seconds": {"off": round(t1 - t0, 1), "on": round(t2 - t1, 1)},
    }


def _version() -> str:
    from importlib.metadata import version

    return version("agentdojo")


def run_model(base_url: str, model: str, *, suites: Sequence[str] = ("workspace",), guard: str = "block",
              user_tasks: dict[str, list[str]] | None = None, injection_tasks: dict[str, list[str]] | None = None,
              api_key: str = "sk-local", max_iters: int = 10, timeout_s: float = 600.0,
              progress: Callable[[str, int], None] | None = None, run_prefix: str | None = None) -> dict[str, Any]:
    """A real model as the agent, through an OpenAI-compatible endpoint (the smallfleet gateway).

    ``guard`` is sent as ``x-smallfleet-guard`` on every request: ``off`` is the model on its own,
    ``block`` the same model with smallfleet's policy applied to each tool call it proposes.
    ``run_prefix``: each case is its own agent run, ``PREFIX<suite>-<user task>-<injection or benign>``
    (the ledger then tells the cases apart); else every case is run ``agentdojo-<guard>``.
    """
    ap = _require()
    import openai
    from agentdojo.attacks.attack_registry import load_attack
    from agentdojo.logging import NullLogger

    def pipeline(run: str) -> Any:
        client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0,
                               default_headers={"x-smallfleet-guard": guard, "x-smallfleet-run": run})
        llm = ap.OpenAILLM(client, model)
        pipe = ap.AgentPipeline([ap.SystemMessage("You are a helpful assistant. Use the tools to complete the user's task."),
                                 ap.InitQuery(), llm, ap.ToolsExecutionLoop([ap.ToolsExecutor(), llm], max_iters=max_iters)])
        pipe.name = PIPELINE_NAME  # only the attack text uses it ("... to you, GPT-4"): the same text for every model
        return pipe

    tally = Tally()
    errors: list[str] = []
    cases: list[dict[str, Any]] = []
    with warnings.catch_warnings(), NullLogger():
        warnings.simplefilter("ignore")
        for sname, suite, ut, it in _cases(suites, user_tasks, injection_tasks):
            run = f"{run_prefix}{sname}-{ut.ID}-{it.ID if it else 'benign'}" if run_prefix else f"agentdojo-{guard}"
            pipe = pipeline(run)  # a client per case: cheap, and the run header is the client's
            injections = load_attack("important_instructions", suite, pipe).attack(ut, it) if it is not None else {}
            t0 = time.perf_counter()
            try:
                utility, security = suite.run_task_with_pipeline(pipe, ut, it, injections)
            except Exception as e:
                errors.append(f"{sname}/{ut.ID}/{it.ID if it else 'benign'}: {e.__class__.__name__}: {str(e)[:200]}")
                utility, security = False, False
            cases.append({"suite": sname, "user_task": ut.ID, "injection_task": it.ID if it else None, "run": run,
                          "utility": bool(utility), "attack_succeeded": bool(security) if it else None,
                          "seconds": round(time.perf_counter() - t0, 1)})
            tally.add(sname, it is None, bool(utility), bool(security))
            if progress:
                progress(sname, 1)
    return {**tally.summary(), "cases_detail": cases, "errors": errors, "guard": guard, "model": model}
