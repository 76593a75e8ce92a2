"""The OpenAI-compatible gateway as a bare ASGI app.

No framework and no middleware: the hot path is admit → parse → validate → cascade → serialise, with
the ledger write off the event loop. Endpoints: ``POST /v1/chat/completions``, ``POST /v1/responses``,
``POST /v1/embeddings``, ``POST /v1/smallfleet/extract``, ``GET /v1/models[/{id}]``, ``GET /health``,
``GET /v1/smallfleet/report``, ``/metrics``, ``/openapi.json``, and the dashboard's pages (``/``,
``/runs``, ``/steps``, ``/unverified``, ``/tool-calls``, ``/injections``, ``/clusters``; with
``POST /login`` and ``/logout`` when the gateway has keys).

Every request may be hostile: a client error is a 4xx in OpenAI's shape, a 5xx is a real fault and
carries an error id instead of internals, model work stops when the client goes away, and at most
``[server] max_concurrent`` requests are in flight.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson

from ..dashboard import Dashboard
from ..dashboard.pages import login_page
from ..engine import Engine
from ..errors import AuthError, InvalidRequestError, MethodNotAllowedError, NotFoundError, PayloadTooLargeError, RateLimitError, SmallfleetError
from ..keys import KeyInfo, KeyRing, LocalRate
from ..metrics import Metrics
from ..step import Step
from . import openapi, render, responses
from .access import COOKIE, LOCAL, Access, Principal
from .sse import event, word_pieces

log = logging.getLogger("smallfleet.gateway")
T = TypeVar("T")

_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_HTML = (b"content-type", b"text/html; charset=utf-8")
_NOSTORE = (b"cache-control", b"no-store")  # dashboard pages: fresh on every visit, never kept by a shared cache
# same-origin, not no-referrer: under no-referrer Chromium sends "Origin: null" with the sign-in form's POST,
# which the cross-site check refuses (found by the browser test); other sites still get no referrer
_NOSNIFF = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin")]
MAX_HEADER = 512  # characters in one x-smallfleet-* value
WATCH_AFTER = 0.05  # seconds of work before the gateway starts listening for the client to leave
OFF_LOOP = 256 << 10  # bodies larger than this are parsed and validated in a worker thread, not on the event loop

Scope = dict[str, Any]

# path -> allowed methods; anything else is 404, a known path with another method 405
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("POST",), "/chat/completions": ("POST",), "/v1/responses": ("POST",), "/responses": ("POST",),
    "/v1/smallfleet/extract": ("POST",), "/v1/smallfleet/feedback": ("POST",),
    "/v1/models": ("GET",), "/models": ("GET",), "/v1/models/{id}": ("GET",), "/models/{id}": ("GET",),
    "/v1/embeddings": ("POST",), "/embeddings": ("POST",),
    "/health": ("GET",), "/v1/smallfleet/report": ("GET",), "/metrics": ("GET",), "/openapi.json": ("GET",),
    "/": ("GET",), "/dashboard": ("GET",), "/login": ("POST",), "/logout": ("POST", "GET"),
    "/runs": ("GET",), "/runs/{id}": ("GET",), "/steps": ("GET",), "/steps/{id}": ("GET",), "/unverified": ("GET",),
    "/tool-calls": ("GET",), "/injections": ("GET",), "/clusters": ("GET",),
}
# paths with one parameter after a fixed prefix: the route's name is the prefix + "{id}"
_PREFIXES = ("/v1/models/", "/models/", "/runs/", "/steps/")
_METHODS = {"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"}
access_log = logging.getLogger("smallfleet.access")
_STEP_ROUTES = {"/v1/chat/completions", "/chat/completions", "/v1/responses", "/responses", "/v1/smallfleet/extract",
                "/v1/embeddings", "/embeddings"}
_CORS_ALLOW_HEADERS = b"authorization, content-type"
_HEADER_LIST = re.compile(rb"[A-Za-z0-9_\-, ]{1,2000}")  # a preflight's access-control-request-headers, echoed when it is only names
_PAGES = {"/", "/dashboard", "/runs", "/runs/{id}", "/steps", "/steps/{id}", "/unverified", "/tool-calls", "/injections", "/clusters"}
_DASHBOARD = _PAGES | {"/v1/smallfleet/report", "/login", "/logout"}  # may use the dashboard's cookie


def match(path: str) -> tuple[str | None, str]:
    """The route a path names and its parameter: ``("/v1/models/{id}", "gpt-4o")``; ``(None, "")`` for none."""
    if path in ROUTES:
        return path, ""
    for prefix in _PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix + "{id}", path[len(prefix):]
    return None, ""


class ClientGone(Exception):
    """The client disconnected; whatever it asked for is abandoned."""


def _hdrs(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode("latin-1", "replace")) for k, v in extra.items()]


class Gateway:
    def __init__(self, engine: Engine, preload: bool = False, keys: KeyRing | None = None) -> None:
        self.engine = engine
        self.preload = preload
        self.started = time.time()
        cfg = engine.config
        self.limits = cfg.limits
        self.access = Access(keys or KeyRing(cfg.key_store), cfg.host, cfg.allowed_hosts, cfg.cors_origins)
        self.inflight = 0
        self._local_rate = LocalRate()
        self.responses = responses.ResponseStore(shared=engine.shared)
        self.metrics = Metrics()
        self.cors = cfg.cors_origins
        self.dashboard = Dashboard(engine.ledger, cfg)
        self._embedder: Any = None  # the MiniLM embedder, loaded by the first /v1/embeddings request

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
                self.access.ring.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        status = 499  # unless a response starts: the client went away first
        sent = 0
        head = scope["method"] == "HEAD"
        cors = self._cors_headers(scope) if self.cors else None

        async def counted(msg: dict[str, Any]) -> None:
            nonlocal status, sent
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
                if cors:
                    msg = {**msg, "headers": [*msg.get("headers", []), *cors]}
            elif msg["type"] == "http.response.body":
                if head:  # the headers GET would send, no body
                    msg = {**msg, "body": b""}
                sent += len(msg.get("body", b""))
            await send(msg)

        try:
            await self._route(scope, receive, counted)
        finally:  # a route the gateway knows, never the raw path or query: no request text in labels or logs
            route = match(scope["path"])[0] or "other"
            secs = time.perf_counter() - t0
            self.metrics.request(route, status, secs)
            if self.engine.config.access_log:
                client = scope.get("client")
                access_log.info('%s - %s [%s] "%s %s HTTP/%s" %d %d %.3f', client[0] if client else "-",
                                scope.get("smallfleet.key") or "-", time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                                scope["method"] if scope["method"] in _METHODS else "OTHER", route,
                                scope.get("http_version", "1.1"), status, sent, secs)

    async def _route(self, scope: Scope, receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        started = False

        async def tracked(msg: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(msg)

        try:
            route, param = match(path)
            if route is None:
                raise NotFoundError(f"no route {path[:100]}; see /v1/chat/completions, /v1/models, /health, /openapi.json")
            methods = ROUTES[route]
            if method == "OPTIONS" and self.cors:  # a browser's CORS preflight: no key needed, nothing runs
                return await self._preflight(scope, tracked, methods)
            if method == "HEAD" and "GET" in methods:
                method = "GET"
            elif method not in methods:
                raise MethodNotAllowedError(f"use {' or '.join(methods)} for {path}", methods)
            headers = _headers(scope)
            server = scope.get("server")
            client = scope.get("client")
            if path == "/health":
                return await self._health(tracked, headers, client[0] if client else None, server[1] if server else None)
            if path == "/logout":  # needs no key: it only clears the cookie
                return await self._send(tracked, 303, b"", [(b"location", b"/"), _cookie_header("", 0)])
            if path == "/login":
                self.access.check_site(headers)
                return await self._login(scope, receive, tracked)
            who = self.access.admit(headers, client[0] if client else None, server[1] if server else None,
                                    dashboard=route in _DASHBOARD and method == "GET")
            if who.key is not None:
                scope["smallfleet.key"] = who.key.id  # the key's id (not the secret), for the access log
            if who.key is not None and who.key.rpm is not None and path in _STEP_ROUTES:
                await self._rate(who.key)
            if path in ("/v1/chat/completions", "/chat/completions"):
                return await self._limited(self._chat(scope, receive, tracked, headers, who), tracked)
            if path in ("/v1/responses", "/responses"):
                return await self._limited(self._responses(receive, tracked, headers, who), tracked)
            if path == "/v1/smallfleet/extract":
                return await self._limited(self._extract(receive, tracked), tracked)
            if path == "/v1/smallfleet/feedback":
                return await self._feedback(receive, tracked, who)
            if path in ("/v1/models", "/models"):
                return await self._json(tracked, 200, self._models())
            if route in ("/v1/models/{id}", "/models/{id}"):
                return await self._json(tracked, 200, self._model(param))
            if route in ("/v1/embeddings", "/embeddings"):
                return await self._limited(self._embeddings(receive, tracked), tracked)
            if path == "/v1/smallfleet/report":
                qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                run = (qs.get("run") or [None])[0]
                return await self._json(tracked, 200, await asyncio.to_thread(self._report, who, run))
            if path == "/openapi.json":
                return await self._json(tracked, 200, openapi.document())
            if path == "/metrics":
                return await self._send(tracked, 200, self.metrics.render().encode(),
                                        [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
            if route in _PAGES:
                code, html = await asyncio.to_thread(self.dashboard.page, route, param, scope.get("query_string", b""),
                                                     None if who.admin else who.key.account if who.key else None)
                return await self._send(tracked, code, html.encode(), [_HTML, *_NOSNIFF, _NOSTORE])
        except AuthError as e:
            if route in _PAGES and not started:
                return await self._send(tracked, 401, login_page().encode(), [_HTML, *_NOSNIFF])
            await self._error(tracked, started, e.status, e.to_openai())
        except SmallfleetError as e:
            await self._error(tracked, started, e.status, e.to_openai(), e.http_headers())
        except ClientGone:
            return
        except Exception:  # a real fault: logged with an id, no internals to the client
            eid = secrets.token_hex(6)
            log.exception("internal error %s on %s %s", eid, method, path[:100])
            await self._error(tracked, started, 500, _err(f"internal error (id {eid}); the gateway log has the details.",
                                                          "server_error", "server_error"))

    async def _error(self, send: Any, started: bool, status: int, body: dict[str, Any],
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
        if started:  # headers are gone (a stream): nothing more can be said
            return
        await self._send(send, status, orjson.dumps(body), [_JSON, *(extra or [])])

    @staticmethod
    async def _off_loop(remote: bool, fn: Callable[..., T], *args: Any) -> T:
        """A database call: in a worker thread when it crosses the network, inline when it is a local file."""
        return await asyncio.to_thread(fn, *args) if remote else fn(*args)

    async def _rate(self, key: KeyInfo) -> None:
        """The key's requests-per-minute limit, counted in the ledger's database (shared by every
        replica), or in this process when the ledger is off."""
        assert key.rpm is not None
        led = self.engine.ledger
        if led is None:
            wait = self._local_rate.take(key.account, key.rpm)
        elif led.db.dialect == "postgresql":
            wait = await asyncio.to_thread(led.take_rate, key.account, key.rpm)
        else:
            wait = led.take_rate(key.account, key.rpm)
        if wait:
            raise RateLimitError(f"API key {key.name!r} is limited to {key.rpm} requests a minute; retry in {math.ceil(wait)} s.",
                                 hint="slow down, or ask the operator: smallfleet keys limit NAME --rpm N", retry_after=wait)

    async def _limited(self, work: Awaitable[None], send: Any) -> None:
        """At most ``max_concurrent`` requests run; more get a 503 the client may retry."""
        if self.inflight >= self.limits.max_concurrent:
            work.close()  # type: ignore[attr-defined]
            return await self._send(send, 503, orjson.dumps(_err(
                f"the gateway is busy ({self.limits.max_concurrent} requests in flight); retry shortly.", "overloaded",
                "server_error")), [_JSON, (b"retry-after", b"1")])
        self.inflight += 1
        try:
            await work
        finally:
            self.inflight -= 1

    async def _read_body(self, receive: Any) -> bytes:
        chunks, size, cap = [], 0, self.limits.max_body
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone
            body = msg.get("body", b"")
            size += len(body)
            if size > cap:
                raise PayloadTooLargeError(f"the request body is over the gateway's limit of {self.limits.max_body_mb:g} MiB.",
                                      hint="send less history or smaller tool results; the operator sets [server] max_body_mb")
            chunks.append(body)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def _until_gone(self, receive: Any, work: Awaitable[T]) -> T:
        """Run ``work``; if the client disconnects first, cancel it (model work stops) and raise ClientGone.

        The watcher starts only once the work has run for ``WATCH_AFTER`` seconds: a step answered
        sooner (a remote model, a refusal) costs one timer, not a task. Everything here runs on the
        event loop, so the "done" flag closes the race between finishing and the client leaving."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        state = {"done": False, "gone": False}
        watch: list[asyncio.Task[None]] = []

        def on_gone(w: asyncio.Task[None]) -> None:
            if not w.cancelled() and not state["done"]:
                state["gone"] = True
                me.cancel()

        def start() -> None:
            if not state["done"]:
                watch.append(loop.create_task(_disconnect(receive)))
                watch[0].add_done_callback(on_gone)

        timer = loop.call_later(WATCH_AFTER, start)
        try:
            result = await work
            state["done"] = True
            return result
        except asyncio.CancelledError:
            if state["gone"]:
                me.uncancel()
                raise ClientGone from None
            raise
        finally:
            state["done"] = True
            timer.cancel()
            for w in watch:
                w.cancel()

    async def _body(self, receive: Any) -> tuple[Any, bytes, bool]:
        """The parsed JSON body, its bytes, and whether it is big (then parsed in a worker thread)."""
        raw = await self._read_body(receive)
        big = len(raw) > OFF_LOOP  # megabytes of JSON and text scans would stall every other request (and /health)
        return (await asyncio.to_thread(_parse_json, raw) if big else _parse_json(raw)), raw, big

    async def _make_step(self, body: Any, raw: bytes | None, big: bool, headers: dict[str, str], who: Principal) -> Step:
        """A validated step from a chat-completions body and the x-smallfleet-* headers."""
        h = {k: v for k, v in headers.items() if k.startswith("x-smallfleet")}
        for k, v in h.items():
            if len(v) > MAX_HEADER:
                raise InvalidRequestError(f"{k} is longer than {MAX_HEADER} characters.", param=k)
        budget = None
        if "x-smallfleet-budget" in h:
            try:
                budget = float(h["x-smallfleet-budget"])
            except ValueError:
                raise InvalidRequestError("x-smallfleet-budget must be a number of USD.", param="x-smallfleet-budget") from None
        approved = frozenset(t.strip() for t in h.get("x-smallfleet-approve", "").split(",") if t.strip())
        datamark = _onoff(h.get("x-smallfleet-datamark"), "x-smallfleet-datamark")
        capture = _onoff(h.get("x-smallfleet-capture"), "x-smallfleet-capture")

        run = h.get("x-smallfleet-run")
        if run is not None and run.startswith("@"):
            raise InvalidRequestError("x-smallfleet-run may not start with '@' (kept for API keys' own accounts).",
                                      param="x-smallfleet-run")

        def make() -> Step:
            step = self.engine.make_step(body, raw=raw, step_kind=h.get("x-smallfleet-step-kind"), run_id=who.scoped(h.get("x-smallfleet-run")),
                                         session_id=who.scoped(h.get("x-smallfleet-session")), budget_usd=budget,
                                         guard_mode=h.get("x-smallfleet-guard"), approved=approved, datamark=datamark,
                                         kb=h.get("x-smallfleet-kb") or None, kb_where=h.get("x-smallfleet-kb-where") or None,
                                         capture=capture)
            if who.key is not None:
                step.account, step.allowed = who.key.account, who.key.models
            tp = headers.get("traceparent")
            if tp is not None and len(tp) <= 64:  # W3C: 55 characters; anything longer is not one
                step.traceparent = tp
            return step

        return await asyncio.to_thread(make) if big else make()

    async def _chat(self, scope: Scope, receive: Any, send: Any, headers: dict[str, str], who: Principal) -> None:
        body, raw, big = await self._body(receive)
        step = await self._make_step(body, raw, big, headers, who)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        mode = headers.get("x-smallfleet-stream", self.engine.config.stream_mode)
        if mode not in ("verified", "live"):
            raise InvalidRequestError("x-smallfleet-stream must be 'verified' or 'live'.", param="x-smallfleet-stream")
        if body.get("stream") and mode == "live" and self.engine.cascade.can_stream_live(step):
            return await self._until_gone(receive, self._live(step, body, include_usage, send))
        outcome = await self._until_gone(receive, self.engine.run_step(step))
        self.metrics.step(outcome)
        headers_out = _hdrs(render.headers(outcome))
        if not body.get("stream"):
            return await self._send(send, 200, orjson.dumps(render.chat_completion(outcome)), [_JSON, *headers_out])
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *headers_out]})
        for chunk in stream_chunks(render.chat_completion(outcome), include_usage):
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _responses(self, receive: Any, send: Any, headers: dict[str, str], who: Principal) -> None:
        """POST /v1/responses: the Responses API through the same engine (see responses.py)."""
        body, _, big = await self._body(receive)
        if not isinstance(body, dict):
            raise InvalidRequestError("the request body must be a JSON object.", param="body")
        owner = who.key.id if who.key is not None else None
        prev = body.get("previous_response_id")
        if prev is not None and not isinstance(prev, str):
            raise InvalidRequestError("'previous_response_id' must be a string.", param="previous_response_id")
        history = (await self._off_loop(self.responses.remote, self.responses.get, prev, owner)) if prev else []
        chat = responses.to_chat(body, history)
        try:
            step = await self._make_step(chat, None, big, headers, who)
        except InvalidRequestError as e:  # name the Responses field, not the chat one it was mapped to
            e.param = responses.responses_param(e.param)
            raise
        outcome = await self._until_gone(receive, self.engine.run_step(step))
        self.metrics.step(outcome)
        resp_id = responses.new_id("resp")
        resp = responses.response_object(outcome, body, resp_id)
        if outcome.final.result is not None:
            kept = chat["messages"][1:] if body.get("instructions") else chat["messages"]
            await self._off_loop(self.responses.remote, self.responses.put, resp_id, owner, kept, outcome.final.result.message)
        hdrs = _hdrs(render.headers(outcome))
        if not body.get("stream"):
            return await self._send(send, 200, orjson.dumps(resp), [_JSON, *hdrs])
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *hdrs]})
        chunks = [event(e) for e in responses.events(resp)]
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    async def _live(self, step: Step, body: dict[str, Any], include_usage: bool, send: Any) -> None:
        unread = await self.engine.before(step)  # session facts are pinned into live answers too
        try:
            live = await self.engine.cascade.live(step, body.get("model") or "auto")
            await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *_hdrs(render.live_headers(step, live.spec))]})
            try:
                async for chunk in live.chunks():
                    await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
                assert live.outcome is not None  # set when the chunks end
                self.engine.captured(live.outcome)
                self.metrics.step(live.outcome)
                if self.engine.telemetry is not None:
                    self.engine.telemetry.step(step, live.outcome, time.time())
                final = render.live_final_chunk(live.outcome, live.created, include_usage)
                await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(final) + b"\n\n", "more_body": True})
            except SmallfleetError as e:  # headers are gone: report in-band, as OpenAI does
                await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(e.to_openai()) + b"\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        finally:
            self.engine.after(step, unread)

    async def _extract(self, receive: Any, send: Any) -> None:
        """Quarantined reading: {"text", "schema", "instruction"?} → {"fields", "trust": "untrusted", "model"}."""
        body = _parse_json(await self._read_body(receive))
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not isinstance(body.get("schema"), dict):
            raise InvalidRequestError("send {\"text\": str, \"schema\": {JSON schema object}, \"instruction\": str (optional)}.")
        instruction = body.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidRequestError("'instruction' must be a string.", param="instruction")
        result = await self._until_gone(receive, self.engine.extract_quarantined(body["text"], body["schema"], instruction or ""))
        await self._json(send, 200, result)

    async def _feedback(self, receive: Any, send: Any, who: Principal) -> None:
        """{"run_id" | "step_id", "success": bool}: the agent's word on a task or an answer (savings at parity,
        and the learning loop's feedback on captured steps)."""
        body = _parse_json(await self._read_body(receive))
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool) or \
                sum(isinstance(body.get(k), str) and 0 < len(body[k]) <= 256 for k in ("run_id", "step_id")) != 1:
            raise InvalidRequestError('send {"run_id": "...", "success": true|false} or {"step_id": "...", "success": ...}.')
        capturer = self.engine.capturer
        if self.engine.ledger is None and capturer is None:
            raise NotFoundError("this gateway keeps no ledger and captures no traces.")
        run = who.scoped(body["run_id"]) if isinstance(body.get("run_id"), str) else None
        step = _step_id(body["step_id"]) if run is None else None
        ok = False
        if self.engine.ledger is not None:
            ok = await asyncio.to_thread(self.engine.ledger.record_feedback, run_id=run, step_id=step, success=body["success"])
        if capturer is not None:
            known = await asyncio.to_thread(capturer.feedback, step_id=step, conversation=run,
                                            score=1.0 if body["success"] else 0.0)
            ok = ok or known
        if not ok:
            what = f"run {body.get('run_id')!r}" if run is not None else f"step {str(step)[:64]!r}"
            raise NotFoundError(f"no {what} is recorded in the ledger or the trace store.",
                                hint="send the x-smallfleet-run value, or the x-smallfleet-step-id (or chatcmpl- id) of an answer of this gateway")
        await self._json(send, 200, {"recorded": True, "success": body["success"]})

    async def _login(self, scope: Scope, receive: Any, send: Any) -> None:
        """The dashboard's key form: a valid key becomes a same-site, HTTP-only cookie."""
        raw = await self._read_body(receive)
        if not self.access.keyed:  # nothing to sign in to
            return await self._send(send, 303, b"", [(b"location", b"/")])
        form = parse_qs(raw[:4096].decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        if not self.access.ring.check(key):
            return await self._send(send, 401, login_page("That key is not valid (unknown or revoked).").encode(),
                                    [_HTML, *_NOSNIFF])
        await self._send(send, 303, b"", [(b"location", b"/"), _cookie_header(key, 8 * 3600)])

    def _model(self, name: str) -> dict[str, Any]:
        for m in self._models()["data"]:
            if m["id"] == name:
                return dict(m)
        raise NotFoundError(f"no model {name[:100]!r} in this fleet.", param="model",
                            hint="GET /v1/models lists them; 'auto' lets the cascade choose")

    async def _embeddings(self, receive: Any, send: Any) -> None:
        """Sentence embeddings from the local MiniLM (the one grounding and clustering use)."""
        from . import embeddings

        texts, encoding = embeddings.parse((await self._body(receive))[0])
        if self._embedder is None:
            from ..retrieval.embed import Embedder

            self._embedder = Embedder()
        vectors, tokens = await self._until_gone(receive, asyncio.to_thread(self._embedder.embed_counted, texts))
        await self._json(send, 200, embeddings.response(vectors, tokens, encoding))

    def _cors_headers(self, scope: Scope) -> list[tuple[bytes, bytes]] | None:
        """CORS response headers when the request's Origin is one the operator allowed."""
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if origin is None:
            return None
        if "*" in self.cors:
            allow = b"*"
        elif origin.decode("latin-1").rstrip("/") in self.cors:
            allow = origin
        else:
            return None
        return [(b"access-control-allow-origin", allow), (b"vary", b"origin"),
                (b"access-control-expose-headers", b"x-smallfleet-step-id, x-smallfleet-model, x-smallfleet-tier, "
                 b"x-smallfleet-escalated, x-smallfleet-verdict, x-smallfleet-cost, x-smallfleet-reason, retry-after")]

    async def _preflight(self, scope: Scope, send: Any, methods: tuple[str, ...]) -> None:
        if self._cors_headers(scope) is None:  # an origin the operator did not allow: no CORS headers, so the browser refuses
            return await self._send(send, 204, b"", [])
        allow = ", ".join(sorted({*methods, "OPTIONS"} | ({"HEAD"} if "GET" in methods else set())))
        asked = next((v for k, v in scope["headers"] if k == b"access-control-request-headers"), b"")
        await self._send(send, 204, b"", [(b"access-control-allow-methods", allow.encode()),
                                          (b"access-control-allow-headers",
                                           asked if _HEADER_LIST.fullmatch(asked) else _CORS_ALLOW_HEADERS),
                                          (b"access-control-max-age", b"600")])

    def _models(self) -> dict[str, Any]:
        data = [{"id": "auto", "object": "model", "created": int(self.started), "owned_by": "smallfleet"}]
        for m in self.engine.config.models.values():
            data.append({"id": m.name, "object": "model", "created": int(self.started), "owned_by": m.backend,
                         "smallfleet": {"tier": m.tier, "price_in": m.price_in, "price_out": m.price_out,
                                        "context": m.context, "stands_in_for": m.stands_in_for or None,
                                        "loaded": self.engine.fleet.loaded(m.name)}})
        data.append({"id": "all-MiniLM-L6-v2", "object": "model", "created": int(self.started), "owned_by": "smallfleet",
                     "smallfleet": {"kind": "embedding", "dimensions": 384, "endpoint": "/v1/embeddings"}})
        return {"object": "list", "data": data}

    async def _health(self, send: Any, headers: dict[str, str], client: str | None, port: int | None) -> None:
        """Liveness for load balancers: always answers; the details only to a client that may see them."""
        body: dict[str, Any] = {"status": "ok"}
        try:
            self.access.admit(headers, client, port)
        except SmallfleetError:
            return await self._json(send, 200, body)
        body.update(uptime_s=round(time.time() - self.started, 1), in_flight=self.inflight,
                    models={m: self.engine.fleet.loaded(m) for m in self.engine.config.models},
                    ledger=self.engine.ledger.where if self.engine.ledger is not None else "off", keys=self.access.keyed)
        await self._json(send, 200, body)

    def _report(self, who: Principal, run: str | None) -> dict[str, Any]:
        from ..report import build_report  # not on the chat hot path

        if self.engine.ledger is None:
            return {"error": "no ledger configured"}
        run_id = who.scoped(run) if run else None
        return build_report(self.engine.ledger, self.engine.config, run_id, run_prefix=None if run_id else who.prefix).as_dict()

    async def _json(self, send: Any, status: int, obj: Any) -> None:
        await self._send(send, status, orjson.dumps(obj), [_JSON])

    async def _send(self, send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequestError(f"the body is not valid JSON: {str(e)[:200]}.",
                                  hint="send Content-Type: application/json with a JSON object") from None


def _cookie_header(key: str, max_age: int) -> tuple[bytes, bytes]:
    return (b"set-cookie", f"{COOKIE}={key}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict".encode())


def _step_id(v: str) -> str:
    """A step named by its x-smallfleet-step-id or by the chatcmpl- id of its answer."""
    return "step_" + v.removeprefix("chatcmpl-") if v.startswith("chatcmpl-") else v


def _onoff(v: str | None, name: str) -> bool | None:
    if v is None:
        return None
    if v.lower() not in ("on", "off"):
        raise InvalidRequestError(f"{name} must be 'on' or 'off'.", param=name)
    return v.lower() == "on"


def _err(message: str, code: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def stream_chunks(resp: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A finished (verified) completion as OpenAI ``chat.completion.chunk`` events."""
    base = {"id": resp["id"], "object": "chat.completion.chunk", "created": resp["created"], "model": resp["model"]}
    choice = resp["choices"][0]
    msg = choice["message"]
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for p in word_pieces(msg.get("content") or ""):
        out.append({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
    for i, tc in enumerate(msg.get("tool_calls") or []):
        out.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, **tc}]}, "finish_reason": None}]})
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
                "smallfleet": resp.get("smallfleet")})
    if include_usage:
        out.append({**base, "choices": [], "usage": resp["usage"]})
    return out


__all__ = ["LOCAL", "ClientGone", "Gateway", "stream_chunks"]
