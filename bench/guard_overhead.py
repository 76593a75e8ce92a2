"""CPU cost of one guard review (labels + detector + policy) on an agent conversation with tool output.

A conversation with three YAML tool results of 12 e-mails each (~15 kB); each timed review gets a new
last tool result (so its YAML parse and detector scans are paid), the earlier ones come from the caches.
The policy is the AgentDojo one (smallfleet/evals/agentdojo_tools.toml); the reviewed call is a send_email.

    python bench/guard_overhead.py [--reviews 50]     # prints ms of CPU per review

Prints the figure and writes bench/results/guard_overhead.json. (The README's 2.0-2.5 ms are two runs of
this script before it wrote a file.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import yaml
from _common import RESULTS, parser, write_json

from smallfleet.evals.agentdojo import POLICY_FILE
from smallfleet.guards import Guard, PolicyEngine

BODY = "Hi Emma, the meeting is moved to 3pm on Friday. Please bring the Q3 numbers and the slides. Thanks, John\n" * 3
EMAILS = [{"id_": str(i), "sender": f"p{i}@example.com", "subject": "Meeting notes", "body": BODY} for i in range(12)]
CALL = [{"id": "x", "type": "function", "function": {"name": "send_email", "arguments": json.dumps(
    {"recipients": ["p3@example.com"], "subject": "Re", "body": "Thanks, see you at 3pm"})}}]


def conversation() -> list[dict[str, Any]]:
    """System, user, and three get_unread_emails calls each answered with the 12 e-mails as YAML."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": "Summarise my unread emails and reply to John"}]
    for i in range(3):
        msgs.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "get_unread_emails", "arguments": "{}"}}]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": yaml.safe_dump(EMAILS)})
    return msgs


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--reviews", type=int, default=50, help="timed reviews, each with a new last tool result (default 50)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed reviews first (default 3)")
    ap.add_argument("--out", default=str(RESULTS / "guard_overhead.json"), help="default bench/results/guard_overhead.json")
    a = ap.parse_args()
    g = Guard(PolicyEngine.from_file(POLICY_FILE))
    msgs = conversation()
    chars = sum(len(m["content"]) for m in msgs if m["role"] == "tool")
    print("chars of tool output:", chars)
    for _ in range(a.warmup):
        g.review(msgs, CALL)
    base = yaml.safe_dump(EMAILS)
    contents = [base + f"\n# {i}" for i in range(a.reviews)]
    t = time.process_time()
    for i in range(a.reviews):
        msgs[-1]["content"] = contents[i]
        r = g.review(msgs, CALL)
    ms = round(1000 * (time.process_time() - t) / a.reviews, 2)
    print("ms CPU per review:", ms, r.decisions[0].action)
    write_json(a.out, {"ms_cpu_per_review": ms, "reviews": a.reviews, "tool_output_chars": chars, "decision": r.decisions[0].action.value,
                       "date": time.strftime("%Y-%m-%d %H:%M")})


if __name__ == "__main__":
    main()
