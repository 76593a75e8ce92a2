"""Checks with a time limit, for ``doctor`` and ``serve``: a slow check is named and reported, never waited
on forever (a model load that never returns once held doctor for over ten minutes on a loaded machine)."""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from ..errors import NotAvailableError
from ..spec import ModelSpec

T = TypeVar("T")


class SlowCheck(Exception):
    """A check did not finish within its limit."""


def within(seconds: float, what: str, fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread, or SlowCheck naming ``what`` when it runs past ``seconds`` (the thread
    is left to finish or die with the process: a blocked database driver cannot be interrupted)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name=f"check: {what}")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise SlowCheck(f"{what} did not finish in {seconds:g} s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _load(spec: ModelSpec, out: Any) -> None:
    try:
        from ..models.llamacpp import LlamaCppBackend

        b = LlamaCppBackend(spec)
        b.load()
        out.put(("ok", b.load_seconds))
    except BaseException as e:  # the parent reports it
        out.put(("error", f"{type(e).__name__}: {getattr(e, 'message', None) or e}"[:500]))


def load_in_child(spec: ModelSpec, seconds: float) -> float:
    """Load a local model once in a child process: its load time, SlowCheck past ``seconds`` (the child is
    killed), NotAvailableError when it fails. A child, because a load holds the interpreter lock and may
    not return: the parent keeps its clock either way."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_load, args=(spec, results), name=f"smallfleet-doctor-load-{spec.name}", daemon=True)
    p.start()
    try:
        kind, value = results.get(timeout=seconds)
    except queue.Empty:
        raise SlowCheck(f"did not finish in {seconds:g} s") from None
    finally:
        p.join(1)
        if p.is_alive():
            p.kill()
            p.join(5)
    if kind != "ok":
        raise NotAvailableError(f"it does not load: {value}", hint="smallfleet models --install re-verifies the file")
    return float(value)


def port_free(host: str, port: int) -> bool:
    """Whether ``serve`` could bind ``host:port`` now (the test socket is closed at once)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def gateway_health(host: str, port: int) -> dict[str, bool] | None:
    """The loaded-model map of a smallfleet gateway answering at host:port, or None (nothing there, or not ours)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=0.5) as r:
            models: dict[str, bool] | None = orjson.loads(r.read()).get("models")
            return models
    except Exception:  # nothing there, or not a smallfleet gateway
        return None
