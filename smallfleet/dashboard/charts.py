"""Charts drawn on the server as inline SVG: no JavaScript, no assets, readable in any browser and in a
screenshot. Each bar or point carries a ``<title>`` (the browser's tooltip) with its exact value."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

W, H = 760, 220  # the plot area plus margins
_L, _R, _T, _B = 64, 12, 12, 44  # margins: the y labels on the left, the x labels and legend below
PALETTE = ["#2b8a3e", "#1971c2", "#e8590c", "#862e9c", "#c92a2a", "#5c940d", "#0b7285", "#868e96"]

Fmt = Callable[[float], str]


def _nice_max(v: float) -> float:
    """The axis top: four grid steps of 1, 2, 2.5 or 5 times a power of ten (counts 4, 8, 10, 20 …)."""
    if v <= 0:
        return 4.0
    step = 1e-9
    while step * 4 < v:
        step *= 10
    step /= 10
    for m in (1, 2, 2.5, 5, 10):
        if step * m * 4 >= v:
            return step * m * 4
    return step * 40


def _frame(label: str, ymax: float, fmt: Fmt, xs: Sequence[str], body: list[str], legend: Sequence[tuple[str, str]]) -> str:
    pw, ph = W - _L - _R, H - _T - _B
    out = [f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{html.escape(label)}" class="chart">',
           f"<title>{html.escape(label)}</title>"]
    for i in range(5):  # horizontal grid with y labels
        v = ymax * i / 4
        y = _T + ph - ph * i / 4
        out.append(f'<line x1="{_L}" x2="{_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
                   f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#495057">{html.escape(fmt(v))}</text>')
    n = max(len(xs), 1)
    every = max(1, -(-n // 8))  # at most ~8 x labels
    for i, x in enumerate(xs):
        if i % every == 0:
            cx = _L + pw * (i + 0.5) / n
            out.append(f'<text x="{cx:.1f}" y="{_T + ph + 16}" text-anchor="middle" font-size="11" fill="#495057">{html.escape(x)}</text>')
    out += body
    lx = _L
    for name, color in legend:
        out.append(f'<rect x="{lx}" y="{H - 14}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{lx + 14}" y="{H - 5}" font-size="11" fill="#212529">{html.escape(name)}</text>')
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def stacked_bars(label: str, xs: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], fmt: Fmt = lambda v: f"{v:g}",
                 colors: Sequence[str] = PALETTE) -> str:
    """One bar per x, stacked by series (e.g. steps per tier per hour)."""
    n = max(len(xs), 1)
    totals = [sum(s[1][i] for s in series) for i in range(len(xs))]
    ymax = _nice_max(max(totals, default=0.0))
    pw, ph = W - _L - _R, H - _T - _B
    bw = max(pw / n * 0.8, 1.0)
    body = []
    for i, x in enumerate(xs):
        y = float(_T + ph)
        cx = _L + pw * (i + 0.5) / n
        for k, (name, vals) in enumerate(series):
            v = vals[i]
            if v <= 0:
                continue
            h = ph * v / ymax
            y -= h
            body.append(f'<rect x="{cx - bw / 2:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{colors[k % len(colors)]}">'
                        f"<title>{html.escape(f'{x} · {name}: {fmt(v)}')}</title></rect>")
    return _frame(label, ymax, fmt, xs, body, [(name, colors[k % len(colors)]) for k, (name, _) in enumerate(series)])


def lines(label: str, xs: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], fmt: Fmt = lambda v: f"{v:.0f}",
          ymax: float | None = None, colors: Sequence[str] = PALETTE) -> str:
    """One line per series; a None value is a gap (no steps in that bucket)."""
    n = max(len(xs), 1)
    top = ymax if ymax is not None else _nice_max(max((v for _, vs in series for v in vs if v is not None), default=0.0))
    pw, ph = W - _L - _R, H - _T - _B
    body = []
    for k, (name, vals) in enumerate(series):
        color = colors[k % len(colors)]
        pts: list[str] = []
        for i, v in enumerate(vals):
            if v is None:
                if len(pts) > 1:
                    body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>')
                pts = []
                continue
            cx, cy = _L + pw * (i + 0.5) / n, _T + ph - ph * min(max(v, 0.0), top) / top
            pts.append(f"{cx:.1f},{cy:.1f}")
            body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{color}">'
                        f"<title>{html.escape(f'{xs[i]} · {name}: {fmt(v)}')}</title></circle>")
        if len(pts) > 1:
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>')
    return _frame(label, top, fmt, xs, body, [(name, colors[k % len(colors)]) for k, (name, _) in enumerate(series)])
