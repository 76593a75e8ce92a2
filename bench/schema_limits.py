"""What a JSON schema costs llama.cpp, at the gateway's schema bounds and past them.

Each schema is sent straight to an embedded llama.cpp (the packaged 0.5B, 2 threads) in its own
process under an 8 GB address-space cap and a 120 s limit, as `response_format`: first with one
output token (grammar build), then with 30 (decoding under the grammar). Beside it, what
smallfleet's schema check (`smallfleet/schemas.py`) says of the same schema, so the bounds can be
read against what they prevent.

    python bench/schema_limits.py [--only SUBSTRING,...]     # prints a table, writes bench/results/schema_limits.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from _common import RESULTS, parser, write_json


def nested_arrays(depth: int) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "string", "maxLength": 50}
    for _ in range(depth - 1):
        s = {"type": "array", "items": s, "maxItems": 4}
    return s


def obj(n: int, required: bool = False) -> dict[str, Any]:
    props = {f"p{i}": {"type": "string", "maxLength": 20} for i in range(n)}
    return {"type": "object", "properties": props, **({"required": list(props)} if required else {})}


SCHEMAS: list[tuple[str, str, dict[str, Any]]] = [
    # (group, name, schema)
    ("at the bounds", "256 optional properties", obj(256)),
    ("at the bounds", "4 enums of 256 values", {"type": "object", "properties": {
        f"p{k}": {"enum": [f"value_{k}_{i}" for i in range(256)]} for k in range(4)}, "required": [f"p{k}" for k in range(4)]}),
    ("at the bounds", "anyOf 64 objects x 16 properties", {"anyOf": [
        {"type": "object", "properties": {f"b{b}_{i}": {"type": "integer"} for i in range(16)}} for b in range(64)]}),
    ("at the bounds", "minLength 2000", {"type": "string", "minLength": 2000}),
    ("at the bounds", "maxLength 65536", {"type": "string", "maxLength": 65536}),
    ("at the bounds", "minItems 2000 of integers", {"type": "array", "items": {"type": "integer"}, "minItems": 2000}),
    ("at the bounds", "pattern ((a{10}){1000}){1000}", {"type": "string", "pattern": "^((a{10}){1000}){1000}$"}),
    ("at the bounds", "16 nested arrays", nested_arrays(16)),
    ("past the bounds", "minLength 500 > maxLength 200", {"type": "string", "minLength": 500, "maxLength": 200}),
    ("past the bounds", "minItems 50 > maxItems 10", {"type": "array", "items": {"type": "string", "maxLength": 100},
                                                      "minItems": 50, "maxItems": 10}),
    ("past the bounds", "minLength 2001", {"type": "string", "minLength": 2001}),
    ("past the bounds", "2000 optional properties", obj(2000)),
    ("past the bounds", "enum of 5000 values", {"enum": [f"v{i}" for i in range(5000)]}),
    ("past the bounds", "alias cycle a -> b -> a", {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
]

WORKER = r'''
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (CAP_GB << 30, CAP_GB << 30))
import xllamacpp
from smallfleet.assets import ensure_packaged
schema = json.loads(sys.stdin.read())
p = xllamacpp.CommonParams(); p.model.path = str(ensure_packaged("qwen2.5-coder-0.5b")); p.n_ctx = 4096
p.cpuparams.n_threads = THREADS; p.cpuparams_batch.n_threads = THREADS; p.verbosity = -1
srv = xllamacpp.Server(p)
out = {}
for key, n in (("build_s", 1), ("decode30_s", 30)):
    t = time.time()
    try:
        r = srv.handle_chat_completions({"messages": [{"role": "user", "content": "Answer in JSON."}], "max_tokens": n,
                                         "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
        err = (r.get("error") or {}).get("message", "") if isinstance(r, dict) else ""
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
    out[key] = round(time.time() - t, 2)
    if err:
        out["llama_error"] = err[:100]
        break
out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps(out))
'''


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--cap-gb", type=int, default=8, help="address-space cap of each llama.cpp process, GB (default 8)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds before a schema's process is killed (default 120)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    ap.add_argument("--only", default=None, help="comma-separated substrings of schema names (default: all 14)")
    ap.add_argument("--out", default=str(RESULTS / "schema_limits.json"), help="default bench/results/schema_limits.json")
    a = ap.parse_args()
    from smallfleet.errors import InvalidRequestError
    from smallfleet.schemas import check_schema

    worker = WORKER.replace("CAP_GB", str(a.cap_gb)).replace("THREADS", str(a.threads))
    only = [o for o in (a.only or "").split(",") if o]
    rows = []
    for group, name, schema in SCHEMAS:
        if only and not any(o in name for o in only):
            continue
        try:
            check_schema(schema, "schema")
            verdict = "accepted"
        except InvalidRequestError as e:
            verdict = "400: " + e.message.removeprefix("schema").lstrip(": ")[:70]
        t0 = time.time()
        try:
            p = subprocess.run([sys.executable, "-c", worker], input=json.dumps(schema), capture_output=True, text=True, timeout=a.timeout)
            line = [x for x in p.stdout.splitlines() if x.startswith("{")]
            res = json.loads(line[-1]) if line else {"llama_error": f"process died (exit {p.returncode})"}
        except subprocess.TimeoutExpired:
            res = {"llama_error": f"over {a.timeout} s (killed)"}
        res["wall_s"] = round(time.time() - t0, 1)
        rows.append({"group": group, "schema": name, "smallfleet": verdict, **res})
        print(f"{group:<16}{name:<36}{verdict[:40]:<42}{res.get('build_s', '-')!s:>8}{res.get('decode30_s', '-')!s:>9}"
              f"{res.get('maxrss_mb', '-')!s:>8}  {res.get('llama_error', '')}", flush=True)
    print("(columns: group, schema, smallfleet's check, grammar build s (1 token), 30 tokens s, max RSS MB, llama.cpp error)")
    write_json(a.out, {"rows": rows, "setup": {"model": "qwen2.5-coder-0.5b", "threads": a.threads, "cap_gb": a.cap_gb,
                                               "date": time.strftime("%Y-%m-%d %H:%M")}})


if __name__ == "__main__":
    main()
