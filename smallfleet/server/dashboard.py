"""A one-page HTML dashboard over the report: no JavaScript build, no external assets."""

from __future__ import annotations

import html
from typing import Any


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in cols)
    body = []
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key)
            if isinstance(v, float):
                v = f"{v:.1%}" if key.endswith(("share", "rate")) else (f"${v:.6f}" if "usd" in key else f"{v:.0f}")
            cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _bars(rows: list[dict[str, Any]]) -> str:
    colors = ["#2b8a3e", "#1971c2", "#c92a2a", "#868e96"]
    parts, x = [], 0.0
    for i, r in enumerate(rows):
        w = 600 * r["share"]
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="28" fill="{colors[i % 4]}">'
                     f'<title>{html.escape(r["tier"])}: {r["share"]:.1%}</title></rect>')
        if w > 60:
            parts.append(f'<text x="{x + 6:.1f}" y="19" fill="white" font-size="13">{html.escape(r["tier"])} {r["share"]:.0%}</text>')
        x += w
    return f'<svg width="600" height="28" role="img" aria-label="share of steps per tier">{"".join(parts)}</svg>'


_KIND_COLUMNS = [('step_kind', 'step kind'), ('steps', 'steps'), ('escalated', 'escalated'), ('escalation_rate', 'rate'),
                 ('spend_usd', 'spend'), ('mean_latency_ms', 'mean latency ms')]
_MODEL_COLUMNS = [('model', 'model'), ('tier', 'tier'), ('attempts', 'attempts'), ('tokens_in', 'tokens in'),
                  ('tokens_out', 'tokens out'), ('spend_usd', 'spend'), ('failed_checks', 'failed checks')]


def render_dashboard(rep: dict[str, Any]) -> str:
    if "error" in rep:
        return f"<p>{html.escape(rep['error'])}</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>smallfleet</title>
<meta http-equiv="refresh" content="10">
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#f1f3f5}}.big{{font-size:22px}}</style></head>
<body><h1>smallfleet</h1>
<p class="big">{rep['steps']} steps · spend ${rep['spend_usd']:.6f} · all-frontier ${rep['counterfactual_usd']:.6f} ·
saved <b>{rep['savings_pct']:.1f}%</b> · escalation rate {rep['escalation_rate']:.1%}</p>
<p class="big">verified {rep.get('verified_steps', 0)} · unverified <b>{rep.get('unverified_steps', 0)}</b>
{f"· in tasks reported failed {rep['failed_steps']} " if rep.get('failed_steps') else ""}· saved at parity
<b>{rep.get('parity_savings_pct', 0.0):.1f}%</b></p>
<p><small>At parity, a step whose answer failed its checks or whose task was reported failed counts its spend as a loss.</small></p>
<p><small>{html.escape(rep['basis'])}</small></p>
<h2>Share of steps per tier</h2>{_bars(rep['by_tier'])}
{_table(rep['by_tier'], [('tier', 'tier'), ('steps', 'steps'), ('share', 'share')])}
<h2>Escalation per step kind</h2>
{_table(rep['by_kind'], _KIND_COLUMNS)}
<h2>Models</h2>
{_table(rep['by_model'], _MODEL_COLUMNS)}
{_guard(rep.get('guard') or {})}
</body></html>"""


def _guard(g: dict[str, Any]) -> str:
    if not g or not any(g.get(k) for k in ("allowed", "blocked", "needs_confirmation", "flagged_only", "injections_flagged")):
        return "<h2>Tool-call guard</h2><p>no tool calls reviewed yet</p>"
    rows = [{"what": k.replace("_", " "), "n": g.get(k, 0)}
            for k in ("allowed", "blocked", "needs_confirmation", "flagged_only", "injections_flagged")]
    rules = [{"rule": r, "n": n} for r, n in sorted(g.get("by_rule", {}).items(), key=lambda x: -x[1])]
    return ("<h2>Tool-call guard</h2>" + _table(rows, [("what", "decision"), ("n", "count")])
            + (_table(rules, [("rule", "rule that stopped a call"), ("n", "count")]) if rules else ""))


def render_login(error: str = "") -> str:
    """The dashboard's key prompt (a gateway with API keys); the key goes into a same-site cookie."""
    msg = f'<p style="color:#c92a2a">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>smallfleet: sign in</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}input{{font:inherit;padding:4px;width:28em}}</style></head>
<body><h1>smallfleet</h1><p>This gateway needs an API key (from <code>smallfleet keys create NAME</code>).</p>{msg}
<form method="post" action="/login"><input type="password" name="key" placeholder="sf-..." autocomplete="off" autofocus>
<button type="submit">Open the dashboard</button></form></body></html>"""
