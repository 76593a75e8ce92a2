"""Injection detector on AgentDojo text it never trained on: heuristics vs the trained classifier vs both.

Positives: the injected strings of five AgentDojo attacks (important_instructions, ignore_previous,
system_message, injecagent, direct) for every injection task of the four suites, as placed by the
package for the first --user-tasks (5) user tasks of each suite (deduplicated). Negatives: every string of ≥ 5 words in the four suites'
default environments (mails, files, messages, reviews, web pages) — with the injection slots at their
benign defaults. Note: the heuristic rules were written after reading the important_instructions
template, so only the other four attacks are unseen by them; the classifier saw no AgentDojo text.

    python bench/injection_detector.py [--user-tasks 5]     # prints a table, writes bench/results/injection_detector.json

Needs `pip install 'smallfleet[agentdojo]'` (agentdojo 0.1.35, benchmark v1.2.2).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from _common import RESULTS, parser, write_json
from rich.console import Console
from rich.table import Table

from smallfleet.guards.classifier import InjectionClassifier
from smallfleet.guards.injection import InjectionDetector

ATTACKS = ["important_instructions", "ignore_previous", "system_message", "injecagent", "direct"]


def strings(obj: Any, out: set[str]) -> None:
    """Every string of at least 5 words inside ``obj`` (dicts, lists, pydantic models)."""
    if isinstance(obj, dict):
        for v in obj.values():
            strings(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            strings(v, out)
    elif isinstance(obj, str) and len(obj.split()) >= 5:
        out.add(obj)
    elif hasattr(obj, "model_dump"):
        strings(obj.model_dump(), out)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--user-tasks", type=int, default=5,
                    help="the first N user tasks of each suite the attacks are placed for (default 5)")
    ap.add_argument("--out", default=str(RESULTS / "injection_detector.json"), help="default bench/results/injection_detector.json")
    args = ap.parse_args()
    from agentdojo.attacks.attack_registry import load_attack
    from agentdojo.task_suite.load_suites import get_suites

    from smallfleet.evals.agentdojo import PIPELINE_NAME

    class _P:  # the attacks only read the pipeline's name
        name = PIPELINE_NAME

    warnings.simplefilter("ignore")
    suites = get_suites("v1.2.2")
    pos: dict[str, set[str]] = {a: set() for a in ATTACKS}
    neg: set[str] = set()
    for s in suites.values():
        strings(s.load_and_inject_default_environment({}), neg)
        for a in ATTACKS:
            atk = load_attack(a, s, _P())
            for ut in list(s.user_tasks.values())[:args.user_tasks]:
                for it in s.injection_tasks.values():
                    pos[a].update(v for v in atk.attack(ut, it).values())
    heur, clf, both = InjectionDetector(classifier=False), InjectionClassifier.load(), InjectionDetector()
    rows = []
    t0 = time.perf_counter()
    hn = [heur(t) for t in neg]
    th = time.perf_counter() - t0
    t0 = time.perf_counter()
    cn = [clf.prob(t) >= 0.5 for t in neg]
    tc = time.perf_counter() - t0
    t0 = time.perf_counter()
    bn = [both(t) for t in neg]
    tb = time.perf_counter() - t0
    for name, flag in (("heuristics", lambda t: heur(t)), ("classifier", lambda t: clf.prob(t) >= 0.5),
                       ("shipped (both)", lambda t: both(t))):
        fp = sum({"heuristics": hn, "classifier": cn}.get(name, bn))
        row = {"detector": name, "false_positive_rate": round(fp / len(neg), 4), "negatives": len(neg)}
        for a in ATTACKS:
            row[a] = round(sum(flag(t) for t in pos[a]) / len(pos[a]), 4)
        rows.append(row)
    res = {"positives": {a: len(v) for a, v in pos.items()}, "negatives": len(neg), "rows": rows,
           "ms_per_text": {"heuristics": round(1000 * th / len(neg), 3), "classifier": round(1000 * tc / len(neg), 3),
                           "shipped": round(1000 * tb / len(neg), 3)},
           "classifier_meta": clf.meta}
    t = Table(title="injection detector on AgentDojo v1.2.2 text (recall per attack, false positives on environment text)")
    for c in ["detector", *ATTACKS, "false positives"]:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["detector"], *[f"{100 * r[a]:.1f} %" for a in ATTACKS], f"{100 * r['false_positive_rate']:.2f} % of {len(neg)}")
    Console().print(t)
    Console().print(f"positives per attack: {res['positives']}; ms per text: {res['ms_per_text']}")
    write_json(args.out, res, indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()
