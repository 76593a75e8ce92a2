"""The built-in checks on a model's answer: the cascade's accept-or-escalate signal.

Each is a ``(step, result, policy) -> Verdict | None`` (see :mod:`smallfleet.verdict`). The table at the
bottom registers every built-in check — these and the verifiers' — by name, in one place.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .guards.policy import decode_args
from .guards.trust import parse_tool_output
from .jsontext import json_value_spans, parse_json_answer, validate_json
from .models.base import ChatResult
from .spec import KindPolicy
from .step import Step, label_set, message_text
from .verdict import Check, Verdict, register_check, registered_checks, run_checks
from .verify import checks as verifiers


def check_schema_valid(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if not step.wants_json():
        return None
    try:
        value = parse_json_answer(result.content)
    except orjson.JSONDecodeError as e:
        cut = " (output cut off at max_tokens)" if result.finish_reason == "length" else ""
        return Verdict("schema_valid", False, f"not valid JSON{cut}: {e}")
    schema = step.schema
    if schema is None:
        return Verdict("schema_valid", isinstance(value, (dict, list)), "" if isinstance(value, (dict, list)) else "JSON is not an object")
    err = validate_json(value, schema)
    return Verdict("schema_valid", err is None, err or "")


def _text_call(result: ChatResult) -> dict[str, Any] | None:
    """A tool call written as the whole answer text (small models echo the call format)."""
    try:
        obj = parse_json_answer(result.content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("name"), str) and ("arguments" in obj or "parameters" in obj):
        return obj
    return None


def check_tool_call_valid(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if not step.tools:
        if result.tool_calls or step.wants_json():
            return None
        obj = _text_call(result)
        if obj is None:
            return None
        return Verdict("tool_call_valid", False, f"answered with a call of {obj['name']!r} as text, but no tools were offered")
    offered = {t["function"]["name"]: t["function"] for t in step.tools}
    calls = result.tool_calls
    tc = step.request.get("tool_choice", "auto")
    if not calls:
        if tc == "required" or isinstance(tc, dict):
            return Verdict("tool_call_valid", False, "tool_choice demands a call but the answer has none")
        obj = _text_call(result)  # a call written as text instead of an answer
        if obj is not None and (tc == "none" or obj["name"] not in offered):
            why = "tool_choice is none" if obj["name"] in offered else "that tool was not offered"
            return Verdict("tool_call_valid", False, f"wrote a call of {obj['name']!r} as text, but {why}")
        return None
    for c in calls:
        fn = c.get("function") or {}
        name = fn.get("name")
        if name not in offered:
            return Verdict("tool_call_valid", False, f"calls {name!r}, which was not offered")
        if isinstance(tc, dict) and tc.get("function", {}).get("name") != name:
            return Verdict("tool_call_valid", False, f"calls {name!r} but tool_choice names another tool")
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError as e:
            return Verdict("tool_call_valid", False, f"{name}: arguments are not JSON ({e})")
        if not isinstance(args, dict):
            return Verdict("tool_call_valid", False, f"{name}: arguments are not an object")
        params = offered[name].get("parameters") or {"type": "object"}
        err = validate_json(args, params)
        if err:
            return Verdict("tool_call_valid", False, f"{name}: {err}")
    return Verdict("tool_call_valid", True)


def check_nonempty(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if result.tool_calls or result.content.strip():
        return Verdict("nonempty", True)
    return Verdict("nonempty", False, "empty answer")


_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, (but )?i|i (can(no|')t|cannot|am unable to|'m unable to|won'?t) (help|assist|do|provide|answer|comply)"
    r"|as an ai( language model)?,? i (can(no|')t|cannot|don'?t))", re.I)


def check_not_refusal(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    if result.tool_calls:
        return None
    if _REFUSAL.search(result.content[:200]):
        return Verdict("not_refusal", False, "the model refused")
    return Verdict("not_refusal", True)


_ANSWER_PREFIX = re.compile(r"^(?:(?:the )?(?:answer|label|category|class|classification)\s*(?:is)?\s*[:=\-]?\s*)", re.I)


def check_label_in_set(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    """A prompt-style classification ("answer with one of: a, b, c"): the answer is one of the labels the
    prompt named (case and surrounding quotes or a final full stop aside). Abstains when the step has a
    JSON schema (schema_valid holds it to its enum) or the prompt names no label set."""
    if result.tool_calls or step.wants_json():
        return None
    user = next((m for m in reversed(step.messages) if m.get("role") == "user"), None)
    labels = label_set(message_text(user)) if user else ()
    if not labels:
        system = next((m for m in step.messages if m.get("role") in ("system", "developer")), None)
        labels = label_set(message_text(system)) if system else ()
    if not labels:
        return None
    text = result.content.strip()
    first = text.splitlines()[0] if text else ""
    said = _ANSWER_PREFIX.sub("", first).strip(" \t\"'`*.!").casefold()
    allowed = {x.casefold() for x in labels}
    if said in allowed:
        return Verdict("label_in_set", True)
    shown = ", ".join(labels[:10]) + (" …" if len(labels) > 10 else "")
    return Verdict("label_in_set", False, f"the answer {first[:60]!r} is not one of the labels asked for: {shown}")


def _enum_keys(schema: dict[str, Any] | None) -> set[str]:
    """Property names (any depth) whose values are closed sets."""
    keys: set[str] = set()
    stack = [schema] if isinstance(schema, dict) else []
    while stack:
        node = stack.pop()
        for k, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict):
                if "enum" in sub or "const" in sub:
                    keys.add(k)
                stack.append(sub)
        for key in ("anyOf", "oneOf", "allOf", "items"):
            v = node.get(key)
            stack.extend(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, dict))
    return keys


def value_token_probs(result: ChatResult, skip_keys: set[str]) -> list[float]:
    """Probabilities of the tokens that spell *copyable* JSON values: numbers and single-word strings
    (ids, codes, e-mail addresses). Multi-word free text is generative, so its low-probability tokens
    say nothing about invention; it is left out, as are values under ``skip_keys``."""
    toks, lps = result.token_texts, result.token_logprobs
    if not toks or not lps:
        return []
    text = "".join(toks)  # offsets come from the tokens themselves, so they always line up
    spans = [(a, b) for a, b, k in json_value_spans(text) if k not in skip_keys and b > a and not any(ch.isspace() for ch in text[a:b])]
    probs, pos, si = [], 0, 0
    for tok, lp in zip(toks, lps):
        end = pos + len(tok)
        while si < len(spans) and spans[si][1] <= pos:
            si += 1
        if si < len(spans) and spans[si][0] < end and tok.strip():
            probs.append(math.exp(lp))
        pos = end
    return probs


# -- tool loops ----------------------------------------------------------------------------------
# Small models given a tool result often answer with the call again written as text, the tool's JSON
# echoed, the same call repeated until max_tokens, or text cut off mid-sentence. Each is a broken turn
# of the agent loop, whatever the other checks say.
_CALL_TEXT = re.compile(r"<tool_call>|\{\s*\{?\s*\"name\"\s*:\s*\"[^\"]{1,64}\"\s*,\s*\"(?:arguments|parameters)\"\s*:", re.S)
_MIN_ECHO = 20  # characters of a tool result that, repeated verbatim, make an echo


def _answered_calls(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(name, arguments) of every call in the history that has a tool result."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    out = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") or {}
            if tc.get("id") in answered:
                out.append((str(fn.get("name")), decode_args(fn.get("arguments"))))
    return out


def _repeats(text: str) -> str | None:
    """Why the text is degenerate repetition (a line or a chunk over and over), or None."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i in range(len(lines) - 2):
        if len(lines[i]) >= 8 and lines[i] == lines[i + 1] == lines[i + 2]:
            return f"repeats the line {lines[i][:60]!r}"
    if len(text) >= 200:  # a chunk of 20+ characters that fills most of a long answer
        for size in (20, 40, 80):
            for start in (0, len(text) // 3):
                chunk = text[start:start + size]
                if chunk.strip() and text.count(chunk) * size >= 0.6 * len(text):
                    return f"repeats {chunk.strip()[:40]!r} over and over"
    return None


_TRIVIAL = {"ok", "done", "true", "false", "success", "succeeded", "none", "null", "yes", "no", "sent", "logged", "saved",
            "updated", "created", "deleted"}


def _result_values(texts: list[str]) -> set[str]:
    """The informative values of tool results (scalars of structured output, longer words of plain text)."""
    vals: set[str] = set()
    for t in texts:
        obj = parse_tool_output(t)
        if obj is None:
            vals.update(w.casefold() for w in re.findall(r"[^\W_]{4,}", t[:2000]))
            continue
        stack = [obj]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
            elif node is not None and not isinstance(node, bool):
                s = str(node).strip().casefold()
                if len(s.split()) > 2:  # a sentence ("refund issued, 3-5 business days"): answers paraphrase it, so its words count
                    vals.update(w for w in re.findall(r"[^\W_]{4,}|\d+", s))
                elif len(s) >= 2 or s.isdigit():
                    vals.add(s)
    return {v for v in vals if v not in _TRIVIAL}


def _uses(text: str, values: set[str]) -> bool:
    t = text.casefold()
    if any(v in t for v in values):
        return True
    nums = {float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", t)}
    return any(_is_num(v) and float(v) in nums for v in values)


def _is_num(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def check_loop_answer(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    """A turn of an agent loop ends in a well-formed new tool call or an answer in words.

    Applies when tools are offered or tool results are in the conversation. Fails a call that repeats
    one that already has a result, a call written as text (with or without tags or fences), an echo
    of tool output, degenerate repetition, and text cut off by max_tokens."""
    msgs = step.messages
    tool_texts = [c.strip() for m in msgs if m.get("role") == "tool" and isinstance(c := m.get("content"), str)]
    if not step.tools and not tool_texts:
        return None
    if result.tool_calls:
        done = _answered_calls(msgs)
        for tc in result.tool_calls:
            fn = tc.get("function") or {}
            key = (str(fn.get("name")), decode_args(fn.get("arguments")))
            if key in done:
                return Verdict("loop_answer", False, f"calls {key[0]} again with the arguments it already has a result for")
        return Verdict("loop_answer", True)
    text = result.content
    if _CALL_TEXT.search(text):
        return Verdict("loop_answer", False, "wrote a tool call as text instead of calling it or answering")
    if "<tool_response>" in text:
        return Verdict("loop_answer", False, "echoes the tool output")
    stripped = text.strip()
    for t in tool_texts:
        if len(t) >= _MIN_ECHO and t in stripped:
            return Verdict("loop_answer", False, "echoes the tool output")
    if stripped[:1] in "{[" and tool_texts:
        try:
            value = parse_json_answer(stripped)
        except orjson.JSONDecodeError:
            value = None
        if value is not None and not step.wants_json():
            for t in tool_texts:
                try:
                    if orjson.loads(t) == value:
                        return Verdict("loop_answer", False, "echoes the tool output")
                except orjson.JSONDecodeError:
                    pass
    why = _repeats(text)
    if why:
        return Verdict("loop_answer", False, why)
    if result.finish_reason == "length":
        return Verdict("loop_answer", False, "cut off at max_tokens before the answer ended")
    if msgs and msgs[-1].get("role") == "tool" and not step.wants_json():
        # the answer to a tool result uses it: "The user wants to know the weather in Madrid." does not
        last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
        fresh = [c for m in msgs[last_user + 1:] if m.get("role") == "tool" and isinstance(c := m.get("content"), str)]
        asked = " ".join(message_text(m) for m in msgs if m.get("role") in ("user", "system", "developer")).casefold()
        values = {v for v in _result_values(fresh) if v not in asked}  # "Madrid" was the question, not the news
        if values and not _uses(text, values):
            return Verdict("loop_answer", False, "does not use the tool result")
    return Verdict("loop_answer", True)


def check_confidence(step: Step, result: ChatResult, policy: KindPolicy) -> Verdict | None:
    """Token-probability confidence.

    Free text: mean probability of all generated tokens. JSON (schema output or tool call): the
    *lowest* probability among the tokens that spell scalar values — an invented amount or id shows
    up there. llama.cpp reports the unconstrained distribution, so tokens forced by a grammar (JSON
    punctuation, keys, enum labels) carry no signal and are left out; with none left, it abstains.
    """
    if policy.min_confidence <= 0 or not result.token_logprobs:
        return None  # backend gives no log-probabilities: abstain rather than guess
    if step.wants_json() or result.tool_calls:
        skip = _enum_keys(step.schema)
        if result.tool_calls:
            skip.add("name")  # the tool name is a grammar-forced choice, not a copied value
        for t in step.tools:
            skip |= _enum_keys(t["function"].get("parameters"))
        probs = value_token_probs(result, skip)
        if not probs:
            return None
        p, what = min(probs), "lowest value-token probability"
    else:
        p, what = result.mean_token_prob() or 0.0, "mean token probability"
    ok = p >= policy.min_confidence
    return Verdict("confidence", ok, "" if ok else f"{what} {p:.2f} < {policy.min_confidence:.2f}", p)


BUILTIN_CHECKS: dict[str, Check] = {
    "schema_valid": check_schema_valid,
    "tool_call_valid": check_tool_call_valid,
    "nonempty": check_nonempty,
    "not_refusal": check_not_refusal,
    "confidence": check_confidence,
    "loop_answer": check_loop_answer,
    "evidence_grounded": verifiers.check_evidence_grounded,
    "args_grounded": verifiers.check_args_grounded,
    "extraction_grounded": verifiers.check_extraction_grounded,
    "answer_grounded": verifiers.check_answer_grounded,
    "process": verifiers.check_process,
    "label_margin": verifiers.check_label_margin,
    "label_in_set": check_label_in_set,
}
for _name, _check in BUILTIN_CHECKS.items():
    register_check(_name, _check)

__all__ = ["BUILTIN_CHECKS", "Check", "Verdict", "register_check", "registered_checks", "run_checks"]
