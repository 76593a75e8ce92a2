"""The dashboard's pages as HTML: server-rendered, no JavaScript, every value escaped.

Pages: overview (``/``), runs (``/runs``, one run ``/runs/ID``), steps (``/steps``, one step
``/steps/ID``), unverified answers, tool calls the guard stopped, flagged injections, and the learned
clusters. Every list page takes the same filter form (range or dates, run, key, step kind, tier).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from . import charts
from .queries import (
    MAX_STEPS,
    RANGES,
    Bucket,
    Filters,
    GuardRow,
    RunRow,
    Scope,
    StepRow,
    StepView,
    Totals,
    totals,
)

NAV = [("/", "Overview"), ("/runs", "Runs"), ("/steps", "Steps"), ("/unverified", "Unverified"),
       ("/tool-calls", "Tool calls"), ("/injections", "Injections"), ("/clusters", "Clusters")]
PAGE = 100  # rows per page in the long lists

_CSS = """
body{font:14px system-ui,sans-serif;margin:0;color:#212529;background:#f8f9fa}
header{background:#212529;color:#fff;padding:10px 24px;display:flex;gap:20px;align-items:baseline;flex-wrap:wrap}
header b{font-size:18px;margin-right:12px}header a{color:#dee2e6;text-decoration:none}
header a.on{color:#fff;font-weight:600;border-bottom:2px solid #74c0fc}
main{padding:16px 24px;max-width:1400px}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:22px 0 8px}
form.filters{display:flex;gap:8px;flex-wrap:wrap;align-items:end;background:#fff;border:1px solid #dee2e6;padding:8px 10px;border-radius:6px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#495057}
form.filters input,form.filters select{font:inherit;padding:3px 4px;min-width:7em}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:8px 14px;min-width:120px}
.card .v{font-size:20px;font-weight:600}.card .k{font-size:12px;color:#495057}
table{border-collapse:collapse;margin:6px 0 14px;background:#fff}
td,th{border:1px solid #dee2e6;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f1f3f5}td.l,th.l{text-align:left}td:first-child{white-space:nowrap}
.bad{color:#c92a2a;font-weight:600}.ok{color:#2b8a3e}.muted{color:#868e96}
.chart{background:#fff;border:1px solid #dee2e6;border-radius:6px;margin:4px 0 10px;max-width:100%;height:auto}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:0 18px}
small{color:#495057}code{font-size:12px}
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def usd(v: float | None) -> str:
    if v is None:
        return "—"
    return f"${v:,.2f}" if abs(v) >= 100 else f"${v:.6f}".rstrip("0").rstrip(".") if v else "$0"


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "—"


def pct(v: float) -> str:
    return f"{v:.1f}%"


def layout(title: str, here: str, body: str) -> str:
    nav = "".join(f'<a href="{p}"{" class=on" if p == here else ""}>{esc(t)}</a>' for p, t in NAV)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f"<title>{esc(title)} · smallfleet</title><style>{_CSS}</style></head>"
            f"<body><header><b>smallfleet</b>{nav}</header><main><h1>{esc(title)}</h1>{body}</main></body></html>")


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], left: Sequence[int] = (0,), empty: str = "nothing here yet") -> str:
    """Cells are escaped unless they are ``Raw`` (links, marks built here)."""
    hs = "".join(f'<th{" class=l" if i in left else ""}>{esc(h)}</th>' for i, h in enumerate(head))
    body = []
    for r in rows:
        body.append("<tr>" + "".join(f'<td{" class=l" if i in left else ""}>{c if isinstance(c, Raw) else esc(c)}</td>'
                                     for i, c in enumerate(r)) + "</tr>")
    if not body:
        return f'<p class="muted">{esc(empty)}</p>'
    return f"<table>{f'<tr>{hs}</tr>' if any(head) else ''}{''.join(body)}</table>"


class Raw(str):
    """HTML built here from escaped parts: a table cell that is not escaped again."""


def link(href: str, text: Any) -> Raw:
    return Raw(f'<a href="{esc(href)}">{esc(text)}</a>')


def step_link(step_id: str) -> Raw:
    return link("/steps/" + quote(step_id, safe=""), step_id)


def run_link(run_id: str | None) -> Raw | str:
    return link("/runs/" + quote(run_id, safe=""), run_id) if run_id else "—"


def outcome_mark(outcome: str) -> Raw:
    cls = "ok" if outcome in ("verified", "reported ok", "all verified", "reported success") else "bad"
    return Raw(f'<span class="{cls}">{esc(outcome)}</span>')


def filter_form(f: Filters, action: str, kinds: Sequence[str], tiers: Sequence[str], extra: dict[str, str] | None = None) -> str:
    opts = "".join(f'<option value="{r}"{" selected" if f.range == r else ""}>{"all time" if r == "all" else "last " + r}</option>'
                   for r in RANGES)
    if f.range == "custom":
        opts += '<option value="custom" selected>dates below</option>'

    def sel(name: str, values: Sequence[str], cur: str | None) -> str:
        o = '<option value="">any</option>' + "".join(
            f'<option value="{esc(v)}"{" selected" if v == cur else ""}>{esc(v)}</option>' for v in values)
        return f'<label>{name}<select name="{name}">{o}</select></label>'

    from_, to = f.from_day or "", f.to_day or ""
    more = "".join(f'<label>{esc(k)}<input name="{esc(k)}" value="{esc(v)}"></label>' for k, v in (extra or {}).items())
    return (f'<form class="filters" method="get" action="{esc(action)}">'
            f'<label>range<select name="range">{opts}</select></label>'
            f'<label>from (UTC)<input type="date" name="from" value="{esc(from_)}"></label>'
            f'<label>to<input type="date" name="to" value="{esc(to)}"></label>'
            f'<label>run<input name="run" value="{esc(f.run)}" placeholder="run id"></label>'
            f'<label>key<input name="key" value="{esc(f.key)}" placeholder="key id"></label>'
            f"{sel('kind', kinds, f.kind)}{sel('tier', tiers, f.tier)}{more}"
            '<button type="submit">Apply</button></form>')


def cards(t: Totals) -> str:
    items = [("steps", f"{t.steps:,}"), ("spend", usd(t.spend)), ("all-frontier", usd(t.frontier)),
             ("saved", pct(t.saved_pct)), ("saved at parity", pct(t.parity_pct)), ("escalated", pct(100 * t.escalation_rate)),
             ("verified", f"{t.verified:,}"), ("unverified", f"{t.unverified:,}"), ("reported failed", f"{t.failed:,}")]
    return '<div class="cards">' + "".join(f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
                                           for k, v in items) + "</div>"


def truncated_note(sc: Scope) -> str:
    return (f'<p class="bad">This view holds the newest {MAX_STEPS:,} steps only; narrow the range or filter.</p>'
            if sc.truncated else "")


def _label(ts: float, size: float) -> str:
    fmt = "%H:%M" if size < 86400 else "%m-%d"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def overview(sc: Scope, size: float, buckets: list[Bucket], by_kind: list[tuple[str, Totals]], by_tier: list[tuple[str, Totals]],
             by_model: list[tuple[str, Totals]], privacy: tuple[int, dict[str, int]], guard: dict[str, int], basis: str,
             kinds: Sequence[str], tiers: Sequence[str]) -> str:
    t = totals(sc.steps)
    xs = [_label(b.start, size) for b in buckets]
    tier_names = [x for x in sc.tiers if any(b.by_tier.get(x) for b in buckets)]
    tier_names += sorted({k for b in buckets for k in b.by_tier} - set(tier_names))
    body = [filter_form(sc.filters, "/", kinds, tiers), truncated_note(sc), cards(t),
            f"<p><small>{esc(basis)}. At parity, a step whose final answer failed its checks, or whose task the agent reported "
            "failed, counts its spend as a loss.</small></p>"]
    if not sc.steps:
        everything = link("/?" + sc.filters.query(range="all", **{"from": None, "to": None}), "All time")
        body.append(f'<p class="muted">No steps in this range. {everything} shows every step in the ledger; '
                    "<code>smallfleet demo</code> or any request to the gateway makes some.</p>")
    if buckets:
        every = f"one bar per {_span(size)}"
        body.append('<div class="charts"><div>')
        body.append(f"<h2>Steps per tier over time <small>({every}, UTC)</small></h2>")
        body.append(charts.stacked_bars("steps per tier over time", xs,
                                        [(n, [float(b.by_tier.get(n, 0)) for b in buckets]) for n in tier_names]))
        body.append("</div><div><h2>Spend against all-frontier</h2>")
        body.append(charts.lines("spend and all-frontier cost over time", xs,
                                 [("spend", [b.totals.spend if b.totals.steps else None for b in buckets]),
                                  ("all-frontier", [b.totals.frontier if b.totals.steps else None for b in buckets])],
                                 fmt=usd, colors=["#1971c2", "#868e96"]))
        body.append("</div><div><h2>Savings, plain and at parity (%)</h2>")
        body.append(charts.lines("savings over time", xs,
                                 [("saved", [b.totals.saved_pct if b.totals.frontier else None for b in buckets]),
                                  ("saved at parity", [b.totals.parity_pct if b.totals.frontier else None for b in buckets])],
                                 fmt=lambda v: f"{v:.0f}%", colors=["#2b8a3e", "#e8590c"]))
        top = [k for k, _ in by_kind[:5]]
        body.append("</div><div><h2>Escalation rate per step kind (%)</h2>")
        body.append(charts.lines("escalation rate per step kind over time", xs,
                                 [(k, [100 * b.by_kind[k].escalation_rate if k in b.by_kind else None for b in buckets]) for k in top],
                                 fmt=lambda v: f"{v:.0f}%", ymax=100.0))
        body.append("</div></div>")
    kind_rows = [(link("/steps?" + sc.filters.query(kind=k), k), f"{x.steps:,}", f"{x.escalated:,}", pct(100 * x.escalation_rate),
                  usd(x.spend), pct(x.parity_pct), f"{x.unverified:,}", f"{x.latency_ms / x.steps:.0f}" if x.steps else "—")
                 for k, x in by_kind]
    body.append("<h2>Per step kind</h2>" + table(["step kind", "steps", "escalated", "rate", "spend", "saved at parity",
                                                  "unverified", "mean latency ms"], kind_rows))
    body.append("<h2>Per final tier</h2>" + table(
        ["tier", "steps", "share", "spend", "unverified"],
        [(k, f"{x.steps:,}", pct(100 * x.steps / t.steps if t.steps else 0), usd(x.spend), f"{x.unverified:,}") for k, x in by_tier]))
    body.append("<h2>Per answering model</h2>" + table(
        ["model", "steps", "spend", "unverified"], [(k, f"{x.steps:,}", usd(x.spend), f"{x.unverified:,}") for k, x in by_model]))
    sent, per = privacy
    body.append("<h2>Personal data kept off remote models</h2>" + (
        f"<p>{sent:,} remote call(s) went out pseudonymised; entities replaced, by type (values are never stored):</p>"
        + table(["type", "replaced"], [(k, f"{n:,}") for k, n in per.items()]) if sent else
        '<p class="muted">no remote call carried personal data in this range (or privacy is off)</p>'))
    body.append("<h2>Tool-call guard</h2>" + table(
        ["decision", "count"], [(k.replace("_", " "), f"{n:,}") for k, n in guard.items()],
        empty="no tool calls reviewed in this range"))
    return layout("Overview", "/", "".join(body))


def _span(size: float) -> str:
    for s, name in ((60, "minute"), (300, "5 minutes"), (900, "15 minutes"), (3600, "hour"), (3 * 3600, "3 hours"),
                    (6 * 3600, "6 hours"), (86400, "day"), (7 * 86400, "week")):
        if size <= s:
            return name
    return "30 days"


def runs_page(sc: Scope, rows: list[RunRow], kinds: Sequence[str], tiers: Sequence[str], page: int) -> str:
    shown = rows[page * PAGE:(page + 1) * PAGE]
    body = [filter_form(sc.filters, "/runs", kinds, tiers), truncated_note(sc),
            f"<p>{len(rows):,} run(s) in this range.</p>",
            table(["run", "first step", "last step", "steps", "spend", "budget", "saved at parity", "escalated", "outcome"],
                  [(run_link(r.run_id), when(r.first), when(r.last), f"{r.totals.steps:,}", usd(r.totals.spend),
                    usd(r.budget) if r.budget is not None else "none", pct(r.totals.parity_pct), f"{r.totals.escalated:,}",
                    outcome_mark(r.outcome)) for r in shown], empty="no runs in this range (steps sent with x-smallfleet-run "
                                                                     "make a run)"),
            _pager("/runs", sc.filters, page, len(rows))]
    return layout("Runs", "/runs", "".join(body))


def _pager(path: str, f: Filters, page: int, n: int) -> str:
    if n <= PAGE:
        return ""
    parts = []
    if page > 0:
        parts.append(str(link(f"{path}?{f.query(page=str(page - 1))}", "← newer")))
    if (page + 1) * PAGE < n:
        parts.append(str(link(f"{path}?{f.query(page=str(page + 1))}", "older →")))
    return f"<p>page {page + 1} of {-(-n // PAGE)} · {' · '.join(parts)}</p>"


def steps_table(steps: Sequence[StepRow], failing: dict[str, list[dict[str, Any]]] | None = None) -> str:
    head = ["time (UTC)", "step", "run", "kind", "final tier", "model", "attempts", "spend", "latency ms", "outcome"]
    rows: list[list[Any]] = []
    for s in steps:
        r: list[Any] = [when(s.ts), step_link(s.step_id), run_link(s.run_id), s.kind, s.tier, s.model, s.attempts, usd(s.spend),
                        f"{s.latency_ms:.0f}", outcome_mark(s.outcome)]
        if failing is not None:
            r.append("; ".join(f"{c.get('check')}: {c.get('reason', '')}"[:160] for c in failing.get(s.step_id, [])) or "—")
        rows.append(r)
    return table(head + (["failed checks"] if failing is not None else []), rows, left=(1, 2, 3, 5, 10),
                 empty="no steps in this range")


def steps_page(sc: Scope, kinds: Sequence[str], tiers: Sequence[str], page: int, title: str = "Steps", here: str = "/steps",
               failing: dict[str, list[dict[str, Any]]] | None = None, intro: str = "") -> str:
    shown = sc.steps[page * PAGE:(page + 1) * PAGE]
    body = [filter_form(sc.filters, here, kinds, tiers), truncated_note(sc), intro,
            f"<p>{len(sc.steps):,} step(s), newest first.</p>", steps_table(shown, failing), _pager(here, sc.filters, page, len(sc.steps))]
    return layout(title, here, "".join(body))


def run_page(run_id: str, sc: Scope, run: RunRow | None) -> str:
    t = run.totals if run is not None else Totals()
    budget = (f"budget {usd(run.budget)}, spent {usd(run.spent)} (from the ledger's run account)"
              if run is not None and run.budget is not None else "no budget set")
    body = [cards(t), f"<p>{esc(budget)} · outcome {outcome_mark(run.outcome) if run else '—'}</p>",
            f"<h2>Its steps</h2>{steps_table(sc.steps)}"]
    return layout(f"Run {run_id}", "/runs", "".join(body))


def step_page(v: StepView) -> str:
    s = v.step
    meta = table(["", ""], [
        ("run", run_link(s.run_id)), ("session", "yes (its id is the client's)" if v.session else "none"),
        ("step kind", s.kind), ("outcome", outcome_mark(s.outcome)), ("final", f"{s.model} ({s.tier})"),
        ("time (UTC)", when(s.ts)), ("spend", usd(s.spend)), ("all-frontier price of the answer", usd(s.frontier)),
        ("trust label of its context", s.trust or "— (no tool output to label)"), ("API key", s.key or "— (no keys)")],
        left=(0, 1))
    att_rows = [(a.attempt + 1, a.model + (" (stand-in)" if a.stand_in else ""), a.tier, f"{a.tokens_in:,}", f"{a.tokens_out:,}",
                 usd(a.cost_usd), f"{a.latency_ms:.0f}", Raw('<span class="ok">passed</span>') if a.passed else
                 Raw('<span class="bad">failed</span>'), "yes" if a.escalated else "no", a.error or "")
                for a in v.attempts]
    body = [meta, "<h2>Attempts</h2>", table(["#", "model", "tier", "tokens in", "tokens out", "cost", "latency ms", "checks",
                                               "escalated", "error"], att_rows, left=(1, 2, 9))]
    for a in v.attempts:
        checks = [(c.get("check"), Raw('<span class="ok">pass</span>') if c.get("passed") else Raw('<span class="bad">fail</span>'),
                   "advisory" if c.get("advisory") else "deciding", f"{c['score']:.3f}" if isinstance(c.get("score"), (int, float)) else "",
                   c.get("reason", "")) for c in a.checks]
        body.append(f"<h2>Attempt {a.attempt + 1}: {esc(a.model)} — its checks</h2>"
                    + table(["check", "verdict", "role", "score", "reason"], checks, left=(0, 4),
                            empty="no checks apply to this step kind"))
        if a.privacy is not None:
            body.append("<p>Sent to a remote model pseudonymised: "
                        + (esc(", ".join(f"{n} {t}" for t, n in a.privacy.items())) if a.privacy else "no personal data found")
                        + " (types and counts only).</p>")
        if a.reason:
            body.append(f"<p><small>why: {esc(a.reason)}</small></p>")
    body.append("<h2>Guard decisions</h2>" + table(
        ["tool", "decision", "rule", "argument", "mode", "reason"],
        [(g["tool"] or "—", g["action"], g["rule"], g["argument"] or "", g["mode"], g["reason"]) for g in v.guard],
        left=(0, 1, 2, 3, 4, 5), empty="no tool calls in the answer, and no injection flagged"))
    return layout(f"Step {s.step_id}", "/steps", "".join(body))


def guard_page(sc: Scope, rows: list[GuardRow], kinds: Sequence[str], tiers: Sequence[str], injections: bool,
               tool: str | None, page: int) -> str:
    here = "/injections" if injections else "/tool-calls"
    if tool:
        rows = [r for r in rows if r.tool == tool]
    shown = rows[page * PAGE:(page + 1) * PAGE]
    if injections:
        tab = table(["time (UTC)", "step", "run", "where", "mode", "detector's reasons"],
                    [(when(r.ts), step_link(r.step_id), run_link(r.run_id), r.reason.split(":", 1)[0], r.mode,
                      r.reason.split(":", 1)[-1].strip()) for r in shown], left=(1, 2, 3, 4, 5),
                    empty="no injection flagged in this range")
        intro = "<p>Instructions the detector found in untrusted content (tool output) of a step.</p>"
    else:
        tab = table(["time (UTC)", "step", "run", "tool", "decision", "mode", "rule", "argument", "reason"],
                    [(when(r.ts), step_link(r.step_id), run_link(r.run_id), r.tool, r.action, r.mode, r.rule, r.argument or "",
                      r.reason) for r in shown], left=(1, 2, 3, 4, 5, 6, 7, 8),
                    empty="no tool call blocked, flagged or held for confirmation in this range")
        intro = "<p>Tool calls in answers that the guard blocked, flagged or held for the user's confirmation.</p>"
    body = [filter_form(sc.filters, here, kinds, tiers, {"tool": tool or ""}), truncated_note(sc), intro,
            f"<p>{len(rows):,} event(s).</p>", tab, _pager(here, sc.filters, page, len(rows))]
    return layout("Injections flagged" if injections else "Tool calls stopped", here, "".join(body))


def clusters_page(table_json: dict[str, Any] | None, where: str, error: str | None) -> str:
    if error:
        return layout("Clusters", "/clusters", f'<p class="bad">{esc(error)}</p>')
    if table_json is None:
        return layout("Clusters", "/clusters", f'<p class="muted">No learned routes yet ({esc(where)}). The learning loop writes '
                                                "them: <code>smallfleet learn cluster</code>, <code>learn replay</code>, "
                                                "<code>learn apply</code>.</p>")
    routes = table_json.get("routes") or []
    undecided = table_json.get("undecided") or []
    body = [f"<p>From {esc(where)}, written {when(table_json.get('created'))}; target agreement "
            f"{100 * float(table_json.get('target', 0)):.0f}%, at least {esc(table_json.get('min_steps'))} replayed steps.</p>",
            "<h2>Routed: start tier moved by evidence</h2>",
            table(["cluster", "name", "step kind", "starts on", "model", "worked examples", "evidence (measured agreement)"],
                  [(r.get("cluster"), r.get("name"), r.get("kind"), r.get("start"), r.get("model") or "the tier's own",
                    len(r.get("examples") or []), r.get("evidence")) for r in routes], left=(0, 1, 2, 3, 4, 6),
                  empty="no cluster has evidence enough to move yet"),
            "<h2>Undecided: the hand-set policy stays in charge</h2>",
            table(["cluster", "name", "why"], [(u.get("cluster"), u.get("name"), u.get("why")) for u in undecided],
                  left=(0, 1, 2), empty="none")]
    return layout("Clusters", "/clusters", "".join(body))


def login_page(error: str = "") -> str:
    """The key prompt of a gateway with API keys; the key goes into a same-site, HTTP-only cookie."""
    msg = f'<p class="bad">{esc(error)}</p>' if error else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>smallfleet: sign in</title><style>{_CSS}'
            "input{font:inherit;padding:4px;width:28em}</style></head><body><header><b>smallfleet</b></header><main>"
            "<h1>Sign in</h1><p>This gateway needs an API key (from <code>smallfleet keys create NAME</code>).</p>"
            f'{msg}<form method="post" action="/login"><input type="password" name="key" placeholder="sf-..." '
            'autocomplete="off" autofocus> <button type="submit">Open the dashboard</button></form></main></body></html>')


def error_page(status: int, message: str) -> str:
    return layout("Not found" if status == 404 else "Bad request", "", f'<p class="bad">{esc(message)}</p><p><a href="/">back</a></p>')
