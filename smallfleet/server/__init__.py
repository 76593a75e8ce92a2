"""The gateway (OpenAI-compatible HTTP API) and its dashboard."""

from __future__ import annotations

import logging
import re
from typing import Any

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


def _server(engine: Engine, host: str, port: int, preload: bool, log_level: str) -> Any:
    """The gateway under uvicorn (uvloop + httptools when available), with the configured limits."""
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
    install_log_filter()
    return uvicorn.Server(config)


def serve(engine: Engine, host: str, port: int, preload: bool = False, log_level: str = "warning") -> None:
    """Run the gateway in this process."""
    _server(engine, host, port, preload, log_level).run()


def _worker(sock: Any, config_path: str | None, host: str, port: int, preload: bool, log_level: str) -> None:
    """One worker process of ``serve_workers``: its own engine on the shared listening socket."""
    import signal

    from ..config import load_config

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop (SIGTERM)
    _server(Engine(load_config(config_path)), host, port, preload, log_level).run(sockets=[sock])


def serve_workers(workers: int, config_path: str | None, host: str, port: int, preload: bool = False,
                  log_level: str = "warning") -> None:
    """Run ``workers`` gateway processes on one port (one listening socket, shared): each its own
    engine, all on the configured ledger (a SQLite file on this machine, or PostgreSQL). A worker that
    dies is started again; Ctrl-C or SIGTERM stops them all."""
    import multiprocessing as mp
    import signal
    import socket
    import time

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    ctx = mp.get_context("spawn")
    args = (sock, config_path, host, port, preload, log_level)
    procs = [ctx.Process(target=_worker, args=args, name=f"smallfleet-worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            time.sleep(0.5)
            for i, p in enumerate(procs):
                if not p.is_alive() and not stopping:
                    logging.getLogger("smallfleet").warning("worker %d exited (code %s); starting it again", i, p.exitcode)
                    procs[i] = ctx.Process(target=_worker, args=args, name=f"smallfleet-worker-{i}")
                    procs[i].start()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
        sock.close()
