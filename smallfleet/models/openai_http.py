"""Any OpenAI-compatible HTTP server: vLLM, Ollama, llama.cpp server, OpenAI, DeepSeek, smallfleet itself.

One pooled ``aiohttp`` session per model (its C parser keeps the gateway's per-request CPU low; httpx
cost about twice as much here); connect errors, timeouts, 429 and 5xx are retried with backoff,
other 4xx are the caller's fault and surface at once with the upstream's message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from ..errors import BackendError, BackendTimeoutError, ContextLengthError, InvalidRequestError
from ..spec import ModelSpec
from .base import ChatResult

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


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
        session = self._client()
        delay = 0.5
        for attempt in range(self.spec.retries + 1):
            last = attempt == self.spec.retries
            try:
                async with session.post(self.url, data=body) as resp:
                    data = await resp.read()
                    if resp.status < 400:
                        return _Response(resp.status, data, dict(resp.headers))
                    if resp.status not in _RETRY_STATUS or last:
                        self._raise_status(resp.status, data)
            except TimeoutError as e:
                if last:
                    raise BackendTimeoutError(f"{self.spec.name} at {self.spec.location} timed out after "
                                              f"{self.spec.timeout_s:.0f} s ({self.spec.retries + 1} tries).",
                                              hint="raise models.<name>.timeout_s or check the server") from e
            except aiohttp.ClientError as e:
                if last:
                    raise BackendError(f"{self.spec.name}: cannot reach {self.spec.location} ({e.__class__.__name__}: {e}).",
                                       hint="is the server running? check models.<name>.url") from e
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def chat(self, request: dict[str, Any]) -> ChatResult:
        t0 = time.perf_counter()
        resp = await self._post(self._body(request, False))
        latency = (time.perf_counter() - t0) * 1000
        try:
            data = orjson.loads(resp.body)
            choice = data["choices"][0]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            raise BackendError(f"{self.spec.name} returned an unreadable response: {resp.body[:200]!r}") from e
        msg = dict(choice.get("message") or {})
        msg["role"] = "assistant"
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

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        session = self._client()
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
                        break
                    yield orjson.loads(payload)
        except TimeoutError as e:
            raise BackendTimeoutError(f"{self.spec.name} stream timed out.") from e
        except aiohttp.ClientError as e:
            raise BackendError(f"{self.spec.name}: cannot reach {self.spec.location} ({e}).") from e

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
