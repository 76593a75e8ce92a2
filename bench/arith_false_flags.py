"""How often the full arithmetic check calls a correct step miscalculated, and how often it flags the
labelled first-error step.

Correct steps: ProcessBench (GSM8K, MATH) steps before a trace's first error (all steps of traces
labelled -1), and every line of the GSM8K-train reference solutions. A flag = any ``equations(step)``
with ``ok is False``. Run it on two commits to compare versions of smallfleet/verify/arith.py.

    python bench/arith_false_flags.py [--out bench/results/arith_false_flags.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smallfleet.verify.arith import equations  # noqa: E402
from smallfleet.verify.process import default_data_dir  # noqa: E402


def flagged(step: str) -> bool:
    return any(e.ok is False for e in equations(step))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "arith_false_flags.json")
    args = ap.parse_args()
    res: dict[str, object] = {"date": time.strftime("%Y-%m-%d")}
    try:
        res["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
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
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
