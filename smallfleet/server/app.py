"""The OpenAI-compatible gateway as a bare ASGI app.

No framework and no middleware: the hot path is parse → validate → cascade → serialise, with the
ledger write off the event loop. Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health``, ``GET /v1/smallfleet/report`` and the dashboard at ``GET /``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson

from ..engine import Engine
from ..errors import InvalidRequestError, SmallfleetError
from .dashboard import render_dashboard

MAX_BODY = 32 << 20
_WORDS = re.compile(r"\s*\S+\s*|\s+")
_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

Scope = dict[str, Any]


def _hdrs(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode("latin-1", "replace")) for k, v in extra.items()]


class Gateway:
    def __init__(self, engine: Engine, preload: bool = False) -> None:
        self.engine = engine
        self.preload = preload
        self.started = time.time()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if self.preload:
                    for tier in self.engine.config.tiers:
                        spec = self.engine.config.tier_model(tier)
                        if spec.is_local:
                            await asyncio.to_thread(self.engine.fleet.get(spec.name).load)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.engine.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope["path"]
        method = scope["method"]
        try:
            if path == "/v1/chat/completions" or path == "/chat/completions":
                if method != "POST":
                    return await self._json(send, 405, _err("use POST for /v1/chat/completions", "method_not_allowed"))
                return await self._chat(scope, receive, send)
            if path == "/v1/smallfleet/extract":
                if method != "POST":
                    return await self._json(send, 405, _err("use POST for /v1/smallfleet/extract", "method_not_allowed"))
                return await self._extract(receive, send)
            if method != "GET":
                return await self._json(send, 405, _err(f"use GET for {path}", "method_not_allowed"))
            if path in ("/v1/models", "/models"):
                return await self._json(send, 200, self._models())
            if path == "/health":
                return await self._json(send, 200, self._health())
            if path == "/v1/smallfleet/report":
                return await self._json(send, 200, await asyncio.to_thread(self._report))
            if path in ("/", "/dashboard"):
                html = await asyncio.to_thread(render_dashboard, self._report())
                return await self._send(send, 200, html.encode(), [(b"content-type", b"text/html; charset=utf-8")])
            return await self._json(send, 404, _err(f"no route {path}; see /v1/chat/completions, /v1/models, /health", "not_found"))
        except SmallfleetError as e:
            await self._json(send, e.status, e.to_openai())
        except Exception as e:  # last resort: the client still gets OpenAI's error shape
            await self._json(send, 500, _err(f"internal error: {e.__class__.__name__}: {e}", "server_error"))

    async def _read_body(self, receive: Any) -> bytes:
        chunks, size = [], 0
        while True:
            msg = await receive()
            body = msg.get("body", b"")
            size += len(body)
            if size > MAX_BODY:
                raise InvalidRequestError(f"request body over {MAX_BODY >> 20} MiB.")
            chunks.append(body)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def _chat(self, scope: Scope, receive: Any, send: Any) -> None:
        raw = await self._read_body(receive)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidRequestError(f"the body is not valid JSON: {e}.", hint="send Content-Type: application/json with a JSON object") from None
        h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"] if k.startswith(b"x-smallfleet")}
        budget = None
        if "x-smallfleet-budget" in h:
            try:
                budget = float(h["x-smallfleet-budget"])
            except ValueError:
                raise InvalidRequestError("x-smallfleet-budget must be a number of USD.", param="x-smallfleet-budget") from None
        approved = frozenset(t.strip() for t in h.get("x-smallfleet-approve", "").split(",") if t.strip())
        step = self.engine.make_step(body, step_kind=h.get("x-smallfleet-step-kind"), run_id=h.get("x-smallfleet-run"),
                                     session_id=h.get("x-smallfleet-session"), budget_usd=budget,
                                     guard_mode=h.get("x-smallfleet-guard"), approved=approved,
                                     datamark=_onoff(h.get("x-smallfleet-datamark"), "x-smallfleet-datamark"),
                                     kb=h.get("x-smallfleet-kb") or None, kb_where=h.get("x-smallfleet-kb-where") or None)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        mode = h.get("x-smallfleet-stream", self.engine.config.stream_mode)
        if mode not in ("verified", "live"):
            raise InvalidRequestError("x-smallfleet-stream must be 'verified' or 'live'.", param="x-smallfleet-stream")
        if body.get("stream") and mode == "live" and self.engine.cascade.can_stream_live(step):
            unread = await self.engine.before(step)  # session facts are pinned into live answers too
            try:
                live = self.engine.cascade.live(step, body.get("model") or "auto")
                await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *_hdrs(live.headers())]})
                try:
                    async for chunk in live.chunks(include_usage):
                        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
                except SmallfleetError as e:  # headers are gone: report in-band, as OpenAI does
                    await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(e.to_openai()) + b"\n\n", "more_body": True})
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            finally:
                self.engine.after(step, unread)
            return
        outcome = await self.engine.run_step(step)
        headers = _hdrs(outcome.headers())
        if not body.get("stream"):
            return await self._send(send, 200, orjson.dumps(outcome.response()), [_JSON, *headers])
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *headers]})
        for chunk in stream_chunks(outcome.response(), include_usage):
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _extract(self, receive: Any, send: Any) -> None:
        """Quarantined reading: {"text", "schema", "instruction"?} → {"fields", "trust": "untrusted", "model"}."""
        try:
            body = orjson.loads(await self._read_body(receive))
        except orjson.JSONDecodeError as e:
            raise InvalidRequestError(f"the body is not valid JSON: {e}.") from None
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not isinstance(body.get("schema"), dict):
            raise InvalidRequestError("send {\"text\": str, \"schema\": {JSON schema object}, \"instruction\": str (optional)}.")
        result = await self.engine.extract_quarantined(body["text"], body["schema"], str(body.get("instruction") or ""))
        await self._json(send, 200, result)

    def _models(self) -> dict[str, Any]:
        data = [{"id": "auto", "object": "model", "created": int(self.started), "owned_by": "smallfleet"}]
        for m in self.engine.config.models.values():
            data.append({"id": m.name, "object": "model", "created": int(self.started), "owned_by": m.backend,
                         "smallfleet": {"tier": m.tier, "price_in": m.price_in, "price_out": m.price_out,
                                        "context": m.context, "stands_in_for": m.stands_in_for or None,
                                        "loaded": self.engine.fleet.loaded(m.name)}})
        return {"object": "list", "data": data}

    def _health(self) -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1),
                "models": {m: self.engine.fleet.loaded(m) for m in self.engine.config.models},
                "ledger": str(self.engine.config.ledger_path)}

    def _report(self) -> dict[str, Any]:
        from ..report import build_report  # not on the chat hot path

        if self.engine.ledger is None:
            return {"error": "no ledger configured"}
        return build_report(self.engine.ledger, self.engine.config).as_dict()

    async def _json(self, send: Any, status: int, obj: Any) -> None:
        await self._send(send, status, orjson.dumps(obj), [_JSON])

    async def _send(self, send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _onoff(v: str | None, name: str) -> bool | None:
    if v is None:
        return None
    if v.lower() not in ("on", "off"):
        raise InvalidRequestError(f"{name} must be 'on' or 'off'.", param=name)
    return v.lower() == "on"


def _err(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def stream_chunks(resp: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A finished (verified) completion as OpenAI ``chat.completion.chunk`` events."""
    base = {"id": resp["id"], "object": "chat.completion.chunk", "created": resp["created"], "model": resp["model"]}
    choice = resp["choices"][0]
    msg = choice["message"]
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    content = msg.get("content") or ""
    # Word-sized pieces keep clients that render incrementally behaving as with a live stream;
    # the pieces concatenate back to the exact content.
    pieces: list[str] = []
    for word in _WORDS.findall(content):
        if pieces and len(pieces[-1]) < 24:
            pieces[-1] += word
        else:
            pieces.append(word)
    for p in pieces:
        out.append({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
    for i, tc in enumerate(msg.get("tool_calls") or []):
        out.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, **tc}]}, "finish_reason": None}]})
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
                "smallfleet": resp.get("smallfleet")})
    if include_usage:
        out.append({**base, "choices": [], "usage": resp["usage"]})
    return out
