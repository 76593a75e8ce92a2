"""Any OpenAI-compatible HTTP server: vLLM, Ollama, llama.cpp server, OpenAI, DeepSeek, smallfleet itself.

One pooled ``httpx.AsyncClient`` per model; connect errors, timeouts, 429 and 5xx are retried with
backoff, other 4xx are the caller's fault and surface at once with the upstream's message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from ..config import ModelSpec
from ..errors import BackendError, BackendTimeoutError, ContextLengthError, InvalidRequestError
from .base import ChatResult

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def _chat_url(base: str) -> str:
    base = base.rstrip("/")
    return base + "/chat/completions" if base.endswith("/v1") else base + "/v1/chat/completions"


def _upstream_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body)
        return err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except Exception:
        return resp.text[:300]


class OpenAIHTTPBackend:
    def __init__(self, spec: ModelSpec, client: httpx.AsyncClient | None = None) -> None:
        self.spec = spec
        self.url = _chat_url(spec.location)
        self._client = client

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def load(self) -> None:
        if self._client is None:
            headers = {"content-type": "application/json"}
            key = self.spec.resolved_api_key()
            if key:
                headers["authorization"] = f"Bearer {key}"
            self._client = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(self.spec.timeout_s, connect=10.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )

    def _body(self, request: dict[str, Any], stream: bool) -> bytes:
        body = {k: v for k, v in request.items() if k not in ("metadata",)}
        body["model"] = self.spec.remote_model or self.spec.name
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    def _raise_status(self, resp: httpx.Response) -> None:
        msg = _upstream_message(resp)
        where = f"{self.spec.name} at {self.spec.location}"
        if resp.status_code in (401, 403):
            raise BackendError(f"{where} refused the credentials ({resp.status_code}): {msg}",
                               hint=f"set {self.spec.api_key_env or 'the API key'} correctly")
        if resp.status_code == 400 and "context" in msg.lower():
            raise ContextLengthError(f"{where}: {msg}")
        if 400 <= resp.status_code < 500 and resp.status_code not in _RETRY_STATUS:
            raise InvalidRequestError(f"{where} rejected the request ({resp.status_code}): {msg}")
        raise BackendError(f"{where} failed ({resp.status_code}): {msg}")

    async def _post(self, body: bytes) -> httpx.Response:
        self.load()
        assert self._client is not None
        delay = 0.5
        for attempt in range(self.spec.retries + 1):
            last = attempt == self.spec.retries
            try:
                resp = await self._client.post(self.url, content=body)
            except httpx.TimeoutException as e:
                if last:
                    raise BackendTimeoutError(f"{self.spec.name} at {self.spec.location} timed out after "
                                              f"{self.spec.timeout_s:.0f} s ({self.spec.retries + 1} tries).",
                                              hint="raise models.<name>.timeout_s or check the server") from e
            except httpx.TransportError as e:
                if last:
                    raise BackendError(f"{self.spec.name}: cannot reach {self.spec.location} ({e.__class__.__name__}: {e}).",
                                       hint="is the server running? check models.<name>.url") from e
            else:
                if resp.status_code < 400:
                    return resp
                if resp.status_code not in _RETRY_STATUS or last:
                    self._raise_status(resp)
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def chat(self, request: dict[str, Any]) -> ChatResult:
        t0 = time.perf_counter()
        resp = await self._post(self._body(request, False))
        latency = (time.perf_counter() - t0) * 1000
        try:
            data = orjson.loads(resp.content)
            choice = data["choices"][0]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            raise BackendError(f"{self.spec.name} returned an unreadable response: {resp.text[:200]!r}") from e
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
            extra={k: resp.headers[k] for k in resp.headers if k.startswith("x-smallfleet-")},
        )

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.load()
        assert self._client is not None
        try:
            async with self._client.stream("POST", self.url, content=self._body(request, True)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    self._raise_status(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    yield orjson.loads(payload)
        except httpx.TimeoutException as e:
            raise BackendTimeoutError(f"{self.spec.name} stream timed out.") from e
        except httpx.TransportError as e:
            raise BackendError(f"{self.spec.name}: cannot reach {self.spec.location} ({e}).") from e

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
