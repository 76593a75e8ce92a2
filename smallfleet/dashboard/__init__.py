"""The dashboard: what the fleet did, over time, per run and per step, from the ledger.

``Dashboard(ledger, config).page(route, param, query, account)`` → ``(status, html)``. The gateway
serves it with the same keys as the API (a key that is not an admin sees its own steps only); it
reads the ledger only, holds no state, and shows no personal data (the ledger holds none: reasons
and errors are scrubbed before they are written, pseudonymised data is counted by type).
"""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from ..config import Config
from ..ledger import Ledger
from ..report import counterfactual_basis
from ..step import StepKind
from . import pages, queries
from .queries import Filters, parse_filters

ROUTES = ("/", "/dashboard", "/runs", "/runs/{id}", "/steps", "/steps/{id}", "/unverified", "/tool-calls", "/injections",
          "/clusters")
MAX_QUERY = 4096  # bytes of query string a page reads


class Dashboard:
    def __init__(self, ledger: Ledger | None, config: Config) -> None:
        self.ledger = ledger
        self.config = config
        self.kinds = [k.value for k in StepKind] + ["memory"]

    def page(self, route: str, param: str, query: bytes, account: str | None = None) -> tuple[int, str]:
        """The page for a dashboard route; ``account`` limits it to one API key's steps (None: all)."""
        if self.ledger is None:
            return 200, pages.layout("Overview", "/", '<p class="muted">No ledger is configured, so there is nothing to show '
                                                      "([ledger] path or SMALLFLEET_LEDGER).</p>")
        if len(query) > MAX_QUERY:
            return 400, pages.error_page(400, f"the query string is over {MAX_QUERY} bytes.")
        params = parse_qs(query.decode("utf-8", "replace"), max_num_fields=32)
        try:
            f = parse_filters(params)
            page = int((params.get("page") or ["0"])[0])
            if not 0 <= page <= 10_000:
                raise ValueError("page is out of range")
        except ValueError as e:
            return 400, pages.error_page(400, f"{e}.")
        return self._route(route, param, f, page, params, account)

    def _route(self, route: str, param: str, f: Filters, page: int, params: dict[str, list[str]],
               account: str | None) -> tuple[int, str]:
        led = self.ledger
        assert led is not None
        tiers = list(self.config.tiers)
        if route == "/steps/{id}":
            v = queries.step(led, param[: queries.MAX_ID], account)
            if v is None:
                return 404, pages.error_page(404, "no such step in the ledger (or not one of this key's).")
            return 200, pages.step_page(v)
        if route == "/runs/{id}":
            run_id = param[: queries.MAX_ID]
            sc = queries.scope(led, Filters(range="all", run=run_id), account, tiers)
            if not sc.steps:
                return 404, pages.error_page(404, "no such run in the ledger (or not one of this key's).")
            rows = queries.runs(led, sc)
            return 200, pages.run_page(run_id, sc, rows[0] if rows else None)
        if route == "/clusters":
            return 200, self._clusters()
        sc = queries.scope(led, f, account, tiers)
        if route in ("/", "/dashboard"):
            size, buckets = queries.over_time(sc)
            return 200, pages.overview(sc, size, buckets, queries.by(sc.steps, "kind"), queries.by(sc.steps, "tier"),
                                       queries.by(sc.steps, "model"), queries.privacy_totals(led, f, account),
                                       queries.guard_counts(led, sc), counterfactual_basis(self.config), self.kinds, tiers)
        if route == "/runs":
            return 200, pages.runs_page(sc, queries.runs(led, sc), self.kinds, tiers, page)
        if route == "/steps":
            return 200, pages.steps_page(sc, self.kinds, tiers, page)
        if route == "/unverified":
            bad = queries.Scope([s for s in sc.steps if s.outcome in ("unverified", "reported failed")], sc.truncated, f, tiers)
            return 200, pages.steps_page(
                bad, self.kinds, tiers, page, "Unverified answers", "/unverified", queries.failing_checks(led, f, account),
                "<p>Steps whose final answer still failed a deciding check (the client was told: "
                "<code>x-smallfleet-verdict: fail:…</code>), or whose task the agent reported failed.</p>")
        if route in ("/tool-calls", "/injections"):
            tool = (params.get("tool") or [""])[0][: queries.MAX_ID] or None
            events = queries.guard_events(led, sc, injections=route == "/injections")
            return 200, pages.guard_page(sc, events, self.kinds, tiers, route == "/injections", tool, page)
        return 404, pages.error_page(404, "no such page.")

    def _clusters(self) -> str:
        path = self.config.learn.routes_path  # the operator's file, never a path a request names
        if not path.is_file():
            return pages.clusters_page(None, str(path), None)
        try:
            data = orjson.loads(path.read_bytes()[: 64 << 20])
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            return pages.clusters_page(None, str(path), f"the routing table {path} cannot be read ({e}); "
                                                        "`smallfleet learn apply` writes it again.")
        return pages.clusters_page(data, str(path), None)


__all__ = ["ROUTES", "Dashboard", "Filters", "parse_filters"]
