"""AgentDojo benchmark: `smallfleet bench agentdojo` as a script (same options, same JSON; --help lists them).

    python bench/agentdojo.py                         # compromised agent, all four suites, policy off vs on
    python bench/agentdojo.py --no-detector           # the same with the injection detector off
    python bench/agentdojo.py --agent model --suites workspace --user-tasks 0,3 --injection-tasks 0
                                                      # the local 1.5B through the gateway, guard off vs on

Without --json the results go to bench/results/: agentdojo.json (the default run, with the detector),
agentdojo_policy_only.json (--no-detector), agentdojo_model.json (--agent model, with the fleet of
bench/agentdojo_fleet.toml); those three are the files the README reports. Needs `pip install 'smallfleet[agentdojo]'`.
"""

import sys

from _common import BENCH, RESULTS

from smallfleet.cli import cli

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        name = "agentdojo_model.json" if "model" in args else ("agentdojo_policy_only.json" if "--no-detector" in args else "agentdojo.json")
        args += ["--json", str(RESULTS / name)]
    pre = ["--config", str(BENCH / "agentdojo_fleet.toml")] if "model" in args else []
    cli.main(args=[*pre, "bench", "agentdojo", *args], prog_name="bench/agentdojo.py")
