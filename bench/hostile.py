"""Hostile input against a running gateway: what one attacker or careless client can cost it.

Starts `smallfleet serve` on the default fleet (the packaged 0.5B and 1.5B, loaded lazily) under an
address-space cap, then sends each category of the hardening issue's findings, plus a seeded
fuzzer, while a watcher polls /health every 0.25 s and samples the gateway's resident memory.

    python bench/hostile.py [--cap-gb 10] [--ref GIT_REF] [--only CATEGORY,...] [--fuzz 600]

With --ref the same categories are also sent to the gateway of that commit (checked out in a
temporary worktree, run with this venv) under the same cap: "before" beside "after" in one run. A
gateway the kernel or its cap kills is restarted for the next category and counted as a crash.
Prints a table and writes bench/results/hostile.json. The published file came from ``--ref e420db4`` (the commit
before the hardening), its "this tree" column re-run later on the final code (see its "setup").
"""

from __future__ import annotations

import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _common import RESULTS, ROOT, free_port, parser, serve, stop, wait_ready, write_json

U = [{"role": "user", "content": "hi"}]
OK = {"model": "auto", "messages": U, "max_tokens": 4}


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024
    except (FileNotFoundError, StopIteration, ProcessLookupError):
        return 0.0


class Gateway:
    """One `smallfleet serve` process with its own state directory, under an address-space cap."""

    def __init__(self, tmp: Path, cap_gb: float, src: Path | None = None) -> None:
        self.tmp, self.cap, self.src = tmp, int(cap_gb * (1 << 30)), src
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cfg = tmp / "smallfleet.toml"
        self.cfg.write_text(f'[ledger]\npath = "{tmp / "ledger.db"}"\n[memory]\npath = "{tmp / "memory.db"}"\n')
        self.proc: subprocess.Popen | None = None
        self.crashes = 0

    def start(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMALLFLEET_", "OPENAI_", "ANTHROPIC_"))}
        env.update(SMALLFLEET_CONFIG=str(self.cfg), SMALLFLEET_THREADS="2", XDG_DATA_HOME=str(self.tmp / "data"))
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        cap = self.cap

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        self.log = (self.tmp / "serve.log").open("a")
        self.proc = serve(self.port, env=env, log=self.log, cwd=self.src or ROOT, preexec_fn=limit)
        wait_ready(self.base + "/health", self.proc, 120, log=self.tmp / "serve.log")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure(self) -> None:
        if not self.alive():
            if self.proc is not None:
                self.crashes += 1
            self.start()

    def stop(self) -> None:
        stop(self.proc, 15)


class Watch:
    """Polls /health (latency, failures) and samples the gateway's RSS while a category runs."""

    def __init__(self, gw: Gateway) -> None:
        self.gw, self.stop_ev = gw, threading.Event()
        self.peak = 0.0
        self.health_max = 0.0
        self.health_fail = 0
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.stop_ev.is_set():
            pid = self.gw.proc.pid if self.gw.proc else 0
            self.peak = max(self.peak, rss_mb(pid))
            if n % 3 == 0:
                t0 = time.perf_counter()
                try:
                    httpx.get(self.gw.base + "/health", timeout=2).raise_for_status()
                    self.health_max = max(self.health_max, time.perf_counter() - t0)
                except httpx.HTTPError:
                    self.health_fail += 1
                    self.health_max = max(self.health_max, time.perf_counter() - t0)
            n += 1
            time.sleep(0.08)

    def __enter__(self) -> Watch:
        self.t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_ev.set()
        self.t.join()


# -- the categories: each returns a list of (method, path, body bytes | None, headers) --------------
Req = tuple[str, str, bytes | None, dict[str, str]]


def j(body: Any) -> bytes:
    return json.dumps(body).encode()


def yaml_bomb(levels: int) -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels + 1):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]")
    return "\n".join(lines)


def tool_turn(result: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "Read the config file and tell me the port."},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                 "function": {"name": "read_file", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": result}]


def cat_big_prompts() -> list[Req]:
    # first, so that nothing else has loaded the 1.5B yet: a prompt that cannot fit must not load it
    return [("POST", "/v1/chat/completions", j({"model": "auto", "messages": [{"role": "user", "content": "lorem ipsum " * n}]}), {})
            for n in (60_000, 300_000, 650_000)] + \
           [("POST", "/v1/chat/completions", j({"model": "auto", "messages": [{"role": "user", "content": "x" * (20 << 20)}]}), {})]


def cat_yaml_bomb() -> list[Req]:
    return [("POST", "/v1/chat/completions", j({"model": "auto", "max_tokens": 8, "messages": tool_turn(yaml_bomb(n))}), {})
            for n in (6, 7, 8, 9)]


def cat_schemas() -> list[Req]:
    bad = [{"type": "string", "minLength": 500, "maxLength": 200},
           {"type": "array", "items": {"type": "string", "maxLength": 100}, "minItems": 50, "maxItems": 10},
           {"type": "string", "minLength": 3000, "maxLength": 4000},
           {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}},
           {"enum": [f"v{i}" for i in range(5000)]},
           {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
           {"type": "string", "pattern": "a{100000}"},
           {"type": "integer", "minimum": 10, "maximum": 5}]
    out: list[Req] = []
    for s in bad:
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}
        out.append(("POST", "/v1/chat/completions", j({**OK, "response_format": fmt}), {}))
        out.append(("POST", "/v1/chat/completions", j({**OK, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"a": s}}}}], "tool_choice": "required"}), {}))
    for s in ({"type": "object", "properties": {"a": {"type": "string", "minLength": 300}}},
              {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10_000)}},
              {"type": "object", "properties": {"a": {"type": "string", "maxLength": "x"}}, "required": "a"}):
        out.append(("POST", "/v1/smallfleet/extract", j({"text": "Order 42 ships Monday.", "schema": s}), {}))
    return out


def cat_kb_paths(victim: Path) -> list[Req]:
    return [("POST", "/v1/chat/completions", j(OK), {"x-smallfleet-kb": p}) for p in (str(victim), "/etc/passwd", "/nope.db", "../../x")] + \
           [("POST", "/v1/chat/completions", j({**OK, "metadata": {"smallfleet_kb": str(victim)}}), {})]


def cat_host_origin(port: int) -> list[Req]:
    return [("POST", "/v1/chat/completions", j(OK), {"host": "evil.example"}),
            ("POST", "/v1/chat/completions", j(OK), {"host": f"attacker.test:{port}"}),
            ("POST", "/v1/chat/completions", b'{"model":"auto","messages":[{"role":"user","content":"x"}]}',
             {"origin": "http://evil.example", "content-type": "text/plain"}),
            ("POST", "/v1/chat/completions", j(OK), {"sec-fetch-site": "cross-site"}),
            ("GET", "/v1/smallfleet/report", None, {"host": "evil.example"}),
            ("GET", "/", None, {"host": "evil.example"})]


def cat_budget_values() -> list[Req]:
    return [("POST", "/v1/chat/completions", j(OK), {"x-smallfleet-run": f"b{i}", "x-smallfleet-budget": v})
            for i, v in enumerate(["nan", "inf", "-inf", "1e309", "-1", "NaN"])]


CLIENT_ERRORS: list[Any] = [
    {**OK, "stream_options": 5}, {**OK, "tool_choice": {"type": "function", "function": "f"},
                                  "tools": [{"type": "function", "function": {"name": "f"}}]},
    {**OK, "tool_choice": {"function": ["f"]}, "tools": [{"type": "function", "function": {"name": "f"}}]},
    {"messages": [{"role": ["user"], "content": "x"}]}, {"messages": [{"role": {"a": 1}, "content": "x"}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": 5}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": False}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"messages": [{"role": "user", "content": "x", "name": 7}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": 5, "function": {"name": "f", "arguments": "{}"}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{no"}}]}]},
    {"messages": [{"role": "user", "content": "x"}], "x": json.loads("[" * 300 + "]" * 300)},
    {**OK, "top_p": "high"}, {**OK, "seed": "x"}, {**OK, "logprobs": "yes"}, {**OK, "stop": 5},
    {**OK, "presence_penalty": "x"}, {**OK, "frequency_penalty": [1]}, {**OK, "cache_prompt": "no"},
    {**OK, "top_logprobs": 500}, {**OK, "seed": 2**80}, {**OK, "stop": ["a"] * 50},
]


def cat_client_errors() -> list[Req]:
    out: list[Req] = [("POST", "/v1/chat/completions", j(b), {}) for b in CLIENT_ERRORS]
    out += [("POST", "/v1/chat/completions", b"{not json", {}), ("POST", "/v1/chat/completions", b"\xff\xfe", {}),
            ("POST", "/v1/responsez", j(OK), {}), ("DELETE", "/v1/models", None, {}), ("PUT", "/health", None, {})]
    return out


def cat_fuzz(n: int, seed: int = 7) -> list[Req]:
    """Seeded random bodies: every known field with values of random type and shape."""
    rnd = random.Random(seed)
    fields = ["messages", "tools", "tool_choice", "response_format", "stream", "stream_options", "temperature", "top_p",
              "max_tokens", "stop", "seed", "logprobs", "top_logprobs", "presence_penalty", "metadata", "model", "n",
              "user", "cache_prompt"]

    def value(depth: int = 0) -> Any:
        kinds: list[Callable[[], Any]] = [
            lambda: None, lambda: True, lambda: rnd.randint(-2**40, 2**40), lambda: rnd.uniform(-1e6, 1e6),
            lambda: "".join(rnd.choice("ab\n\x00é{}") for _ in range(rnd.randrange(8))),
            lambda: rnd.choice(["auto", "none", "required", "text", "json_schema", "user", "tool"]),
            lambda: [value(depth + 1) for _ in range(rnd.randrange(4))],
            lambda: {rnd.choice(["type", "role", "content", "function", "name", "schema", "json_schema", "text", "x"]): value(depth + 1)
                     for _ in range(rnd.randrange(4))},
            lambda: [{"role": rnd.choice(["user", "tool", "assistant", 5]), "content": value(depth + 1)}]]
        return kinds[rnd.randrange(9 if depth < 4 else 6)]()

    out: list[Req] = []
    for _ in range(n):
        body = {f: value() for f in rnd.sample(fields, rnd.randrange(1, 6))}
        if rnd.random() < 0.5:
            body["messages"] = [{"role": "user", "content": "hi"}] + ([{"role": "user", "content": value()}] if rnd.random() < 0.5 else [])
        if "max_tokens" not in body:
            body["max_tokens"] = 2
        hdr = {rnd.choice(["x-smallfleet-run", "x-smallfleet-budget", "x-smallfleet-step-kind", "x-smallfleet-guard",
                           "x-smallfleet-stream", "x-smallfleet-kb-where", "x-smallfleet-datamark"]):
               rnd.choice(["nan", "1e999", "live", "on", "reasoning", "a=b", "x" * 600, "0", "block"]) for _ in range(rnd.randrange(3))}
        out.append(("POST", "/v1/chat/completions", j(body), hdr))
    return out


def cat_memory_growth() -> list[Req]:
    """Many distinct large structured tool results: the caches must not keep them all."""
    return [("POST", "/v1/chat/completions", j({"model": "auto", "max_tokens": 2, "messages": tool_turn(json.dumps(
        {"rows": [{"id": i * 1000 + k, "note": f"entry {k} of batch {i}"} for k in range(4000)]}))}), {})
        for i in range(150)]


# -- running -------------------------------------------------------------------------------------
def send(gw: Gateway, reqs: list[Req], conc: int = 4, timeout: float = 120) -> dict[str, int]:
    counts = {"tried": len(reqs), "2xx": 0, "4xx": 0, "5xx": 0, "hangs": 0, "refused": 0}
    lock = threading.Lock()

    def one(r: Req) -> None:
        method, path, body, hdrs = r
        try:
            with httpx.Client(base_url=gw.base, timeout=timeout) as c:
                resp = c.request(method, path, content=body,
                                 headers={"content-type": "application/json", **hdrs} if body is not None else hdrs)
            key = f"{resp.status_code // 100}xx"
        except httpx.TimeoutException:
            key = "hangs"
        except httpx.HTTPError:
            key = "refused"  # connection dropped or refused: the gateway died or closed it
        with lock:
            counts[key] = counts.get(key, 0) + 1

    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, reqs))
    return counts


def slow_clients(gw: Gateway, n: int = 60, wait: float = 35.0) -> dict[str, int]:
    """n connections that are idle, trickle headers, or trickle a body; how many are still open after ``wait``."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", gw.port))
        if i % 3 == 1:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        elif i % 3 == 2:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\n{")
        socks.append(s)
    t0 = time.time()
    open_ = list(socks)
    while time.time() - t0 < wait and open_:
        time.sleep(5)
        still = []
        for s in open_:
            try:
                if socks.index(s) % 3:
                    s.sendall(b"a")  # one more byte every 5 s (the idle third sends nothing)
                s.settimeout(0.01)
                if s.recv(1) == b"":
                    continue
                still.append(s)
            except TimeoutError:
                still.append(s)
            except OSError:
                continue
        open_ = still
    for s in socks:
        s.close()
    return {"tried": n, "still_open": len(open_)}


def disconnects(gw: Gateway, n: int = 6) -> dict[str, Any]:
    """Long generations whose clients hang up after 0.5 s: the next request must not wait for them."""
    body = j({"model": "qwen2.5-coder-0.5b", "max_tokens": 400,
              "messages": [{"role": "user", "content": "Write a very long essay on the history of Rome."}]})
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{gw.port}\r\ncontent-type: application/json\r\n"
                  f"content-length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)
        s.close()
    t0 = time.perf_counter()
    r = httpx.post(gw.base + "/v1/chat/completions", json={**OK, "model": "qwen2.5-coder-0.5b"}, timeout=300)
    return {"tried": n + 1, "next_request_s": round(time.perf_counter() - t0, 2), "next_status": r.status_code}


def concurrent_budget(gw: Gateway) -> dict[str, Any]:
    """8 simultaneous steps against a budget of 1.5 times one step's estimate (the small tier's price)."""
    from smallfleet.config import default_models
    from smallfleet.tokens import estimate_tokens

    body = {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello in five words."}]}
    small = next(m for m in default_models().values() if m.tier == "small")
    budget = 1.5 * small.cost(estimate_tokens(body), 64)
    run = f"onestep-{time.time_ns()}"
    h = {"x-smallfleet-run": run, "x-smallfleet-budget": repr(budget)}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.post(gw.base + "/v1/chat/completions", json=body, headers=h, timeout=300).status_code,
                              range(8)))
    import sqlite3

    row = sqlite3.connect(gw.tmp / "ledger.db").execute("SELECT spent_usd FROM runs WHERE run_id=?", (run,)).fetchone()
    return {"tried": 8, "passed": codes.count(200), "refused_429": codes.count(429), "budget_usd": budget,
            "spent_usd": row[0] if row else 0.0}


def keyed(gw: Gateway) -> dict[str, int]:
    """A key is made with the CLI while the gateway runs: keyless requests must be refused within seconds."""
    env = {**os.environ, "SMALLFLEET_CONFIG": str(gw.cfg)}
    if gw.src is not None:
        env["PYTHONPATH"] = str(gw.src)
    made = subprocess.run([sys.executable, "-m", "smallfleet.cli", "keys", "create", f"bench{time.time_ns()}"],
                          capture_output=True, text=True, env=env, cwd=str(gw.src or ROOT))
    if made.returncode != 0:
        return {"tried": 0, "unsupported": 1}
    key = made.stdout.strip().splitlines()[-1]
    time.sleep(2.5)
    out = {"tried": 4}
    out["no_key"] = httpx.post(gw.base + "/v1/chat/completions", json=OK, timeout=60).status_code
    out["with_key"] = httpx.post(gw.base + "/v1/chat/completions", json=OK, headers={"authorization": f"Bearer {key}"},
                                 timeout=120).status_code
    out["report_no_key"] = httpx.get(gw.base + "/v1/smallfleet/report", timeout=30).status_code
    out["dashboard_no_key"] = httpx.get(gw.base + "/", timeout=30).status_code
    (gw.tmp / "keys.db").unlink(missing_ok=True)  # back to keyless for the next categories
    for suffix in ("-wal", "-shm"):
        Path(str(gw.tmp / "keys.db") + suffix).unlink(missing_ok=True)
    time.sleep(1.5)
    return out


def run_all(gw: Gateway, only: set[str] | None, fuzz: int) -> list[dict[str, Any]]:
    victim = gw.tmp / "victim.db"
    import sqlite3

    sqlite3.connect(victim).execute("CREATE TABLE IF NOT EXISTS secrets (v)").connection.close()
    cats: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("big prompts (1-7 MB, 20 MB)", lambda: send(gw, cat_big_prompts(), conc=2)),
        ("YAML alias bombs (6-9 levels)", lambda: send(gw, cat_yaml_bomb(), conc=2)),
        ("impossible / huge schemas", lambda: send(gw, cat_schemas())),
        ("file paths as knowledge bases", lambda: send(gw, cat_kb_paths(victim))),
        ("Host / cross-site", lambda: send(gw, cat_host_origin(gw.port))),
        ("budget values (nan, inf, <0)", lambda: send(gw, cat_budget_values())),
        ("8 concurrent vs a one-step budget", lambda: concurrent_budget(gw)),
        ("client errors (the 127 5xx kinds)", lambda: send(gw, cat_client_errors())),
        (f"fuzz ({fuzz} random bodies)", lambda: send(gw, cat_fuzz(fuzz), conc=4)),
        ("150 distinct 200 kB tool results", lambda: send(gw, cat_memory_growth(), conc=2)),
        ("60 slow connections", lambda: slow_clients(gw)),
        ("clients that hang up", lambda: disconnects(gw)),
        ("API key made while running", lambda: keyed(gw)),
    ]
    rows = []
    gw.ensure()
    idle = rss_mb(gw.proc.pid)
    for name, fn in cats:
        if only and not any(o in name for o in only):
            continue
        gw.ensure()
        crashes0 = gw.crashes
        before = victim.read_bytes()
        t0 = time.perf_counter()
        with Watch(gw) as w:
            try:
                res = fn()
            except Exception as e:
                res = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        alive = gw.alive()
        try:
            t1 = time.perf_counter()
            ok = httpx.get(gw.base + "/health", timeout=5).status_code == 200
            health_after = round(time.perf_counter() - t1, 3)
        except httpx.HTTPError:
            ok, health_after = False, None
        health = {}
        try:
            health = httpx.get(gw.base + "/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            pass
        row = {"category": name, **res, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(w.peak),
               "idle_rss_mb": round(idle), "health_max_s": round(w.health_max, 3), "health_failures": w.health_fail,
               "alive_after": alive and ok, "health_after_s": health_after, "victim_file_changed": victim.read_bytes() != before,
               "models_loaded": health.get("models")}
        row["crashed"] = not alive or gw.crashes > crashes0
        rows.append(row)
        print(f"  {name}: {json.dumps({k: v for k, v in row.items() if k not in ('category',)})}", flush=True)
    return rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--cap-gb", type=float, default=10.0, help="address-space cap of the gateway process (RLIMIT_AS)")
    ap.add_argument("--ref", default=None, help="also run the gateway of this git ref (e.g. the commit before the hardening)")
    ap.add_argument("--only", default=None, help="comma-separated substrings of category names")
    ap.add_argument("--fuzz", type=int, default=600, help="seeded random requests of the fuzz category (default 600)")
    ap.add_argument("--out", default=str(RESULTS / "hostile.json"), help="default bench/results/hostile.json")
    ap.add_argument("--print", dest="print_only", action="store_true", help="only print the tables of --out")
    a = ap.parse_args()
    if a.print_only:
        print_tables(json.loads(Path(a.out).read_text()))
        return
    only = set(a.only.split(",")) if a.only else None
    results: dict[str, Any] = {"setup": {"cap_gb": a.cap_gb, "fuzz": a.fuzz, "cores": os.cpu_count(),
                                         "date": time.strftime("%Y-%m-%d %H:%M"), "fleet": "default (0.5B + 1.5B, lazy)"}}
    runs: list[tuple[str, Path | None]] = [("this tree", None)]
    wt = None
    if a.ref:
        wt = Path(tempfile.mkdtemp(prefix="sf-hostile-ref-"))
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), a.ref], check=True, capture_output=True)
        runs.append((f"ref {a.ref}", wt))
    try:
        for label, src in runs:
            print(f"\n== {label} ==", flush=True)
            gw = Gateway(Path(tempfile.mkdtemp(prefix="sf-hostile-")), a.cap_gb, src)
            try:
                gw.start()
                results[label] = run_all(gw, only, a.fuzz)
            finally:
                gw.stop()
    finally:
        if wt is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], capture_output=True)
    write_json(a.out, results, quiet=True)
    print_tables(results)
    print(f"wrote {a.out}")


def _note(r: dict[str, Any]) -> str:
    """What the category-specific measurement says, in a few words."""
    bits = []
    if "still_open" in r:
        bits.append(f"{r['still_open']}/{r['tried']} still open after 35 s")
    if "next_request_s" in r:
        bits.append(f"next request waited {r['next_request_s']} s")
    if "passed" in r:
        bits.append(f"{r['passed']}/8 passed, spent ${r['spent_usd']:.2e} of ${r['budget_usd']:.2e}")
    if "no_key" in r:
        bits.append(f"no key {r['no_key']}, key {r['with_key']}, report {r['report_no_key']}, dashboard {r['dashboard_no_key']}")
    if r.get("unsupported"):
        bits.append("no keys in this version")
    if r.get("2xx"):
        bits.append(f"{r['2xx']} answered 2xx")
    if r.get("refused"):
        bits.append(f"{r['refused']} connections dropped")
    if r.get("victim_file_changed"):
        bits.append("victim SQLite file modified")
    if r.get("crashed"):
        bits.append("GATEWAY DIED")
    if r.get("error"):
        bits.append(r["error"])
    return "; ".join(bits)


def print_tables(results: dict[str, Any]) -> None:
    for label, rows in results.items():
        if label == "setup":
            continue
        print(f"\n{label}\n{'category':<36}{'tried':>6}{'4xx':>5}{'5xx':>5}{'hangs':>6}{'peak MB':>9}{'idle MB':>8}"
              f"{'/health max s':>14}{'fails':>6}  notes")
        for r in rows:
            print(f"{r['category']:<36}{r.get('tried', 0):>6}{r.get('4xx', '-'):>5}{r.get('5xx', '-'):>5}"
                  f"{r.get('hangs', '-'):>6}{r['peak_rss_mb']:>9}{r['idle_rss_mb']:>8}{r['health_max_s']:>14}{r['health_failures']:>6}  {_note(r)}")


if __name__ == "__main__":
    main()
