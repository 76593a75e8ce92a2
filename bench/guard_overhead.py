"""CPU cost of one guard review (labels + detector + policy) on an agent conversation with tool output.

A conversation with three YAML tool results of 12 e-mails each (~15 kB); each timed review gets a new
last tool result (so its YAML parse and detector scans are paid), the earlier ones come from the caches.

    python bench/guard_overhead.py     # prints ms of CPU per review
"""
import json
import time

from smallfleet.evals.agentdojo import POLICY_FILE
from smallfleet.guards import Guard, PolicyEngine

g = Guard(PolicyEngine.from_file(POLICY_FILE))
# a realistic conversation: 3 YAML tool results of calendar/email data
import yaml

emails = [{"id_": str(i), "sender": f"p{i}@example.com", "subject": "Meeting notes", "body": "Hi Emma, the meeting is moved to 3pm on Friday. Please bring the Q3 numbers and the slides. Thanks, John\n" * 3} for i in range(12)]
msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Summarise my unread emails and reply to John"}]
for i in range(3):
    msgs.append({"role": "assistant", "content": "", "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": "get_unread_emails", "arguments": "{}"}}]})
    msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": yaml.safe_dump(emails)})
call = [{"id": "x", "type": "function", "function": {"name": "send_email", "arguments": json.dumps({"recipients": ["p3@example.com"], "subject": "Re", "body": "Thanks, see you at 3pm"})}}]
print("chars of tool output:", sum(len(m["content"]) for m in msgs if m["role"] == "tool"))
for _ in range(3): g.review(msgs, call)
t = time.process_time(); n = 50
base = yaml.safe_dump(emails)
contents = [base + f"\n# {i}" for i in range(n)]
t = time.process_time()
for i in range(n):
    msgs[-1]["content"] = contents[i]
    r = g.review(msgs, call)
print("ms CPU per review:", round(1000 * (time.process_time() - t) / n, 2), r.decisions[0].action)
