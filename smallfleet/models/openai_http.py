"""Any OpenAI-compatible HTTP server: vLLM, Ollama, llama.cpp server, OpenAI, DeepSeek, smallfleet itself.

One pooled ``aiohttp`` session per model (its C parser keeps the gateway's per-request CPU low; httpx
cost about twice as much here); connect errors, timeouts, 429 and 5xx are retried (``retries`` times,
exponential backoff with jitter, an upstream's ``retry-after`` honoured up to 10 s); other 4xx are the
caller's fault and surface at once with the upstream's message.

A circuit breaker per backend: after ``BREAKER_FAILURES`` calls in a row that failed on the upstream's
side (unreachable, timed out, 5xx after its retries, an unreadable answer), calls fail at once for
``BREAKER_COOLDOWN_S`` instead of each waiting out its retries, so the cascade moves to the next tier
without delay; then one call probes, and a success closes the circuit.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from ..errors import BackendError, BackendTimeoutError, ContextLengthError, InvalidRequestError
from ..spec import ModelSpec
from ._toolcalls import parse_tool_calls
from .base import ChatResult, Samples

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
BREAKER_FAILURES = 5
BREAKER_COOLDOWN_S = 30.0
MAX_RETRY_AFTER_S = 10.0


class Breaker:
    """Closed (calls go through), open (they fail at once), half-open after the cooldown (one probe)."""

    def __init__(self, name: str, failures: int = BREAKER_FAILURES, cooldown_s: float = BREAKER_COOLDOWN_S) -> None:
        self.name, self.failures, self.cooldown_s = name, failures, cooldown_s
        self._lock = threading.Lock()
        self._streak = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._streak >= self.failures

    def allow(self) -> None:
        """Raise BackendError while the circuit is open (the cascade then tries the next tier)."""
        with self._lock:
            if not self.is_open:
                return
            now = time.monotonic()
            if now >= self._open_until and not self._probing:
                self._probing = True  # this call is the probe
                return
            wait = max(0.0, self._open_until - now)
        raise BackendError(f"{self.name}: circuit open after {self._streak} failed calls in a row; not calling it for "
                           f"another {wait:.0f} s.", hint="check the server; the next tier answers meanwhile where the policy allows")

    def abandon(self) -> None:
        """A call that ended without a verdict on the upstream (cancelled): a probe may be tried again."""
        with self._lock:
            self._probing = False

    def success(self) -> None:
        with self._lock:
            self._streak, self._probing = 0, False

    def failure(self) -> None:
        with self._lock:
            self._streak += 1
            self._probing = False
            if self.is_open:
                self._open_until = time.monotonic() + self.cooldown_s


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """An upstream's ``retry-after`` in seconds, capped (``headers`` looks names up in any case, as aiohttp's do)."""
    try:
        v = float(headers.get("retry-after") or "")
    except ValueError:
        return None
    return min(max(0.0, v), MAX_RETRY_AFTER_S)


def _chat_url(base: str) -> str:
    base = base.rstrip("/")
    return base + "/chat/completions" if base.endswith("/v1") else base + "/v1/chat/completions"


def _upstream_message(status: int, body: bytes) -> str:
    try:
        data = orjson.loads(body)
        err = data.get("error", data)
        return err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except Exception:
        return body[:300].decode("utf-8", "replace")


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers


class OpenAIHTTPBackend:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.url = _chat_url(spec.location)
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"content-type": "application/json"}
        self.breaker = Breaker(f"{spec.name} at {spec.location}")

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        key = self.spec.resolved_api_key()
        if key:
            self._headers["authorization"] = f"Bearer {key}"

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop: aiohttp sessions belong to one event loop.
        if self._session is None or self._session.closed:
            self.load()
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout_s, sock_connect=10.0),
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    def _body(self, request: dict[str, Any], stream: bool) -> bytes:
        body = {k: v for k, v in request.items() if k != "metadata"}
        body["model"] = self.spec.remote_model or self.spec.name
        body["stream"] = stream
        for key in ("max_tokens", "max_completion_tokens"):  # the operator's max_output caps what a request asks for
            if isinstance(body.get(key), int):
                body[key] = min(body[key], self.spec.max_output)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    def _raise_status(self, status: int, body: bytes) -> None:
        msg = _upstream_message(status, body)
        where = f"{self.spec.name} at {self.spec.location}"
        if status in (401, 403):
            raise BackendError(f"{where} refused the credentials ({status}): {msg}",
                               hint=f"set {self.spec.api_key_env or 'the API key'} correctly")
        if status == 400 and "context" in msg.lower():
            raise ContextLengthError(f"{where}: {msg}")
        if 400 <= status < 500 and status not in _RETRY_STATUS:
            raise InvalidRequestError(f"{where} rejected the request ({status}): {msg}")
        raise BackendError(f"{where} failed ({status}): {msg}")

    async def _post(self, body: bytes) -> _Response:
        self.breaker.allow()
        try:
            return await self._post_retried(body)
        except BackendError:  # unreachable, timed out, 5xx after the retries, credentials refused
            self.breaker.failure()
            raise
        except InvalidRequestError:  # the upstream answered: it is up, the request was at fault
            self.breaker.success()
            raise
        except BaseException:  # cancelled: says nothing about the upstream
            self.breaker.abandon()
            raise

    async def _post_retried(self, body: bytes) -> _Response:
        session = self._client()
        delay = 0.5
        for attempt in range(self.spec.retries + 1):
            last = attempt == self.spec.retries
            wait: float | None = None
            try:
                async with session.post(self.url, data=body) as resp:
                    data = await resp.read()
                    if resp.status < 400:
                        return _Response(resp.status, data, dict(resp.headers))
                    if resp.status not in _RETRY_STATUS or last:
                        self._raise_status(resp.status, data)
                    wait = _retry_after(resp.headers)
            except TimeoutError as e:
                if last:
                    raise BackendTimeoutError(f"{self.spec.name} at {self.spec.location} timed out after "
                                              f"{self.spec.timeout_s:.0f} s ({self.spec.retries + 1} tries).",
                                              hint="raise models.<name>.timeout_s or check the server") from e
            except aiohttp.ClientError as e:
                if last:
                    raise BackendError(f"{self.spec.name}: cannot reach {self.spec.location} ({e.__class__.__name__}: {e}).",
                                       hint="is the server running? check models.<name>.url") from e
            # jitter, so clients that failed together do not retry together
            await asyncio.sleep(wait if wait is not None else delay * random.uniform(0.5, 1.5))
            delay *= 2
        raise AssertionError("unreachable")

    async def chat(self, request: dict[str, Any]) -> ChatResult:
        t0 = time.perf_counter()
        resp = await self._post(self._body(request, False))
        latency = (time.perf_counter() - t0) * 1000
        try:
            data = orjson.loads(resp.body)
            choice = data["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError("a choice is not an object")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            self.breaker.failure()
            raise BackendError(f"{self.spec.name} returned an unreadable response: {resp.body[:200]!r}") from e
        self.breaker.success()
        msg = dict(choice.get("message") or {})
        msg["role"] = "assistant"
        if request.get("tools") and not msg.get("tool_calls") and isinstance(msg.get("content"), str):
            # small models behind llama.cpp's server or Ollama often write the call as JSON text
            # (the template has no tool syntax, or tool_choice is not enforced): lift it out
            names = {t["function"]["name"] for t in request["tools"] if isinstance(t, dict) and isinstance(t.get("function"), dict)
                     and isinstance(t["function"].get("name"), str)}
            calls = parse_tool_calls(msg["content"], names) if names and request.get("tool_choice") != "none" else []
            if calls:
                msg["tool_calls"], msg["content"] = calls, None
                choice = {**choice, "finish_reason": "tool_calls"}
        usage = data.get("usage") or {}
        lp = choice.get("logprobs") or {}
        toks = [c for c in (lp.get("content") or []) if isinstance(c, dict) and "logprob" in c]
        return ChatResult(
            model=self.spec.name, message=msg, finish_reason=choice.get("finish_reason") or "stop",
            tokens_in=int(usage.get("prompt_tokens", 0)), tokens_out=int(usage.get("completion_tokens", 0)),
            cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0) or 0),
            latency_ms=latency, token_logprobs=[c["logprob"] for c in toks] or None,
            token_texts=[c.get("token", "") for c in toks] or None, raw_text=msg.get("content") or "",
            extra={k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("x-smallfleet-")},
        )

    async def samples(self, request: dict[str, Any], k: int) -> Samples:
        """k sampled answers in one request (``n``), as vLLM, llama.cpp's server and OpenAI serve it."""
        req = {key: v for key, v in request.items() if key not in ("tools", "tool_choice")}
        req["n"] = k
        if not req.get("temperature"):
            req["temperature"] = 0.7
        t0 = time.perf_counter()
        resp = await self._post(self._body(req, False))
        try:
            data = orjson.loads(resp.body)
            choices = [c for c in data["choices"] if isinstance(c, dict)]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            raise BackendError(f"{self.spec.name} returned an unreadable response: {resp.body[:200]!r}") from e
        usage = data.get("usage") or {}
        texts = [str((c.get("message") or {}).get("content") or "") for c in choices]
        return Samples(texts, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                       (time.perf_counter() - t0) * 1000)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.breaker.allow()
        session = self._client()
        done = False
        try:
            async with session.post(self.url, data=self._body(request, True)) as resp:
                if resp.status >= 400:
                    self._raise_status(resp.status, await resp.read())
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(payload)
                    except orjson.JSONDecodeError as e:
                        raise BackendError(f"{self.spec.name} sent an unreadable stream chunk: {payload[:200]!r}") from e
                    yield chunk
        except TimeoutError as e:
            self.breaker.failure()
            raise BackendTimeoutError(f"{self.spec.name} stream timed out.") from e
        except aiohttp.ClientError as e:
            self.breaker.failure()
            raise BackendError(f"{self.spec.name}: cannot reach {self.spec.location} ({e}).") from e
        except BackendError:
            self.breaker.failure()
            raise
        except InvalidRequestError:
            self.breaker.success()
            raise
        except (asyncio.CancelledError, GeneratorExit):  # the reader went away: no verdict on the upstream
            self.breaker.abandon()
            raise
        if not done:  # the connection closed before [DONE]: a cut stream, not a finished answer
            self.breaker.failure()
            raise BackendError(f"{self.spec.name}: the stream from {self.spec.location} ended before its last event.",
                               hint="the upstream closed the connection mid-answer; retry, or check the server")
        self.breaker.success()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
