"""Rewrite mode (opt-in per step kind: ``[privacy] rewrite``): the remote model never sees the private request.

Placeholders keep a request's shape but tell the remote model that something was hidden, and some
tasks cannot be done around them (a birthday poem for ``<PERSON_1>``). In rewrite mode, for a text step
bound for a remote model:
1. a local model rewrites the user's request without the private details ("my grandmother in a town in
   Spain" for "mi abuela Carmen in Zaragoza"), keeping what the answer needs;
2. the remote model answers the rewritten request (still pseudonymised, as a safety net for what the
   rewrite kept);
3. the local model writes the final answer from the remote answer and the original request, putting the
   user's details back.
Both local calls are the attempt's cost. Steps with tools or a JSON answer stay in placeholder mode: a
tool call's arguments must be exact, and a rewritten schema is no longer the client's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models.base import Backend, ChatResult
from .pseudonymize import message_texts

REWRITE = ("You protect the user's privacy. You get a request the user wants to send to an assistant. Do not answer it "
           "and do not carry it out: write the same request again, as the user would ask it, with no personal details: "
           "no names of people, organisations, shops or schools, no towns, streets or addresses, no account, order "
           "or other identifying numbers, no contact details, no passwords or keys. Use generic words instead "
           "(\"my grandmother\", \"a bank\", \"a town in Spain\"). Keep everything else the answer needs: the task, "
           "constraints, tone, language and non-identifying facts.\n"
           "Example. Request: \"Write a thank-you note to my neighbour Olga Petrova at 5 Birch Lane for feeding my cat.\" "
           "Rewritten: \"Write a thank-you note to my neighbour for feeding my cat.\"\n"
           "Write only the rewritten request.")
COMPOSE = ("You write the final answer for the user. You get the user's original request and an answer that an "
           "assistant wrote to an anonymised version of it. Adapt that answer to the original request: put the "
           "user's real details back where they belong, keep the answer's content and language, add nothing else. "
           "Write only the final answer.")
MAX_CONTEXT_CHARS = 12_000  # the conversation shown to the local model, most recent last


@dataclass
class Rewritten:
    request: dict[str, Any]  # what goes to the remote model
    call: ChatResult  # the local model's rewrite call (for cost)


def conversation(messages: list[dict[str, Any]]) -> str:
    """The user's side of the conversation as text, newest last, bounded."""
    lines = []
    for m in messages:
        role = m.get("role")
        if role in ("user", "assistant", "system"):
            text = "\n".join(message_texts([m]))
            if text:
                lines.append(f"[{role}] {text}")
    return "\n\n".join(lines)[-MAX_CONTEXT_CHARS:]


class Rewriter:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def rewrite(self, request: dict[str, Any]) -> Rewritten:
        messages = request.get("messages") or []
        res = await self.backend.chat({"messages": [{"role": "system", "content": REWRITE},
                                                    {"role": "user", "content": "Request to rewrite (do not answer it):\n"
                                                                                + conversation(messages)}],
                                       "max_tokens": 400, "temperature": 0})
        system = [m for m in messages if m.get("role") in ("system", "developer")][:1]
        out = {k: v for k, v in request.items() if k != "messages"}
        out["messages"] = [*system, {"role": "user", "content": res.content.strip() or "(empty request)"}]
        return Rewritten(out, res)

    async def compose(self, request: dict[str, Any], remote_answer: str) -> ChatResult:
        messages = request.get("messages") or []
        prompt = f"Original request:\n{conversation(messages)}\n\nAnswer to the anonymised request:\n{remote_answer}"
        return await self.backend.chat({"messages": [{"role": "system", "content": COMPOSE},
                                                     {"role": "user", "content": prompt}],
                                        "max_tokens": request.get("max_tokens") or request.get("max_completion_tokens") or 600,
                                        "temperature": 0})
