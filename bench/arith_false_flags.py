"""How often the full arithmetic check calls a correct step miscalculated, and how often it flags the
labelled first-error step.

Correct steps: ProcessBench (GSM8K, MATH) steps before a trace's first error (all steps of traces
labelled -1), and every line of the GSM8K-train reference solutions. A flag = any ``equations(step)``
with ``ok is False``. Run it on two commits to compare versions of smallfleet/verify/arith.py.

    python bench/arith_false_flags.py [--out bench/results/arith_false_flags.json]

bench/results/arith_false_flags-e741e7e.json is the same script run on the commit before the change (e741e7e,
checked out elsewhere, with --out pointing here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _common import RESULTS, SHARED_DATA, git_describe, parser, write_json

from smallfleet.verify.arith import equations


def flagged(step: str) -> bool:
    return any(e.ok is False for e in equations(step))


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=SHARED_DATA, help="folder with processbench/ and gsm8k/ (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=RESULTS / "arith_false_flags.json", help="default bench/results/arith_false_flags.json")
    args = ap.parse_args()
    res: dict[str, object] = {"date": time.strftime("%Y-%m-%d")}
    res["git"] = git_describe()
    for name in ("gsm8k", "math"):
        data = json.loads((args.data / "processbench" / f"{name}.json").read_text())
        ok = [s for t in data for s in (t["steps"] if t["label"] == -1 else t["steps"][:t["label"]])]
        err = [t["steps"][t["label"]] for t in data if t["label"] != -1]
        res[f"processbench_{name}"] = {"correct_steps": len(ok), "false_flags": sum(map(flagged, ok)),
                                       "first_error_steps": len(err), "first_error_steps_flagged": sum(map(flagged, err))}
    lines = [st for line in (args.data / "gsm8k" / "train.jsonl").read_text().splitlines() if line.strip()
             for st in json.loads(line)["answer"].split("####")[0].split("\n") if st.strip()]
    res["gsm8k_train_reference_lines"] = {"lines": len(lines), "false_flags": sum(map(flagged, lines))}
    print(json.dumps(res, indent=1))
    write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
