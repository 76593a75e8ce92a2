"""AgentDojo benchmark: `smallfleet bench agentdojo` as a script (same options, same JSON).

    python bench/agentdojo.py                         # compromised agent, all four suites, policy off vs on
    python bench/agentdojo.py --no-detector --json bench/results/agentdojo_policy_only.json
    python bench/agentdojo.py --agent model --suites workspace --user-tasks 0,3,14 --injection-tasks 0,3 \
        --json bench/results/agentdojo_model.json      # the local 1.5B through the gateway, guard off vs on

Results used in the README: bench/results/agentdojo.json (with the detector), agentdojo_policy_only.json
(detector off), agentdojo_model.json (real model). Needs `pip install 'smallfleet[agentdojo]'`.
"""

import sys
from pathlib import Path

# this file is named like the package it drives: keep bench/ off the import path so `import agentdojo` finds the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from smallfleet.cli import cli  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        name = "agentdojo_model.json" if "model" in args else ("agentdojo_policy_only.json" if "--no-detector" in args else "agentdojo.json")
        args += ["--json", str(Path(__file__).parent / "results" / name)]
    pre = ["--config", str(Path(__file__).parent / "agentdojo_fleet.toml")] if "model" in args else []
    cli.main(args=[*pre, "bench", "agentdojo", *args], prog_name="bench/agentdojo.py")
