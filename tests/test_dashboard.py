"""The dashboard's pages over a real ledger written by a real gateway (scripted models): the numbers on
each page are the ledger's, filters narrow them, bad parameters are 4xx, a key sees its own steps only,
and no page shows personal data. The same pages in a real browser: test_dashboard_browser.py."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from smallfleet.dashboard import charts
from smallfleet.dashboard.queries import parse_filters
from smallfleet.ledger import Ledger
from smallfleet.report import build_report

from .conftest import create_key
from .dashboard_day import PRIVATE, REMOTE, populate


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory):
    from .conftest import ThreadGateway

    gw = ThreadGateway(tmp_path_factory.mktemp("dash"), extra=REMOTE)
    seen = populate(gw)
    yield gw, seen
    gw.stop()


def get(gw, path: str, **kw) -> httpx.Response:
    return httpx.get(gw.base + path, timeout=30, **kw)


def cell(page: str, label: str) -> str:
    """A headline card's value by its label."""
    m = re.search(r'<div class="v">([^<]*)</div><div class="k">' + re.escape(label) + "</div>", page)
    assert m, label
    return m.group(1)


def test_overview_numbers_are_the_ledgers(day) -> None:
    gw, seen = day
    page = get(gw, "/").text
    led = Ledger(gw.ledger)
    try:
        rep = build_report(led, gw.cfg)
        esc_steps = led.query("SELECT COUNT(DISTINCT step_id) FROM attempts WHERE escalated=1")[0][0]
    finally:
        led.close()
    assert cell(page, "steps") == str(rep.steps) == str(len(seen["steps"]))
    assert cell(page, "saved at parity") == f"{rep.parity_savings_pct:.1f}%"
    assert cell(page, "saved") == f"{rep.savings_pct:.1f}%"
    assert cell(page, "verified") == str(rep.verified_steps) and cell(page, "unverified") == str(rep.unverified_steps)
    assert cell(page, "reported failed") == str(rep.failed_steps)
    assert cell(page, "escalated") == f"{100 * esc_steps / rep.steps:.1f}%"
    assert page.count("<svg") == 4  # steps per tier, spend, savings, escalation rate
    assert "PERSON" in page and "EMAIL_ADDRESS" in page  # what was pseudonymised, by type


def test_runs_steps_and_the_lists(day) -> None:
    gw, seen = day
    runs = get(gw, "/runs").text
    assert "nightly-report" in runs and "support-inbox" in runs and "refunds" in runs
    assert "reported success" in runs and "reported failed" in runs and "1 unverified" in runs
    run = get(gw, "/runs/nightly-report")
    assert run.status_code == 200 and all(s in run.text for s in seen["runs"]["nightly-report"])
    assert seen["unverified"] not in run.text
    steps = get(gw, "/steps").text
    assert all(s in steps for s in seen["steps"])
    unverified = get(gw, "/unverified").text
    assert seen["unverified"] in unverified and "label_in_set: the answer" in unverified
    assert seen["escalated"] in unverified  # verified, but its run was reported failed
    assert not any(s in unverified for s in seen["runs"]["nightly-report"])
    calls = get(gw, "/tool-calls").text
    assert seen["blocked"] in calls and "send_email" in calls and "untrusted_destination" in calls
    inj = get(gw, "/injections").text
    assert seen["blocked"] in inj and "1 event(s)" in inj and "tool" in inj
    clusters = get(gw, "/clusters").text
    assert "No learned routes yet" in clusters and "learn apply" in clusters


def test_a_steps_page_holds_its_attempts_checks_and_guard(day) -> None:
    gw, seen = day
    page = get(gw, "/steps/" + seen["escalated"]).text
    assert page.count("— its checks") == 2 and "label_in_set" in page and "escalated from small" in page
    priv = get(gw, "/steps/" + seen["unverified"]).text
    assert priv.count("— its checks") == 3 and "Sent to a remote model pseudonymised" in priv and "1 PERSON" in priv
    blocked = get(gw, "/steps/" + seen["blocked"]).text
    assert "untrusted_destination" in blocked and "injection_flagged" in blocked and "suspicious" in blocked


def test_no_page_shows_personal_data(day) -> None:
    gw, seen = day
    pages = ["/", "/runs", "/steps", "/unverified", "/tool-calls", "/injections", "/runs/refunds", "/steps/" + seen["unverified"]]
    for p in pages:
        text = get(gw, p).text
        for value in ("Jane", "jane.doe", "415 555", "kettle"):
            assert value not in text, (p, value)
    assert "Jane Doe" in PRIVATE  # the request did carry it


def test_filters_narrow_every_view(day) -> None:
    gw, seen = day
    assert cell(get(gw, "/?run=nightly-report").text, "steps") == "4"
    assert cell(get(gw, "/?kind=classification").text, "steps") == "2"
    assert cell(get(gw, "/?tier=frontier").text, "steps") == "1"
    assert cell(get(gw, "/?range=1h").text, "steps") == str(len(seen["steps"]))
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert cell(get(gw, f"/?from={today}&to={today}").text, "steps") == str(len(seen["steps"]))
    assert cell(get(gw, "/?from=2001-01-01&to=2001-01-02").text, "steps") == "0"
    only = get(gw, "/steps?kind=reshaping").text
    assert seen["blocked"] in only and seen["escalated"] not in only


@pytest.mark.parametrize("query, status, words", [
    ("/?range=forever", 400, "range must be one of"),
    ("/?from=2026-13-01", 400, "from must be a date"),
    ("/?from=2026-12-02&to=2026-12-01", 400, "to must not be before from"),
    ("/steps?page=-1", 400, "page"),
    ("/steps?page=abc", 400, "invalid literal"),
    ("/?run=" + "x" * 300, 400, "longer than 200"),
    ("/?" + "a=b&" * 2000, 400, "query string is over"),
    ("/steps/step_nope", 404, "no such step"),
    ("/runs/never-ran", 404, "no such run"),
])
def test_bad_parameters_are_4xx_pages(day, query: str, status: int, words: str) -> None:
    gw, _ = day
    r = get(gw, query)
    assert r.status_code == status and words in r.text and "<html" in r.text


def test_a_key_sees_only_its_own_steps(scripted_gateway, tmp_path) -> None:
    gw = scripted_gateway(extra=REMOTE)

    alice, admin = create_key(gw, "alice"), create_key(gw, "ops", "--admin")
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    mine = httpx.post(gw.base + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {alice}"}, timeout=30)
    other = httpx.post(gw.base + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {admin}"}, timeout=30)
    a_step, o_step = mine.headers["x-smallfleet-step-id"], other.headers["x-smallfleet-step-id"]
    assert get(gw, "/steps").status_code == 401  # the sign-in form
    as_alice = {"cookies": {"smallfleet_key": alice}}
    page = get(gw, "/steps", **as_alice).text
    assert a_step in page and o_step not in page
    assert get(gw, "/steps/" + o_step, **as_alice).status_code == 404
    assert get(gw, "/steps/" + a_step, **as_alice).status_code == 200
    everything = get(gw, "/steps", cookies={"smallfleet_key": admin}).text
    assert a_step in everything and o_step in everything
    kid = alice.split("-")[1]
    assert o_step not in get(gw, f"/steps?key={kid}", cookies={"smallfleet_key": admin}).text  # the admin filters by key


def test_filters_parse_bounded() -> None:
    now = 1_800_000_000.0
    f = parse_filters({"range": ["7d"], "run": [" r1 "]}, now)
    assert f.since == now - 7 * 86400 and f.run == "r1" and f.until is None
    f = parse_filters({"from": ["2026-12-01"], "to": ["2026-12-01"]}, now)
    assert f.range == "custom" and f.until - f.since == 86400 and "from=2026-12-01" in f.query()
    assert parse_filters({}, now).range == "24h"
    with pytest.raises(ValueError):
        parse_filters({"to": ["yesterday"]}, now)


def test_charts_are_well_formed_svg_with_exact_values_in_titles() -> None:
    svg = charts.stacked_bars("steps", ["09:00", "10:00"], [("small", [3.0, 0.0]), ("large & <frontier>", [1.0, 2.0])])
    root = ET.fromstring(svg)
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")] or [t.text for t in root.iter("title")]
    assert "09:00 · small: 3" in titles and "10:00 · large & <frontier>: 2" in titles
    line = charts.lines("rate", ["a", "b", "c"], [("x", [10.0, None, 30.0])], ymax=100.0)
    ET.fromstring(line)
    assert line.count("<circle") == 2  # the gap is no point


def test_the_dashboard_reads_a_ledger_on_postgresql(pg_url, tmp_path) -> None:
    """The same queries on the shared ledger of replicas."""
    from smallfleet.privacy import new_key

    from .conftest import ThreadGateway

    key = new_key()
    gw = ThreadGateway(tmp_path, extra=REMOTE, env={"SMALLFLEET_DATABASE_URL": pg_url, "SMALLFLEET_SESSION_KEY": key,
                                                    "SMALLFLEET_MEMORY_KEY": key})
    try:
        seen = populate(gw)
        page = get(gw, "/").text
        assert cell(page, "steps") == str(len(seen["steps"]))
        assert seen["unverified"] in get(gw, "/unverified").text
        assert "1 PERSON" in get(gw, "/steps/" + seen["unverified"]).text
    finally:
        gw.stop()


def test_an_empty_range_says_where_the_steps_are(day) -> None:
    gw, _ = day
    page = get(gw, "/?from=2001-01-01&to=2001-01-02").text
    assert "No steps in this range" in page and 'href="/?range=all"' in page
