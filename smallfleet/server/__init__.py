"""The gateway (OpenAI-compatible HTTP API) and its dashboard."""

from __future__ import annotations

import logging
import re

from ..engine import Engine
from .app import Gateway, stream_chunks

__all__ = ["Gateway", "SafeLogFilter", "serve", "stream_chunks"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]|\r|\n")


class SafeLogFilter(logging.Filter):
    """Request text that reaches a log line (a path, a schema, an error) is escaped: a client cannot
    forge log lines with newlines or colour the operator's terminal with escape codes."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if _CONTROL.search(msg):
            record.msg = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), msg)
            record.args = None
        return True


def install_log_filter() -> SafeLogFilter:
    """Escape control characters in every gateway log record (uvicorn's and smallfleet's)."""
    f = SafeLogFilter()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "smallfleet"):
        lg = logging.getLogger(name)
        for h in lg.handlers:
            h.addFilter(f)
    sf = logging.getLogger("smallfleet")
    if not sf.handlers:  # our own records get a handler (with the filter) instead of Python's last resort
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h.addFilter(f)
        sf.addHandler(h)
        sf.setLevel(logging.INFO)
        sf.propagate = False
    acc = logging.getLogger("smallfleet.access")  # Common Log Format lines, with the time taken appended
    if not acc.handlers:
        h2 = logging.StreamHandler()
        h2.setFormatter(logging.Formatter("%(message)s"))
        h2.addFilter(f)
        acc.addHandler(h2)
        acc.propagate = False
    return f


def serve(engine: Engine, host: str, port: int, preload: bool = False, log_level: str = "warning") -> None:
    """Run the gateway under uvicorn (uvloop + httptools when available), with the configured limits."""
    import uvicorn

    from .protocol import protocol_for

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    limits = engine.config.limits
    config = uvicorn.Config(Gateway(engine, preload=preload), host=host, port=port, loop=loop, http=protocol_for(limits),
                            log_level=log_level, access_log=False, lifespan="on", proxy_headers=False,
                            server_header=False, date_header=False, timeout_keep_alive=max(1, int(limits.keepalive_s)),
                            h11_max_incomplete_event_size=64 << 10)
    server = uvicorn.Server(config)
    install_log_filter()
    server.run()
