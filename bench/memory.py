"""Session memory benchmark: does a planted fact survive N unrelated turns, with and without memory?

Retention probe. Turn 1: the user states four facts (name, order id, contact channel, city; several
phrasings, values drawn per fact set from a fixed seed). Then N unrelated user/assistant turns
(N = 2, 5, 10, 20), then a question about one planted fact. The unrelated turns are FIXED pre-written
question/answer pairs (FILLER below), so only the final answer is generated. Each question is asked
on two histories, each without and with memory:

- full: the whole conversation, as a client that replays everything sends it;
- window: system prompt + the last 6 messages + the question, as a client that truncates sends it
  (the planted turn is out of it from N = 3 on; measured at N = 20 only);
- with memory: the same messages after ``SessionMemory.prepare`` (the pinned facts block). The facts
  are extracted live by the 0.5B model from the conversation the gateway saw, so extraction errors
  count against "with memory". Both local models answer.

Scores: recall = the answer contains the planted value (case-insensitive; the whole name, the exact
id, the city; for the channel, the planted channel and no other); confident denial = the answer lacks
the value and claims not to know / not to have been told / has no access.

Also an extraction table: precision/recall of the extractor on a small labelled set of messages
(EXTRACTION_CASES) and how many of the conversation's user turns the pre-filter skipped.

    python bench/memory.py [--sets 16] [--quick]

Prints tables and writes bench/results/memory.json. Temperature 0, 2 threads.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS, parser, wilson, write_json

from bench._facts import ACK, NAMES, SYSTEM, fact_sets, recalled
from smallfleet.config import load_config
from smallfleet.fleet import Fleet
from smallfleet.memory import Extractor, FactStore, SessionMemory, normalize_key

MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
EXTRACTOR = "qwen2.5-coder-0.5b"
NS = (2, 5, 10, 20)

FILLER: list[tuple[str, str]] = [
    ("How do I reverse a list in Python?", "Use slicing, items[::-1], for a reversed copy, or items.reverse() to reverse it in place."),
    ("What's the difference between a tuple and a list?",
     "A list is mutable and a tuple is not; tuples can be dictionary keys and are slightly lighter."),
    ("Can you suggest a quick vegetarian dinner?",
     "A chickpea curry: fry onion, garlic and curry paste, add chickpeas and coconut milk, simmer ten minutes, serve with rice."),
    ("Why is the sky blue?",
     "Air molecules scatter short blue wavelengths of sunlight much more than red ones, so blue light reaches us from every direction."),
    ("How do I undo the last git commit but keep the changes?", "Run git reset --soft HEAD~1; the commit is removed and its changes stay staged."),
    ("What is a good way to learn touch typing?",
     "Practise 15 minutes a day with a typing tutor, keep your eyes off the keyboard and favour accuracy over speed."),
    ("Explain what an HTTP 404 means.", "The server was reached but has nothing at that path: the page or resource was not found."),
    ("How long should I boil an egg for a runny yolk?", "About six minutes in already boiling water, then cool it in cold water for a minute."),
    ("What does the SQL keyword DISTINCT do?",
     "It removes duplicate rows from the result, keeping one row for each distinct combination of the selected columns."),
    ("Is it better to stretch before or after running?",
     "Do a short dynamic warm-up before and keep static stretching for after, when the muscles are warm."),
    ("How do I center a div with CSS?", "Make the parent a flex container with display: flex; justify-content: center; align-items: center."),
    ("What's the capital of Australia?", "Canberra, not Sydney; it was purpose-built as a compromise between Sydney and Melbourne."),
    ("Can you explain recursion in one sentence?",
     "Recursion is when a function solves a problem by calling itself on a smaller version of the same problem until a base case stops it."),
    ("How many cups of coffee a day are considered safe?",
     "For most healthy adults up to about four cups, roughly 400 mg of caffeine, is considered safe."),
    ("What's the difference between RAM and storage?",
     "RAM is fast, temporary working memory cleared at power-off; storage such as an SSD keeps files permanently but is slower."),
    ("Write a haiku about autumn.", "Crisp leaves drift and fall / the maple lets go of red / cold wind carries it."),
    ("How do I read a CSV file with pandas?", "import pandas as pd, then df = pd.read_csv('file.csv'); pass sep=';' if the file uses semicolons."),
    ("Why do cats purr?", "Mostly to signal contentment, but also to soothe themselves when stressed; the vibration may even help healing."),
    ("What is the time complexity of binary search?",
     "O(log n): every comparison halves the part of the sorted array that can still hold the target."),
    ("Any tips for a job interview?",
     "Research the company, prepare short stories of your past work, ask thoughtful questions and arrive a little early."),
]

QUESTIONS = {"name": "Quick check: what is my name?", "order": "What is my order id?",
             "channel": "How do I prefer to be contacted?", "city": "Which city do I live in?"}
HISTORIES = ("full", "window")
# Messages kept by a truncating client besides the system prompt and the question (3 exchanges). From
# N = 3 on the planted turn is outside the window and N only changes which filler turns it holds, so the
# window is measured at the largest N only (it keeps the run short).
WINDOW = 6

_DENIAL = re.compile(
    r"\b(?:don't|do not|didn't|did not|can't|cannot|can not|haven't|have not|wasn't|was not|won't)\s+"
    r"(?:know|have|recall|remember|access|see|find|mention|provide|tell|share|store|retain|possess)"
    r"|\bnot\s+(?:been\s+)?(?:provided|mentioned|told|shared|given|specified|available|aware)"
    r"|\bno\s+(?:information|record|details|way\s+(?:to|of)\s+know|access|memory)"
    r"|\bunable\s+to\s+(?:determine|know|access|find|recall|provide|retrieve)"
    r"|\b(?:as|i\s+am|i'm)\s+an\s+ai\b|\bpersonal\s+(?:information|data|details)\b|\bi'?m\s+(?:not\s+sure|sorry)", re.I)

# message, known keys, expected {canonical key: substring of the value}
EXTRACTION_CASES: list[tuple[str, list[str], dict[str, str]]] = [
    ("Hi, my name is Priya Raman, my order id is ORD-48213, and I prefer email for contact.", [],
     {"name": "Priya Raman", "order_id": "ORD-48213", "preferred_contact": "email"}),
    ("I live in Lisbon and I work at Acme Corp.", [], {"city": "Lisbon", "employer": "Acme"}),
    ("Actually, I prefer phone calls now.", ["name", "order_id", "preferred_contact"], {"preferred_contact": "phone"}),
    ("What is my name?", ["name"], {}),
    ("How do I prefer to be contacted?", ["name", "preferred_contact"], {}),
    ("We decided to use Postgres instead of MySQL for the project.", [], {"decision": "Postgres"}),
    ("Please call me Sam, not Samuel.", ["name"], {"name": "Sam"}),
    ("I'm trying to sort a dict by value, how?", [], {}),
    ("My order ids are 4412 and 4413.", [], {"order_id": "4412"}),
    ("I don't eat pork and I'm allergic to peanuts.", [], {"diet": "pork", "allergy": "peanuts"}),
    ("My email is j.kowalski@example.org, you can reach me there.", [], {"email": "j.kowalski@example.org"}),
    ("The ticket number is T-77120 and it's been open for a week.", [], {"ticket_id": "T-77120"}),
    ("I'm Wen Li. I'd like answers in French please.", [], {"name": "Wen Li", "preferred_language": "French"}),
    ("Sorry, typo: my order id is ORD-48231, not ORD-48213.", ["name", "order_id"], {"order_id": "ORD-48231"}),
    ("Can you explain what a closure is in JavaScript?", [], {}),
    ("Thanks, that helps a lot!", [], {}),
    ("Let's go with the monthly plan after all.", ["decision"], {"decision": "monthly plan"}),
    ("My phone number is +44 7700 900123.", [], {"phone": "7700 900123"}),
    ("I work as a data engineer at Northwind.", [], {"job": "data engineer", "employer": "Northwind"}),
    ("I'm vegetarian, so no meat recipes please.", [], {"diet": "vegetarian"}),
]


def window(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a client that keeps the system prompt and the last WINDOW messages sends."""
    return [msgs[0]] + msgs[1:-1][-WINDOW:] + [msgs[-1]]


def conversation(fs: dict[str, str], n: int, question: str) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": fs["plant"].format(**fs)},
                                  {"role": "assistant", "content": ACK}]
    for q, a in FILLER[:n]:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": question}]


async def extraction_eval(ex: Extractor) -> dict[str, Any]:
    tp = fp = fn = 0
    rows = []
    for text, keys, expected in EXTRACTION_CASES:
        got = {normalize_key(k): v for k, v in await ex.extract(text, keys)}
        hit = {k for k, v in expected.items() if k in got and v.lower() in got[k].lower()}
        tp, fn, fp = tp + len(hit), fn + len(expected) - len(hit), fp + len(got) - len(hit)
        rows.append({"text": text, "expected": expected, "got": got})
    return {"cases": len(EXTRACTION_CASES), "expected_facts": tp + fn, "true_pos": tp, "false_pos": fp, "false_neg": fn,
            "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "rows": rows}


async def run(n_sets: int, ns: tuple[int, ...], models: tuple[str, ...], do_extraction: bool, threads: int) -> dict[str, Any]:
    cfg = load_config(env={})
    cfg = replace(cfg, models={k: replace(m, threads=threads) for k, m in cfg.models.items()})
    fleet = Fleet(cfg)
    for m in models:
        fleet.get(m).load()
    tmp = Path(tempfile.mkdtemp(prefix="smallfleet-membench-"))
    mem = SessionMemory(FactStore(tmp / "memory.db"), Extractor(fleet.get(EXTRACTOR)))
    out: dict[str, Any] = {}
    if do_extraction:
        t0 = time.time()
        out["extraction"] = await extraction_eval(Extractor(fleet.get(EXTRACTOR)))
        out["extraction"]["wall_s"] = round(time.time() - t0, 1)
        e = out["extraction"]
        print(f"extraction: precision {e['precision']:.2f} recall {e['recall']:.2f} "
              f"({e['true_pos']}/{e['expected_facts']} facts, {e['false_pos']} false) in {e['wall_s']} s", file=sys.stderr)
    probes: list[dict[str, Any]] = []
    sets = fact_sets(n_sets)
    t_start = time.time()
    for si, fs in enumerate(sets):
        sid = f"set-{si}"
        for model in models:
            llm = fleet.get(model)
            # Full histories first, N ascending: each extends the last one, so llama.cpp's prefix cache
            # only reads the new turns; one N and history at a time, all questions, for the same reason.
            for history in HISTORIES:
                for n in ns:
                    if history == "window" and n != max(ns):
                        continue  # see WINDOW: only the longest conversation
                    for kind, question in QUESTIONS.items():
                        full = conversation(fs, n, question)
                        msgs = full if history == "full" else window(full)
                        # The gateway saw every earlier request of the session, i.e. the full history;
                        # then this request arrives: observe what is new in it, pin.
                        await mem.observe(sid, full[:-1])
                        with_mem = await mem.prepare(sid, msgs)
                        for label, request_msgs in (("without", msgs), ("with", with_mem)):
                            t0 = time.time()
                            res = await llm.chat({"messages": request_msgs, "max_tokens": 48, "temperature": 0.0})
                            ans = res.content
                            ok = recalled(kind, fs, ans)
                            probes.append({"set": si, "model": model, "n": n, "history": history, "fact": kind,
                                           "memory": label, "recalled": ok, "denial": (not ok) and bool(_DENIAL.search(ans)),
                                           "answer": ans, "tokens_in": res.tokens_in, "cached_tokens": res.cached_tokens,
                                           "latency_s": round(time.time() - t0, 2)})
        got = {f.key: f.value for f in mem.facts(sid)}
        print(f"set {si + 1}/{len(sets)} done at {time.time() - t_start:.0f} s; extracted {got}", file=sys.stderr)
    out["extracted"] = [{f.key: f.value for f in mem.facts(f"set-{i}")} for i in range(len(sets))]
    out["extractor_stats"] = mem.extractor.stats.as_dict()
    out["probes"] = probes
    out["table"] = summarise(probes, models, ns)
    mem.close()
    return out


def summarise(probes: list[dict[str, Any]], models: tuple[str, ...], ns: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    cells = [(h, m, n, label) for h in HISTORIES for m in models for n in ns for label in ("without", "with")]
    for history, model, n, label in cells:
        sel = [p for p in probes if (p["history"], p["model"], p["n"], p["memory"]) == (history, model, n, label)]
        if not sel:
            continue  # the window is run at the largest N only
        k = sum(p["recalled"] for p in sel)
        d = sum(p["denial"] for p in sel)
        lo, hi = wilson(k, len(sel))
        rows.append({"history": history, "model": model, "n": n, "memory": label, "probes": len(sel), "recalled": k,
                     "recall": k / max(len(sel), 1), "recall_ci95": [round(lo, 3), round(hi, 3)],
                     "denials": d, "denial_rate": d / max(len(sel), 1),
                     "by_fact": {f: sum(p["recalled"] for p in sel if p["fact"] == f) for f in QUESTIONS}})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'history':<7} {'model':<20} {'N':>3} {'memory':<8} {'probes':>6} {'recall':>7} {'95% CI':>13} {'denial':>7}"
          "  recalled by fact (name/order/channel/city)")
    for r in rows:
        lo, hi = r["recall_ci95"]
        bf = "/".join(str(v) for v in r["by_fact"].values())
        print(f"{r['history']:<7} {r['model']:<20} {r['n']:>3} {r['memory']:<8} {r['probes']:>6} {r['recall']:>7.1%} "
              f"{f'{lo:.0%}-{hi:.0%}':>13} {r['denial_rate']:>7.1%}  {bf}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {}
    for mi, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        for label, style in (("without", "--"), ("with", "-")):
            sel = [r for r in rows if (r["history"], r["model"], r["memory"]) == ("full", model, label)]
            line, = ax.plot([r["n"] for r in sel], [100 * r["recall"] for r in sel], style, marker="o",
                            color=colors.get(model), label=f"{model}, full history, {label} memory")
            colors[model] = line.get_color()
            win = [r for r in rows if (r["history"], r["model"], r["memory"]) == ("window", model, label)]
            for r in win:
                # side by side, so one model's marker does not hide the other's
                ax.scatter([r["n"] + (0.4 if label == "with" else -0.4) + 0.3 * mi], [100 * r["recall"]], color=colors[model],
                           marker="s" if label == "with" else "x", s=50,
                           label=f"{model}, last {WINDOW} messages, {label} memory")
    ax.set_xlabel("unrelated turns N between the stated facts and the question")
    ax.set_ylabel("recall of the planted fact (%)")
    ax.set_ylim(-5, 105)
    ax.set_xticks(list(NS))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sets", type=int, default=16, help="fact sets (at most 16); each gives 4 questions per model, N and condition")
    ap.add_argument("--quick", action="store_true", help="1 fact set, N = 2 and 20, no extraction table")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated fleet models that answer (default: both local ones)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads per model (default 2)")
    ap.add_argument("--out", default=str(RESULTS / "memory.json"), help="default bench/results/memory.json; the plot goes beside it (.png)")
    a = ap.parse_args()
    if not 1 <= a.sets <= len(NAMES):
        ap.error(f"--sets must be between 1 and {len(NAMES)}")
    models = tuple(m for m in a.models.split(",") if m)
    sets, ns = (1, (2, 20)) if a.quick else (a.sets, NS)
    t0 = time.time()
    r = asyncio.run(run(sets, ns, models, not a.quick, a.threads))
    r.update(fact_sets=sets, ns=list(ns), models=list(models), extractor=EXTRACTOR, wall_s=round(time.time() - t0),
             quick=a.quick, threads=a.threads,
             note="filler turns are fixed pre-written Q/A pairs; only the final answer is generated; temperature 0")
    if "extraction" in r:
        e = r["extraction"]
        print(f"\nextractor {EXTRACTOR} on {e['cases']} labelled messages: precision {e['precision']:.2f}, "
              f"recall {e['recall']:.2f} ({e['true_pos']} of {e['expected_facts']} facts, {e['false_pos']} extra)")
    st = r["extractor_stats"]
    print(f"retention runs: {st['model_calls']} extractor calls, {st['skipped']} user turns skipped by the pre-filter")
    print_table(r["table"])
    print(f"\n{sets} fact sets x 4 questions = {sets * 4} probes per row; wall {r['wall_s']} s")
    write_json(a.out, r, ensure_ascii=False)
    if not a.quick:
        png = Path(a.out).with_suffix(".png")
        plot(r["table"], png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
