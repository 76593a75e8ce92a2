"""The cascade: run a step on the tier the router picked, check the answer, escalate one tier when a
check fails.

Escalation is bounded by ``fleet.max_escalations`` and never revisits a model, so it cannot loop.
Every attempt — accepted, rejected or failed — is recorded, and the step's attempts reach the ledger
in one transaction. Read :meth:`Cascade.run` top to bottom for the whole path of a step.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import BackendError, ContextLengthError, ForbiddenError
from .fleet import Fleet
from .guards.enforce import enforce
from .guards.quarantine import datamark
from .learn.fewshot import with_examples
from .live import LiveStream
from .outcome import Attempt, Outcome
from .record import Recorder
from .routing import Router
from .spec import ModelSpec
from .step import Step
from .tokens import OFF_LOOP_CHARS, min_prompt_tokens, prompt_chars
from .verdict import run_checks

if TYPE_CHECKING:
    from .guards import Guard
    from .privacy.guard import PrivacyGuard
    from .verify.crosscheck import ReasoningCheck
    from .verify.judge import Judge


def _datamarked(request: dict[str, Any]) -> dict[str, Any]:
    """The request with every tool result wrapped and datamarked, so the model can tell data from instructions."""
    msgs: list[dict[str, Any]] = request["messages"]
    marked = [{**m, "content": datamark(m["content"], f"tool result {i}")} if m.get("role") == "tool" and isinstance(m.get("content"), str)
              else m for i, m in enumerate(msgs)]
    return {**request, "messages": marked}


class Cascade:
    """The loop: attempt → checks → escalate. Routing, privacy, judging, guards and the ledger are the
    collaborators it calls, each in its own module."""

    def __init__(self, config: Config, fleet: Fleet, router: Router, recorder: Recorder, *,
                 privacy: PrivacyGuard | None = None, guard: Guard | None = None, judge: Judge | None = None,
                 reasoning: ReasoningCheck | None = None) -> None:
        self.config = config
        self.fleet = fleet
        self.router = router
        self.recorder = recorder
        self.privacy = privacy
        self.guard = guard
        self.judge = judge
        self.reasoning = reasoning
        self._max_context = max(m.context for m in config.models.values())
        # a tier whose model is not private: the step's texts are scanned for personal data (routing, pseudonymising)
        self._scans = privacy is not None and privacy.enabled and any(not config.tier_model(t).private for t in config.tiers)

    async def run(self, step: Step, model: str = "auto") -> Outcome:
        """Answer one step; raises SmallfleetError only when no attempt produced an answer."""
        await self._measure(step)
        try:
            if model != "auto":  # a concrete model passes through: checked and recorded, never escalated
                spec = self._permitted(step, self.fleet.spec(model))
                attempts = [await self._attempt(spec, spec.tier, step)]
            else:
                attempts = await self._escalate(step, self.router.start_tier(step))
            outcome = Outcome(step, attempts)
            if self.reasoning is not None:  # no tier verified: a figure a program and an answer agree on, if any
                fig = self.reasoning.settle(outcome)
                outcome.crosschecked = fig.header() if fig else None
            self._guard(outcome)
            await self.recorder.record(outcome)
        finally:
            self.recorder.release(step)
        if outcome.final.result is None:
            errs = "; ".join(f"{a.spec.name}: {a.error}" for a in attempts)
            if all((a.error or "").startswith("context:") for a in attempts):
                raise ContextLengthError(f"the prompt does not fit any model's context window ({errs}).",
                                         hint="shorten the conversation")
            raise BackendError(f"no model could answer this step ({errs}).", hint="run `smallfleet doctor`")
        return outcome

    async def _measure(self, step: Step) -> None:
        """The prompt's token floor and the labelled tool output, once per step (off the event loop when large);
        and, where a remote tier may see the step, its texts scanned for personal data in the detector's
        shared worker pass, so routing and pseudonymising find the results cached."""
        if self._scans:
            assert self.privacy is not None
            await self.privacy.prefetch(step.request)
        chars = prompt_chars(step.request)
        if chars > OFF_LOOP_CHARS:  # scanning megabytes would stall the event loop
            step.prompt_floor = await asyncio.to_thread(min_prompt_tokens, step.request, self._max_context, chars)
            await asyncio.to_thread(self.router.guard_context, step)
        else:
            step.prompt_floor = min_prompt_tokens(step.request, self._max_context, chars)

    def _permitted(self, step: Step, spec: ModelSpec) -> ModelSpec:
        """The model, if the step's API key may use it; else a 403 that names what it may use."""
        if self.router.allows(step, spec):
            return spec
        assert step.allowed is not None  # allows() is true without a list
        raise ForbiddenError(f"this API key may not use {spec.name} (tier {spec.tier}); it may use: "
                             f"{', '.join(sorted(step.allowed))}.", hint="ask the operator: smallfleet keys limit NAME --models ...")

    async def _escalate(self, step: Step, tier: str | None) -> list[Attempt]:
        policy = self.router.policy(step)
        attempts: list[Attempt] = []
        while tier is not None:
            spec = self._permitted(step, self.router.model_for(step, tier))
            att = await self._attempt(spec, tier, step)
            attempts.append(att)
            if att.passed or (att.result is not None and not policy.escalate):
                break
            if len(attempts) > self.config.max_escalations:
                break
            # a prompt that did not fit is not tried on a model whose window is no larger (nor loaded for it)
            too_long = max((a.spec.context for a in attempts if (a.error or "").startswith("context:")), default=0)
            nxt = self.router.escalate_from(tier, [a.spec for a in attempts], too_long, step)
            if nxt is None:
                break
            att.escalated = True
            tier = nxt
        # Prefer the last attempt that produced an answer, so a dead top tier does not lose a usable one.
        if attempts[-1].result is None:
            answered = [a for a in attempts if a.result is not None]
            if answered:
                best = answered[-1]
                attempts.remove(best)
                attempts.append(best)
        return attempts

    async def _attempt(self, spec: ModelSpec, tier: str, step: Step) -> Attempt:
        t0 = time.time()
        att = await self._call(spec, tier, step)
        att.started, att.ended = t0, time.time()
        return att

    async def _call(self, spec: ModelSpec, tier: str, step: Step) -> Attempt:
        floor = step.prompt_floor  # measured once per step, in run()
        if floor > spec.context:  # certain not to fit: say so without loading the model
            return Attempt(spec, tier, None, error=f"context: the prompt is at least {floor} tokens; {spec.name} "
                                                   f"holds {spec.context}")
        await self.recorder.reserve(step, spec)
        backend = self.fleet.get(spec.name)
        request, pz, hidden = step.request, None, -1
        types: dict[str, int] = {}
        if step.examples is not None and step.examples[0] == tier:  # a learned route's worked examples, for its tier
            request = with_examples(request, step.examples[1])
        local_cost, rewritten = 0.0, False
        if self.router.pseudonymises(spec):
            assert self.privacy is not None  # pseudonymises() is false without it
            if self.privacy.rewrites(step.kind.value, request):  # rewrite mode: the remote model gets a rewritten request
                assert self.privacy.rewriter is not None
                writer = self.privacy.rewriter.backend.spec
                await self.recorder.reserve(step, writer, request)
                try:
                    rw = await self.privacy.rewriter.rewrite(request)
                except BackendError as e:
                    return Attempt(spec, tier, None, error=f"backend: the local rewrite failed: {e.message}")
                await self.privacy.carry(request, rw.request)  # what the rewrite copied of the original stays hidden
                request, rewritten = rw.request, True
                local_cost += writer.cost(rw.call.tokens_in, rw.call.tokens_out)
            request, pz, hidden = await self.privacy.outbound_async(request, step.privacy_key)
            types = dict(pz.types)
        if self.router.datamarks(step):  # after pseudonymising: the detector reads the text as written
            request = _datamarked(request)
        try:
            res = await backend.chat(request)
        except ContextLengthError as e:
            return Attempt(spec, tier, None, error=f"context: {e.message}", pseudonymised=hidden, pseudonymised_types=types)
        except BackendError as e:
            return Attempt(spec, tier, None, error=f"backend: {e.message}", pseudonymised=hidden, pseudonymised_types=types)
        note = ""
        if pz is not None:
            res.message, rep = pz.restore_message(res.message)
            res.raw_text = res.message.get("content") or res.raw_text
            if rep.mangled or rep.unknown:
                note = (f"repaired mangled placeholders {rep.mangled}; " if rep.mangled else "") + \
                       (f"left unknown placeholders {rep.unknown}" if rep.unknown else "")
        if rewritten:  # the local model writes the final answer from the remote one and the original request
            assert self.privacy is not None and self.privacy.rewriter is not None
            try:
                final = await self.privacy.rewriter.compose(step.request, res.content)
            except BackendError as e:
                return Attempt(spec, tier, None, error=f"backend: the local compose failed: {e.message}", pseudonymised=hidden,
                               pseudonymised_types=types)
            local_cost += self.privacy.rewriter.backend.spec.cost(final.tokens_in, final.tokens_out)
            res.message = {"role": "assistant", "content": final.content}
            res.raw_text, res.token_logprobs, res.token_texts = final.content, final.token_logprobs, final.token_texts
            note = (note + "; " if note else "") + "rewrite mode: the remote model answered a request rewritten locally"
        att = Attempt(spec, tier, res, cost_usd=spec.cost(res.tokens_in, res.tokens_out) + local_cost,
                      frontier_cost_usd=self.config.frontier_cost(res.tokens_in, res.tokens_out),
                      pseudonymised=hidden, pseudonymised_types=types, restore_note=note)
        att.verdicts = run_checks(self.router.checks(step), step, res, self.router.policy(step))
        if self.judge is not None:
            await self.judge.review(att, step)
        if self.reasoning is not None:
            await self.reasoning.review(att, step)
        return att

    def _guard(self, outcome: Outcome) -> None:
        """The final answer's tool calls against policy and provenance: block, flag or ask to confirm."""
        step, res = outcome.step, outcome.final.result
        mode = self.router.guard_mode(step)
        if self.guard is None or mode == "off" or res is None:
            return
        review = enforce(self.guard, res, mode, step.messages, step.tools, step.approved, self.router.guard_context(step))
        if review is None:
            return
        if self.router.datamarks(step):
            step.notes.append("tool output shown to the model datamarked")
        outcome.guard, outcome.guard_mode = review, mode

    def can_stream_live(self, step: Step) -> bool:
        """Live streaming is for text answers only: tool calls, JSON and grounded answers (their citation
        check may escalate) must be checked before they leave."""
        return not step.tools and not step.wants_json() and step.kb is None

    async def live(self, step: Step, model: str = "auto") -> LiveStream:
        """A live stream of the step from the router's start tier (or the named model)."""
        await self._measure(step)  # labels a large tool output off the event loop, as run() does
        spec = self.fleet.spec(model) if model != "auto" else self.router.model_for(step, self.router.start_tier(step))
        self._permitted(step, spec)
        await self.recorder.reserve(step, spec)
        return LiveStream(step, spec, self.fleet.get(spec.name), config=self.config, router=self.router,
                          recorder=self.recorder, privacy=self.privacy)
