"""Embedded llama.cpp through ``xllamacpp``: llama.cpp's own server logic, in-process.

One ``xllamacpp.Server`` per model, loaded lazily on first use. Calls run in worker threads (the
extension releases the GIL) and llama.cpp queues them onto its slots, so concurrent requests are
safe. With the default single slot consecutive steps that share a prefix (system prompt + tool
definitions) reuse its KV cache instead of re-reading it.

Cancellation: a call whose caller is cancelled (the client went away) stops generating at the next
token. llama.cpp only checks for that in streaming mode, so a free-text step (no tools, no JSON
schema: the reasoning and generation steps, whose answers are the long ones) is generated as a stream
and assembled here: the same text and usage, and the logprobs of every token that produced text
(the one-shot call also lists the end-of-text token). A step with tools or a schema is one call,
because llama.cpp gives no logprobs for streamed tool calls and leaves the grammar's fence tokens
out of streamed logprobs, which the calibrated confidence checks count: such a step (short, bounded
by its schema) runs to its end, and the cascade does not escalate it once the client is gone.

After a tool result (tools offered, ``tool_choice`` auto) a step first runs a short next-step pass:
decoding constrained to "one call of an offered tool, or an answer". A new call is the step's answer;
a repeated call or an answer falls back to the free-text answer with the result nudge (see
``_next_call``). Its generated tokens are added to the step's usage.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..assets import ProgressFn, ensure_packaged, verify_file
from ..errors import BackendError, ContextLengthError, InvalidRequestError, ModelUnavailableError
from ..spec import ModelSpec
from ._toolcalls import after_tool_result, answered_calls, call_schema, next_call, next_step_schema, parse_tool_calls, with_result_nudge
from .base import ChatResult, Samples

log = logging.getLogger("smallfleet")

# Fields llama.cpp understands; everything else (metadata, user, stream_options...) stays out.
_PASS = ("messages", "tools", "tool_choice", "response_format", "max_tokens", "temperature", "top_p", "stop",
         "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "stream",
         "cache_prompt")  # llama.cpp's own switch for prefix reuse (benchmarks turn it off)


def resolve_location(spec: ModelSpec, progress: ProgressFn | None = None) -> Path:
    """GGUF path for a spec: ``package:NAME`` is assembled and verified; a plain path must exist."""
    loc = spec.location
    if loc.startswith("package:"):
        return ensure_packaged(loc.removeprefix("package:"), progress)
    path = Path(loc).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(f"model {spec.name}: GGUF file {path} does not exist.",
                                    hint="fix models.<name>.path in smallfleet.toml or SMALLFLEET_*_MODEL")
    verify_file(path, None)
    return path


class LlamaCppBackend:
    def __init__(self, spec: ModelSpec, progress: ProgressFn | None = None) -> None:
        self.spec = spec
        self._server: Any = None
        self._lock = threading.Lock()
        self._progress = progress
        self.path: Path | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._server is not None

    def load(self) -> None:
        if self._server is not None:
            return
        with self._lock:
            if self._server is not None:
                return
            import xllamacpp  # heavy native module: imported once, at load time, never per request

            t0 = time.perf_counter()
            self.path = resolve_location(self.spec, self._progress)
            p = xllamacpp.CommonParams()
            p.model.path = str(self.path)
            p.n_ctx = self.spec.context * self.spec.parallel
            p.n_parallel = self.spec.parallel
            p.cpuparams.n_threads = self.spec.threads
            p.cpuparams_batch.n_threads = self.spec.threads
            p.verbosity = -1
            p.cache_ram_mib = 256  # host-side prompt cache for prefixes evicted from the slot
            for adapter in self.spec.lora:
                if not Path(adapter).is_file():
                    raise ModelUnavailableError(f"{self.spec.name}: the LoRA adapter {adapter} does not exist.",
                                                hint="write one with `smallfleet learn finetune`, or fix [models.NAME] lora")
            if self.spec.lora:
                p.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(a), 1.0) for a in self.spec.lora]
            try:
                self._server = xllamacpp.Server(p)
            except Exception as e:  # the extension raises plain RuntimeError/ValueError
                if self.spec.lora:  # llama.cpp's reason (shape, architecture) goes to its log only
                    raise ModelUnavailableError(
                        f"llama.cpp could not load {self.path} with the LoRA adapter(s) {', '.join(self.spec.lora)}: {e}",
                        hint="an adapter must be a GGUF LoRA adapter made for this base model's architecture and "
                             "shapes (`smallfleet learn finetune` writes one)") from e
                raise ModelUnavailableError(f"llama.cpp could not load {self.path}: {e}",
                                            hint="is it a GGUF file? run `smallfleet doctor`") from e
            self.load_seconds = time.perf_counter() - t0

    def _prepare(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        req = {k: request[k] for k in _PASS if k in request}
        # max_output is the operator's cap: a request may ask for fewer tokens, never more
        req["max_tokens"] = min(int(request.get("max_tokens") or request.get("max_completion_tokens") or self.spec.max_output),
                                self.spec.max_output, self.spec.context)
        req.setdefault("temperature", 0.0)  # agent steps want repeatable answers unless asked otherwise
        if "seed" in req:
            req["seed"] = req["seed"] % (1 << 32)  # llama.cpp's seed is 32 bits; OpenAI's is any integer
        if "logprobs" not in req:
            req["logprobs"] = True  # feeds the confidence check; cheap
            if isinstance(req.get("response_format"), dict):
                req["top_logprobs"] = 5  # alternatives at each label token, for the label-margin check
        tools = req.get("tools") or []
        names = {t["function"]["name"] for t in tools}
        tc = req.get("tool_choice", "auto")
        if tools and tc == "none":
            req.pop("tools")
            names = set()
        elif tools and (tc == "required" or isinstance(tc, dict)) and "response_format" not in req:
            # The template has no native tool-call format: constrain the JSON instead.
            req["response_format"] = {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": call_schema(tools, tc)}}
        req.pop("tool_choice", None)
        req["messages"] = with_result_nudge(req["messages"], bool(req.get("tools")))
        return req, names

    def _call(self, req: dict[str, Any], callback: Callable[[dict[str, Any]], bool] | None = None) -> Any:
        self.load()
        try:
            if callback is None:
                return self._server.handle_chat_completions(req)
            return self._server.handle_chat_completions(req, callback)
        except ValueError as e:
            raise InvalidRequestError(f"llama.cpp rejected the request: {e}") from e

    def _raise_for(self, res: Any) -> None:
        if not isinstance(res, dict):
            raise BackendError(f"llama.cpp returned {type(res).__name__}, expected a response object.")
        err = res.get("error")
        if err:
            msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            if isinstance(err, dict) and err.get("type") == "exceed_context_size_error":
                raise ContextLengthError(f"{self.spec.name}: {msg}",
                                         hint="shorten the conversation or use a model with a larger context")
            if isinstance(err, dict) and (err.get("code") == 400 or err.get("type") == "invalid_request_error"):
                # e.g. a grammar llama.cpp cannot build from the request's schema: the request's problem
                raise InvalidRequestError(f"{self.spec.name} cannot run this request: {str(msg)[:300]}",
                                          hint="simplify the JSON schema (response_format or tool parameters)")
            raise BackendError(f"{self.spec.name}: {msg}")

    async def chat(self, request: dict[str, Any]) -> ChatResult:
        req, names = self._prepare(request)
        t0 = time.perf_counter()
        extra_out = 0
        if self.spec.next_step_pass and names and "response_format" not in req and after_tool_result(request.get("messages") or []):
            chosen, extra_out = await self._next_call(req, names, request["messages"], t0)
            if chosen is not None:
                return chosen
        if req.get("tools") or req.get("response_format"):
            req["stream"] = False
            res = await asyncio.to_thread(self._call, req)
        else:
            res = await self._streamed(req)
        latency = (time.perf_counter() - t0) * 1000
        self._raise_for(res)
        choice = res["choices"][0]
        msg = dict(choice.get("message") or {})
        msg["role"] = "assistant"
        finish = choice.get("finish_reason") or "stop"
        raw_text = msg.get("content") or ""
        if names and not msg.get("tool_calls"):
            calls = parse_tool_calls(msg.get("content") or "", names)
            if calls:
                msg["tool_calls"] = calls
                msg["content"] = None
                finish = "tool_calls"
        lp = choice.get("logprobs") or {}
        toks = [c for c in (lp.get("content") or []) if isinstance(c, dict) and "logprob" in c]
        usage = res.get("usage") or {}
        return ChatResult(
            model=self.spec.name, message=msg, finish_reason=finish,
            tokens_in=int(usage.get("prompt_tokens", 0)), tokens_out=int(usage.get("completion_tokens", 0)) + extra_out,
            cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)),
            latency_ms=latency, token_logprobs=[c["logprob"] for c in toks] or None,
            token_texts=[c.get("token", "") for c in toks] or None, raw_text=raw_text,
            top_logprobs=[{a.get("token", ""): a["logprob"] for a in c.get("top_logprobs") or [] if "logprob" in a}
                          for c in toks] if any(c.get("top_logprobs") for c in toks) else None,
            extra={"timings": res.get("timings", {})},
        )

    async def samples(self, request: dict[str, Any], k: int) -> Samples:
        """k answers to one prompt in one call: llama.cpp processes the prompt once and decodes the answers on
        parallel slots. Sampled (temperature 0.7 unless the request sets one above 0), without tools."""
        req, _ = self._prepare({**request, "tools": None, "tool_choice": None})
        req.pop("tools", None)
        req.pop("top_logprobs", None)
        if not req.get("temperature"):
            req["temperature"] = 0.7
        req.update(n=k, stream=False, logprobs=True)  # one logprob per token: the count of each answer's tokens
        t0 = time.perf_counter()
        res = await asyncio.to_thread(self._call, req)
        self._raise_for(res)
        choices = [c for c in res.get("choices") or [] if isinstance(c, dict)]
        texts = [str((c.get("message") or {}).get("content") or "") for c in choices]
        # llama.cpp's usage counts one answer's tokens when n > 1; the logprobs count each
        out = sum(len((c.get("logprobs") or {}).get("content") or []) for c in choices)
        usage = res.get("usage") or {}
        return Samples(texts, int(usage.get("prompt_tokens", 0)), out or int(usage.get("completion_tokens", 0)),
                       (time.perf_counter() - t0) * 1000)

    async def _next_call(self, req: dict[str, Any], names: set[str], messages: list[dict[str, Any]],
                         t0: float) -> tuple[ChatResult | None, int]:
        """After a tool result: does the task need another call? Asked with decoding constrained to
        "one call of an offered tool, or an answer".

        Measured on the packaged models (bench/agents.py): left free, after a result they answer (the
        nudge) even when the request needs a second call; constrained this way the 1.5B picks the right
        next call in most chains, but it also repeats the call it just made where one call was enough.
        So a *new* call is taken; a repeated call or an answer falls back to the free-text answer (whose
        prompt is already in the KV cache). Returns (the call, or None; tokens this pass generated)."""
        dreq = {**req, "stream": False, "response_format": {"type": "json_schema", "json_schema": {
            "name": "next_step", "schema": next_step_schema(req["tools"])}}}
        try:
            res = await asyncio.to_thread(self._call, dreq)
            self._raise_for(res)
        except InvalidRequestError:
            # a tool schema llama.cpp cannot turn into a grammar: the pass is ours, not the client's
            # request, so the step goes on with the free-text answer instead of failing
            return None, 0
        usage = res.get("usage") or {}
        out = int(usage.get("completion_tokens", 0))
        choice = res["choices"][0]
        call = next_call((choice.get("message") or {}).get("content") or "", names, answered_calls(messages))
        if call is None:
            return None, out
        return ChatResult(model=self.spec.name, message={"role": "assistant", "content": None, "tool_calls": [call]},
                          finish_reason="tool_calls", tokens_in=int(usage.get("prompt_tokens", 0)), tokens_out=out,
                          cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)),
                          latency_ms=(time.perf_counter() - t0) * 1000, raw_text=choice["message"].get("content") or "",
                          extra={"timings": res.get("timings", {}), "next_step_pass": True}), out

    async def _streamed(self, req: dict[str, Any]) -> dict[str, Any]:
        """One completion generated as a stream (so it can be stopped) and assembled into the one-shot shape."""
        req = {**req, "stream": True, "stream_options": {"include_usage": True}}
        stop = threading.Event()
        chunks: list[Any] = []

        def on_chunk(chunk: Any) -> bool:
            chunks.append(chunk)
            return stop.is_set()  # True asks llama.cpp to stop generating

        fut = asyncio.get_running_loop().run_in_executor(None, self._call, req, on_chunk)
        try:
            res = await asyncio.shield(fut)
        except asyncio.CancelledError:
            stop.set()  # the thread returns at the next token; nobody waits for it
            raise
        if isinstance(res, dict) and res.get("error"):
            return res
        return assemble(chunks)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        req, _ = self._prepare(request)
        req["stream"] = True
        req.pop("logprobs", None)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def on_chunk(chunk: Any) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return cancelled.is_set()  # True asks llama.cpp to stop generating

        def run() -> None:
            try:
                res = self._call(req, on_chunk)
                if isinstance(res, dict) and res.get("error"):
                    loop.call_soon_threadsafe(queue.put_nowait, res)
            except Exception as e:  # surfaced to the consumer below
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, run)
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, dict) and item.get("error"):
                    self._raise_for(item)
                yield item
        finally:
            cancelled.set()
            await worker

    async def aclose(self) -> None:
        """Free the model. llama.cpp's server is torn down in a thread of its own and waited for at most
        ``CLOSE_S``: its destructor joins the server's loop thread, and that join has been seen to hang
        (once, on shutdown after a replay run with 4 slots), which must not hang the gateway's exit."""
        srv, self._server = self._server, None
        if srv is None:
            return
        closer = threading.Thread(target=_release, args=(srv,), name="smallfleet-llama-close", daemon=True)
        del srv  # the thread's arguments hold the last reference: the destructor runs there
        closer.start()
        await asyncio.to_thread(closer.join, CLOSE_S)
        if closer.is_alive():
            log.warning("llama.cpp's server for %s did not stop within %.0f s; leaving it behind", self.spec.name, CLOSE_S)


def _release(server: Any) -> None:
    """Runs in the closing thread; the server goes when this frame and the thread's arguments go."""
    del server


CLOSE_S = 10.0


def assemble(chunks: list[Any]) -> dict[str, Any]:
    """``chat.completion.chunk`` dicts (llama.cpp's stream) as the ``chat.completion`` they add up to."""
    content: list[str] = []
    logprobs: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    finish, role = None, "assistant"
    for ch in chunks:
        if not isinstance(ch, dict):
            continue
        if ch.get("error"):
            return ch
        for c in ch.get("choices") or []:
            delta = c.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            lp = c.get("logprobs") or {}
            logprobs.extend(x for x in lp.get("content") or [] if isinstance(x, dict))
            finish = c.get("finish_reason") or finish
        usage = ch.get("usage") or usage
        timings = ch.get("timings") or timings
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish or "stop",
                              "message": {"role": role, "content": "".join(content)}}
    if logprobs:
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice], "usage": usage, "timings": timings}
