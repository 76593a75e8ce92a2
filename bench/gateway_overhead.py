"""Gateway overhead: CPU time the gateway process spends per request, with the model taken out, at several
concurrency levels; then the same gateway as 1, 2 and 4 replicas on one PostgreSQL (throughput, and how
exactly a run's budget holds under a concurrent burst spread over them).

Every gateway forwards to the same *stand-in upstream* (bench/tools/standin_upstream.py, an instant canned
answer), so what is measured is the gateway's own work: parse, validate, classify, route, check, ledger
write, serialise. CPU is read from /proc of the gateway processes (all their threads) and, for the
replicas, of the PostgreSQL server's processes too.

    python bench/gateway_overhead.py [--requests 2000] [--concurrency 1,8,64] [--litellm PATH/TO/litellm]
                                     [--replicas 1,2,4] [--burst 64]

With --litellm (the `litellm` executable of a separate venv with `litellm[proxy]` installed), the
LiteLLM proxy is measured in the same run against the same stand-in. --replicas needs PostgreSQL's
server (Debian's `postgresql` package; started in a temporary folder, as the tests do). Prints tables
and writes bench/results/gateway_overhead.json. The published file was made with:

    python -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install 'litellm[proxy]'
    python bench/gateway_overhead.py --litellm bench/.venv-litellm/bin/litellm
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from _common import BENCH, RESULTS, free_port, parser, serve, stop, wait_ready, write_json

TICK = os.sysconf("SC_CLK_TCK")
STANDIN = BENCH / "tools" / "standin_upstream.py"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children threads (not child processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every live descendant (PostgreSQL's backends are children)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


REQUEST = {"model": "auto", "max_tokens": 32, "messages": [
    {"role": "system", "content": "You are the support agent of a lamp shop."},
    {"role": "user", "content": "Where is my parcel? Order ORD-10422."}]}


def request_body(i: int, model: str) -> dict:
    """The system prompt repeats (as in real agent traffic); the user turn differs on every request."""
    msgs = [REQUEST["messages"][0], {"role": "user", "content": f"Where is my parcel? Order ORD-{10000 + i}, placed {i % 28 + 1} days ago."}]
    return dict(REQUEST, model=model, messages=msgs)


_SENT = 0


async def load(urls: list[str], n: int, conc: int, model: str, headers: dict[str, str], *, run: str | None = None,
               ok: tuple[int, ...] = (200,)) -> tuple[float, list[int]]:
    """``n`` requests, ``conc`` at a time, spread round-robin over ``urls``: (wall seconds, status codes).
    Sent by a lean client (bench/tools/rawload.py): it shares the cores with the gateways measured."""
    from bench.tools.rawload import run as send

    global _SENT
    # every request text new across the whole run: the privacy scan caches results per text, so a level
    # that repeated the previous level's texts would measure the cache, not the scan
    bodies = [orjson.dumps(request_body(_SENT + i, model)) for i in range(n)]
    _SENT += n
    wall, codes = await send(urls, bodies, conc, {**headers, "x-smallfleet-run": run} if run else headers)
    bad = [x for x in codes if x not in ok]
    if bad or len(codes) != n:
        raise RuntimeError(f"{len(bad)} of {n} requests failed ({sorted(set(bad))}) at {urls[0]}")
    return wall, codes


def measure(name: str, urls: list[str], pids: list[int], n: int, conc: int, model: str, headers: dict[str, str]) -> dict:
    asyncio.run(load(urls, 50, conc, model, headers))  # warm-up: connections, caches, lazy imports
    c0 = sum(tree_cpu(p) for p in pids)
    wall, _ = asyncio.run(load(urls, n, conc, model, headers))
    cpu = sum(tree_cpu(p) for p in pids) - c0
    return {"gateway": name, "requests": n, "concurrency": conc, "cpu_ms_per_request": round(1000 * cpu / n, 3),
            "requests_per_s": round(n / wall, 1), "requests_per_cpu_s": round(n / cpu, 1) if cpu else None}


def standin_config(tmp: Path, up_url: str) -> Path:
    cfg = tmp / "smallfleet.toml"
    cfg.write_text("\n".join(
        f'[models.standin-{t}]\nbackend = "openai"\nurl = "{up_url}"\nmodel = "standin"\ntier = "{t}"\n'
        f"price_in = {p}\nprice_out = {p * 2}\nretries = 0\n" for t, p in (("small", 0.02), ("large", 0.06), ("frontier", 2.5))))
    return cfg


def replicas(cfg: Path, tmp: Path, counts: list[int], n: int, conc: int, burst: int, procs: list) -> tuple[list[dict], list[dict]]:
    """1, 2, 4 gateways on one PostgreSQL: throughput at ``conc``, then a burst of ``burst`` budgeted steps."""
    from smallfleet.ledger import Ledger
    from smallfleet.privacy import new_key
    from tests.pg import PgServer

    pg = PgServer()
    rows, bursts = [], []
    try:
        for k in counts:
            url = pg.database(f"bench_replicas_{k}")
            key = new_key()
            env = {**os.environ, "SMALLFLEET_CONFIG": str(cfg), "SMALLFLEET_DATABASE_URL": url, "SMALLFLEET_PRIVACY": "off",
                   "SMALLFLEET_SESSION_KEY": key, "SMALLFLEET_MEMORY_KEY": key, "SMALLFLEET_ACCESS_LOG": "off"}
            ports = [free_port() for _ in range(k)]
            mine = [serve(p, env=env) for p in ports]
            procs.extend(mine)
            for p, proc in zip(ports, mine):
                wait_ready(f"http://127.0.0.1:{p}/health", proc)
            urls = [f"http://127.0.0.1:{p}/v1/chat/completions" for p in ports]
            row = measure(f"{k} replica(s) on PostgreSQL", urls, [x.pid for x in mine] + [pg.pid], n, conc, "auto",
                          {"x-smallfleet-run": "overhead"})
            row["replicas"] = k
            rows.append(row)
            # the burst: a run whose budget covers 10 steps, ``burst`` steps at once over every replica
            led = Ledger(url)
            probe = led.attempts(run_id="overhead")[-1]["cost_usd"]  # one step's real cost
            budget = 10 * probe
            led.set_budget("burst", budget)
            _, codes = asyncio.run(load(urls, burst, burst, "auto", {}, run="burst", ok=(200, 429)))
            got = led.run("burst")
            spent = got["spent_usd"] if got else 0.0
            held = led.query("SELECT COUNT(*) FROM reservations")[0][0]
            bursts.append({"replicas": k, "requests": burst, "passed": codes.count(200), "refused": codes.count(429),
                           "budget_usd": budget, "spent_usd": spent, "step_cost_usd": probe,
                           "overshoot_steps": round(max(0.0, spent - budget) / probe, 3), "reservations_left": held})
            led.close()
            for proc in mine:
                stop(proc)
    finally:
        pg.close()
    return rows, bursts


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--requests", type=int, default=2000, help="timed requests per row (default 2000, after 50 to warm up)")
    ap.add_argument("--concurrency", default="1,8,64", help="requests in flight, comma-separated levels (default 1,8,64)")
    ap.add_argument("--litellm", default=None, help="path of a `litellm` executable (separate venv) to compare")
    ap.add_argument("--replicas", default="1,2,4", help="replica counts on PostgreSQL (default 1,2,4; '' to skip)")
    ap.add_argument("--replica-concurrency", type=int, default=64, help="requests in flight against the replicas (default 64)")
    ap.add_argument("--burst", type=int, default=64, help="budgeted requests sent at once over the replicas (default 64)")
    ap.add_argument("--out", default=str(RESULTS / "gateway_overhead.json"), help="default bench/results/gateway_overhead.json")
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",") if x.strip()]
    counts = [int(x) for x in a.replicas.split(",") if x.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="sf-overhead-"))
    up_port = free_port()
    procs: list[subprocess.Popen] = []
    results: list[dict] = []
    scaling: list[dict] = []
    bursts: list[dict] = []
    try:
        up = subprocess.Popen([sys.executable, str(STANDIN), str(up_port)])
        procs.append(up)
        up_url = f"http://127.0.0.1:{up_port}/v1"
        time.sleep(0.5)
        cfg = standin_config(tmp, up_url)
        # The stand-in counts as a remote model, so with privacy on every request is scanned for personal
        # data (patterns + spaCy NER) and pseudonymised: measured apart from the gateway core.
        for privacy in ("off", "on"):
            port = free_port()
            env = {**os.environ, "SMALLFLEET_CONFIG": str(cfg), "SMALLFLEET_LEDGER": str(tmp / f"ledger-{privacy}.db"),
                   "SMALLFLEET_PRIVACY": privacy, "SMALLFLEET_ACCESS_LOG": "off"}
            sf = serve(port, env=env)
            procs.append(sf)
            wait_ready(f"http://127.0.0.1:{port}/health", sf)
            for conc in levels:
                results.append(measure(f"smallfleet, privacy {privacy}", [f"http://127.0.0.1:{port}/v1/chat/completions"],
                                       [sf.pid], a.requests, conc, "auto", {"x-smallfleet-run": "overhead"}))
                print(results[-1], flush=True)
            stop(sf)
        if a.litellm:
            ll_port = free_port()
            ll_cfg = tmp / "litellm.yaml"
            ll_cfg.write_text(f"model_list:\n  - model_name: standin\n    litellm_params:\n      model: openai/standin\n"
                              f"      api_base: {up_url}\n      api_key: unused\n")
            ll_env = {**os.environ, "LITELLM_MASTER_KEY": "sk-bench-local-only"}
            ll = subprocess.Popen([a.litellm, "--config", str(ll_cfg), "--port", str(ll_port), "--num_workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ll_env)
            procs.append(ll)
            wait_ready(f"http://127.0.0.1:{ll_port}/health/liveliness", ll, 180)
            for conc in levels:
                results.append(measure("litellm proxy", [f"http://127.0.0.1:{ll_port}/v1/chat/completions"], [ll.pid],
                                       a.requests, conc, "standin", {"authorization": "Bearer sk-bench-local-only"}))
                print(results[-1], flush=True)
            stop(ll)
        if counts:
            scaling, bursts = replicas(cfg, tmp, counts, a.requests, a.replica_concurrency, a.burst, procs)
    finally:
        for p in procs:
            stop(p)
    print(f"\n{'gateway':<34}{'conc':>6}{'CPU ms/request':>16}{'req/s':>10}{'req per CPU-s':>16}")
    for r in results + scaling:
        print(f"{r['gateway']:<34}{r['concurrency']:>6}{r['cpu_ms_per_request']:>16.3f}{r['requests_per_s']:>10.1f}"
              f"{r['requests_per_cpu_s'] or 0:>16.1f}")
    print("(upstream: stand-in with an instant canned answer; measures gateway overhead only; replica rows count the")
    print(" replicas' and PostgreSQL's CPU together)")
    if bursts:
        print(f"\n{'replicas':>8}{'sent':>6}{'passed':>8}{'refused':>9}{'budget steps':>14}{'overshoot steps':>17}{'holds left':>12}")
        for b in bursts:
            print(f"{b['replicas']:>8}{b['requests']:>6}{b['passed']:>8}{b['refused']:>9}{b['budget_usd'] / b['step_cost_usd']:>14.1f}"
                  f"{b['overshoot_steps']:>17}{b['reservations_left']:>12}")
    out = {"results": results, "replicas": scaling, "budget_burst": bursts,
           "setup": {"requests": a.requests, "concurrency": levels, "replica_concurrency": a.replica_concurrency,
                     "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}}
    write_json(a.out, out)


if __name__ == "__main__":
    main()
