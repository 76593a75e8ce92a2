"""uvicorn's httptools protocol with the deadlines it lacks: slow or vanished clients cost nothing.

uvicorn closes idle keep-alive connections, but a client that sends its headers one line every few
seconds, trickles its body, or stops reading the response holds a connection (and, for the body or
the response, a request task) for as long as it likes. Probed: 60 such connections were all kept
open. Here every connection has

- a header deadline: from connect (or from the first byte of the next request on a kept-alive
  connection) to the end of the headers;
- a body deadline: from the end of the headers to the end of the body;
- a write deadline: a response the client stops reading for that long is dropped;
- a cap on open connections: over it, a new connection is closed at once.

A closed connection reaches the app as ``http.disconnect``, which cancels the request's model work.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import ServerLimits


class GuardedProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    body_timeout = 30.0
    write_timeout = 30.0
    max_connections = 256

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self._arm(self.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # a new request on a kept-alive connection
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._not_reading)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _not_reading(self) -> None:
        self._write_timer = None
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)


def protocol_for(limits: ServerLimits) -> type[GuardedProtocol]:
    """A protocol class carrying these limits (uvicorn instantiates it per connection)."""
    attrs: dict[str, Any] = {"header_timeout": limits.header_timeout_s, "body_timeout": limits.body_timeout_s,
                             "write_timeout": limits.body_timeout_s, "max_connections": limits.max_connections}
    return type("SmallfleetProtocol", (GuardedProtocol,), attrs)
