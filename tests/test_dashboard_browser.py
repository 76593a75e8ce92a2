"""The dashboard in a real browser: Playwright driving Debian's headless Chromium against the real gateway
and its real ledger. Each page loads, the numbers match the ledger, a run opens into its steps and a
step into its attempts, the filter form works, the key form signs in; screenshots of every view are
saved (``SMALLFLEET_SCREENSHOTS=DIR`` keeps them, as the README's come from ``docs/screenshots``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from smallfleet.ledger import Ledger

from .dashboard_day import REMOTE, populate

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra has it)")
CHROMIUM = os.environ.get("SMALLFLEET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed: apt-get install chromium (.ci/run installs it)", allow_module_level=True)
# as root in a container, without a sandbox; no background traffic to hosts this machine cannot reach
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
VIEWS = {"overview": "/", "runs": "/runs", "steps": "/steps", "unverified": "/unverified", "tool-calls": "/tool-calls",
         "injections": "/injections", "clusters": "/clusters"}


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory):
    from .conftest import ThreadGateway

    tmp = tmp_path_factory.mktemp("browser")
    # its own routing table: the session's data dir is shared, and other tests expect none there
    gw = ThreadGateway(tmp, extra=REMOTE + f'\n[learn]\nroutes = "{tmp / "routes.json"}"\n')
    seen = populate(gw)
    # a learned routing table, as `smallfleet learn apply` writes it, for the clusters view (after the traffic:
    # no step above was routed by it)
    gw.cfg.learn.routes_path.parent.mkdir(parents=True, exist_ok=True)
    gw.cfg.learn.routes_path.write_text(json.dumps({
        "version": 1, "created": time.time(), "target": 0.95, "min_steps": 20,
        "routes": [{"cluster": "c03", "name": "route ticket · billing/shipping/returns", "kind": "classification",
                    "signature": "sig-demo", "start": "small", "examples": [], "model": None, "centroid": {},
                    "evidence": "small agreed with the top tier on 58 of 60 replayed steps (95 % interval 0.89–0.99)"}],
        "undecided": [{"cluster": "c07", "name": "work out refund amount", "why": "large: 14 replayed steps, fewer than 20"}]}))
    yield gw, seen
    gw.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("SMALLFLEET_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def card(page, label: str) -> str:
    return page.locator(".card", has=page.locator(".k", has_text=re.compile(f"^{re.escape(label)}$"))).locator(".v").inner_text()


def test_every_view_loads_and_is_saved_as_a_screenshot(day, page, tmp_path) -> None:
    gw, seen = day
    out = shots(tmp_path)
    for name, path in VIEWS.items():
        resp = page.goto(gw.base + path)
        assert resp is not None and resp.status == 200, name
        assert page.locator("header a.on").count() == 1 and page.locator("h1").inner_text()
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    page.goto(gw.base + "/steps/" + seen["unverified"])
    page.screenshot(path=str(out / "step.png"), full_page=True)
    page.goto(gw.base + "/runs/support-inbox")
    page.screenshot(path=str(out / "run.png"), full_page=True)
    page.goto(gw.base + "/clusters")
    assert "route ticket" in page.content() and "fewer than 20" in page.content()


def test_overview_numbers_match_the_ledger(day, page) -> None:
    gw, seen = day
    page.goto(gw.base + "/")
    led = Ledger(gw.ledger)
    try:
        steps, spend = led.query("SELECT COUNT(DISTINCT step_id), SUM(cost_usd) FROM attempts")[0]
        esc = led.query("SELECT COUNT(DISTINCT step_id) FROM attempts WHERE escalated=1")[0][0]
    finally:
        led.close()
    assert card(page, "steps") == str(steps) == str(len(seen["steps"]))
    assert card(page, "spend") == f"${spend:.6f}".rstrip("0").rstrip(".")
    assert card(page, "escalated") == f"{100 * esc / steps:.1f}%"
    assert page.locator("svg.chart").count() == 4
    # a bar's tooltip carries its exact count: the bars of one hour add up to the steps
    titles = page.locator("svg.chart").first.locator("rect title").all_text_contents()
    assert sum(int(t.rsplit(": ", 1)[1]) for t in titles) == steps


def test_click_from_a_run_to_a_step_and_its_attempts(day, page) -> None:
    gw, seen = day
    page.goto(gw.base + "/")
    page.click("header >> text=Runs")
    page.wait_for_url(re.compile(r"/runs$"))
    page.click("text=refunds")
    page.wait_for_url(re.compile(r"/runs/refunds$"))
    page.click(f"text={seen['unverified']}")
    page.wait_for_url(re.compile(re.escape(seen["unverified"]) + "$"))
    led = Ledger(gw.ledger)
    try:
        rows = led.query("SELECT model, tier, tokens_in, cost_usd FROM attempts WHERE step_id=? ORDER BY attempt",
                         (seen["unverified"],))
    finally:
        led.close()
    table = page.locator("h2:has-text('Attempts') + table")
    body = table.locator("tr").all_inner_texts()[1:]
    assert len(body) == len(rows) == 3
    for text, (model, tier, tin, _cost) in zip(body, rows):
        cells = text.split("\t")
        assert cells[1] == model and cells[2] == tier and cells[3] == f"{tin:,}"
    assert "1 PERSON" in page.inner_text("main") and "Jane" not in page.content()


def test_the_filter_form_narrows_the_view(day, page) -> None:
    gw, seen = day
    page.goto(gw.base + "/steps")
    page.select_option("select[name=kind]", "classification")
    page.select_option("select[name=range]", "1h")
    page.click("button:has-text('Apply')")
    page.wait_for_url(re.compile(r"kind=classification"))
    assert "range=1h" in page.url
    text = page.inner_text("main")
    assert "2 step(s)" in text and seen["escalated"] in text and seen["blocked"] not in text


def test_a_keyed_gateway_asks_for_the_key_then_shows_its_steps(scripted_gateway, browser) -> None:
    import httpx

    from .conftest import create_key

    gw = scripted_gateway()
    key = create_key(gw, "ops", "--admin")
    step = httpx.post(gw.base + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": "auto", "messages": [{"role": "user", "content": "hello"}]}).headers["x-smallfleet-step-id"]
    ctx = browser.new_context()
    pg = ctx.new_page()
    try:
        resp = pg.goto(gw.base + "/steps")
        assert resp is not None and resp.status == 401 and pg.locator("input[name=key]").count() == 1
        pg.fill("input[name=key]", "sf-wrong")
        pg.click("button[type=submit]")
        assert "not valid" in pg.inner_text("main")
        pg.fill("input[name=key]", key)
        pg.click("button[type=submit]")
        pg.wait_for_url(re.compile(r"/$"))
        pg.click("header >> text=Steps")
        assert step in pg.inner_text("main")
    finally:
        ctx.close()
