"""Gateway overhead: CPU time the gateway process spends per request, with the model taken out.

Both gateways forward to the same *stand-in upstream* (bench/tools/standin_upstream.py, an instant canned
answer), so what is measured is the gateway's own work: parse, validate, classify, route, check,
ledger write, serialise. CPU is read from /proc/PID/stat of the gateway process (all its threads).

    python bench/gateway_overhead.py [--requests 2000] [--concurrency 8] [--litellm PATH/TO/litellm]

With --litellm (the `litellm` executable of a separate venv with `litellm[proxy]` installed), the
LiteLLM proxy is measured in the same run against the same stand-in. Prints a table and writes
bench/results/gateway_overhead.json. The published file has all three rows:

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

import httpx
from _common import BENCH, RESULTS, free_port, parser, serve, stop, wait_ready, write_json

TICK = os.sysconf("SC_CLK_TCK")
STANDIN = BENCH / "tools" / "standin_upstream.py"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children threads (not child processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


REQUEST = {"model": "auto", "max_tokens": 32, "messages": [
    {"role": "system", "content": "You are the support agent of a lamp shop."},
    {"role": "user", "content": "Where is my parcel? Order ORD-10422."}]}


def request_body(i: int, model: str) -> dict:
    """The system prompt repeats (as in real agent traffic); the user turn differs on every request."""
    msgs = [REQUEST["messages"][0], {"role": "user", "content": f"Where is my parcel? Order ORD-{10000 + i}, placed {i % 28 + 1} days ago."}]
    return dict(REQUEST, model=model, messages=msgs)


async def load(url: str, n: int, conc: int, model: str, headers: dict[str, str]) -> float:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=conc)) as c:
        sem = asyncio.Semaphore(conc)
        errors = 0

        async def one(i: int) -> None:
            nonlocal errors
            async with sem:
                r = await c.post(url, json=request_body(i, model), headers=headers)
                if r.status_code != 200:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(n)])
        wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{errors} of {n} requests failed at {url}")
    return wall


def measure(name: str, url: str, pid: int, n: int, conc: int, model: str, headers: dict[str, str]) -> dict:
    asyncio.run(load(url, 50, conc, model, headers))  # warm-up: connections, caches, lazy imports
    c0 = cpu_seconds(pid)
    wall = asyncio.run(load(url, n, conc, model, headers))
    cpu = cpu_seconds(pid) - c0
    return {"gateway": name, "requests": n, "concurrency": conc, "cpu_ms_per_request": round(1000 * cpu / n, 3),
            "requests_per_s": round(n / wall, 1), "requests_per_cpu_s": round(n / cpu, 1) if cpu else None}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--requests", type=int, default=2000, help="timed requests per gateway (default 2000, after 50 to warm up)")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    ap.add_argument("--litellm", default=None, help="path of a `litellm` executable (separate venv) to compare")
    ap.add_argument("--out", default=str(RESULTS / "gateway_overhead.json"), help="default bench/results/gateway_overhead.json")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sf-overhead-"))
    up_port = free_port()
    procs: list[subprocess.Popen] = []
    results = []
    try:
        up = subprocess.Popen([sys.executable, str(STANDIN), str(up_port)])
        procs.append(up)
        up_url = f"http://127.0.0.1:{up_port}/v1"
        time.sleep(0.5)
        cfg = tmp / "smallfleet.toml"
        cfg.write_text("\n".join(
            f'[models.standin-{t}]\nbackend = "openai"\nurl = "{up_url}"\nmodel = "standin"\ntier = "{t}"\n'
            f"price_in = {p}\nprice_out = {p * 2}\nretries = 0\n" for t, p in (("small", 0.02), ("large", 0.06), ("frontier", 2.5))))
        # The stand-in counts as a remote model, so with privacy on every request is scanned for personal
        # data (patterns + spaCy NER) and pseudonymised: measured apart from the gateway core.
        for privacy in ("off", "on"):
            port = free_port()
            env = {**os.environ, "SMALLFLEET_CONFIG": str(cfg), "SMALLFLEET_LEDGER": str(tmp / f"ledger-{privacy}.db"),
                   "SMALLFLEET_PRIVACY": privacy}
            sf = serve(port, env=env)
            procs.append(sf)
            wait_ready(f"http://127.0.0.1:{port}/health", sf)
            results.append(measure(f"smallfleet, privacy {privacy}", f"http://127.0.0.1:{port}/v1/chat/completions",
                                   sf.pid, a.requests, a.concurrency, "auto", {"x-smallfleet-run": "overhead"}))
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
            results.append(measure("litellm proxy", f"http://127.0.0.1:{ll_port}/v1/chat/completions", ll.pid,
                                   a.requests, a.concurrency, "standin", {"authorization": "Bearer sk-bench-local-only"}))
    finally:
        for p in procs:
            stop(p)
    print(f"\n{'gateway':<26}{'CPU ms/request':>16}{'req/s':>10}{'req per CPU-s':>16}")
    for r in results:
        print(f"{r['gateway']:<26}{r['cpu_ms_per_request']:>16.3f}{r['requests_per_s']:>10.1f}{r['requests_per_cpu_s']:>16.1f}")
    print("(upstream: stand-in with an instant canned answer; measures gateway overhead only)")
    out = {"results": results, "setup": {"requests": a.requests, "concurrency": a.concurrency, "cores": os.cpu_count(),
                                         "date": time.strftime("%Y-%m-%d %H:%M")}}
    write_json(a.out, out)


if __name__ == "__main__":
    main()
