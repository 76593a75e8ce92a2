"""Rewrite mode against placeholder mode (#19): what a remote model sees, and what the answer is worth.

Each task of bench/data/rewrite_tasks.jsonl is a personal request ("a birthday wish for my grandmother
Carmen…") with the private strings it holds, the details the final answer must carry (the grandmother's
name) and a pattern for the task itself. Both modes go through smallfleet's engine to a "remote" model:
a real HTTP server on loopback that records every request body it receives and answers with a local model
(the 1.5B by default) in OpenAI's shape. Modes:
- placeholder: the gateway pseudonymises the request and restores the answer (the default);
- rewrite: ``[privacy] rewrite = ["generation"]``: the local 0.5B rewrites the request without the private
  details, the remote model answers the rewrite, the 0.5B writes the final answer.
Reported per mode: task success (every must-include detail in the final answer and the task pattern
matched; a crude check, stated as such), private strings found in what the remote server received, latency
and local tokens. Prints a table; writes bench/results/rewrite.json.

    python bench/rewrite.py [--remote large] [--limit N]
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, environment, free_port, now, parser, write_json

from smallfleet.config import load_config
from smallfleet.engine import Engine
from smallfleet.fleet import Fleet

TASKS = Path(__file__).resolve().parent / "data" / "rewrite_tasks.jsonl"


class RemoteServer:
    """An OpenAI-compatible chat endpoint on loopback that keeps every body it is sent."""

    def __init__(self, backend: Any) -> None:
        from aiohttp import web

        self.backend, self.bodies, self.port = backend, [], free_port()
        self._web = web
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(30)

    async def _handle(self, request: Any) -> Any:
        body = await request.read()
        self.bodies.append(body.decode("utf-8", "replace"))
        req = json.loads(body)
        res = await self.backend.chat({k: req[k] for k in ("messages", "max_tokens", "temperature") if k in req})
        out = {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": "remote",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": res.content}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out}}
        return self._web.json_response(out)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        app = self._web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = self._web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(self._web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()


def config(tmp: Path, port: int, location: str, rewrite: bool) -> Path:
    # prefer_local off: with it, a request holding personal data starts (and here ends) on the local tier,
    # and neither mode would reach the remote model at all
    cfg = tmp / f"rewrite-{int(rewrite)}.toml"
    cfg.write_text(f"""
[fleet]
tiers = ["small", "frontier"]
[models.local]
path = "{location}"
tier = "small"
[models.remote]
backend = "openai"
url = "http://127.0.0.1:{port}/v1"
model = "remote"
tier = "frontier"
price_in = 2.5
price_out = 10.0
timeout_s = 600
[routing.generation]
start = "frontier"
checks = ["nonempty"]
[privacy]
prefer_local = false
{'rewrite = ["generation"]' if rewrite else ''}
[ledger]
path = "{tmp / 'ledger.db'}"
[memory]
enabled = false
""")
    return cfg


def success(task: dict[str, Any], answer: str) -> bool:
    low = answer.lower()
    return bool(answer.strip()) and all(x.lower() in low for x in task["must_include"]) and re.search(task["task"], answer) is not None


async def run_mode(tasks: list[dict[str, Any]], cfg_path: Path, server: RemoteServer, local: Any) -> list[dict[str, Any]]:
    cfg = load_config(cfg_path, env={})
    eng = Engine(cfg, fleet=Fleet(cfg, backends={"local": local}), ledger=False)
    rows = []
    try:
        for t in tasks:
            before = len(server.bodies)
            t0 = time.perf_counter()
            out = await eng.complete({"messages": [{"role": "user", "content": t["text"]}], "max_tokens": 160},
                                     step_kind="generation")
            dt = time.perf_counter() - t0
            sent = "\n".join(server.bodies[before:])
            answer = out.message.get("content") or ""
            rows.append({"id": t["id"], "success": success(t, answer), "answer": answer, "seconds": round(dt, 2),
                         "leaked": [p for p in t["private"] if p in sent], "remote_calls": len(server.bodies) - before,
                         "sent": sent[-600:], "reason": out.reason})
            print(f"{cfg_path.stem} {t['id']}: success={rows[-1]['success']} leaked={rows[-1]['leaked']} {dt:.1f}s",
                  file=sys.stderr, flush=True)
    finally:
        await eng.aclose()
    return rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--remote", default="large", help="the tier of the default fleet that plays the remote model")
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    tasks = [json.loads(x) for x in TASKS.read_text(encoding="utf-8").splitlines() if x.strip()][: a.limit]
    base = load_config(env={})
    fleet = Fleet(base)
    small = base.tier_model("small")
    remote = fleet.get(base.tier_model(a.remote).name)
    local = fleet.get(small.name)
    remote.load()
    local.load()
    server = RemoteServer(remote)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = {mode: asyncio.run(run_mode(tasks, config(Path(tmp), server.port, small.location, mode == "rewrite"), server, local))
               for mode in ("placeholder", "rewrite")}
    asyncio.run(fleet.aclose())
    summary = {}
    for mode, rows in res.items():
        summary[mode] = {"tasks": len(rows), "success": round(sum(r["success"] for r in rows) / len(rows), 3),
                         "private_strings_sent": sum(len(r["leaked"]) for r in rows),
                         "seconds_p50": round(statistics.median(r["seconds"] for r in rows), 2)}
    print(f"\n{'mode':<14}{'success':>9}{'private sent':>14}{'s p50':>8}")
    for mode, s in summary.items():
        print(f"{mode:<14}{s['success']:>9.3f}{s['private_strings_sent']:>14}{s['seconds_p50']:>8.2f}")
    write_json(RESULTS / "rewrite.json", {"date": now(), "summary": summary, "remote": remote.spec.name,
                                          "local": small.name, "rows": res, "environment": environment()})


if __name__ == "__main__":
    main()
