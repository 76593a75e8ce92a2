"""A tool-loop suite for small models: 13 executable tools over a small deterministic world, 50 tasks.

Each task is what a user would ask an agent that holds *all* the tools; it needs one to four tool
calls and is scored on what the agent left behind: the world's final state (an event added, an order
cancelled, a ticket opened, an e-mail sent, with the right fields) and/or values the final answer
must carry (numbers compared after rounding, words case-insensitively). Nothing is scored on the
path taken, so an agent that finds another correct route still succeeds.

Not a benchmark itself: the ``suite`` workload of bench/agents.py. ``python bench/agent_suite.py`` lists the
tasks (checking there are at least 10 tools and 50 tasks).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

S, N = {"type": "string"}, {"type": "number"}


def _tool(name: str, desc: str, props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": props, "required": list(props) if required is None else required}}}


TOOLS: list[dict[str, Any]] = [
    _tool("get_weather", "Current weather in a city.", {"city": S}),
    _tool("convert_currency", "Convert an amount of money between currencies (ISO codes like USD, EUR, GBP, JPY, CHF).",
          {"amount": N, "from_currency": S, "to_currency": S}),
    _tool("convert_units", "Convert a quantity between units: km/mi, kg/lb, c/f (temperature), l/gal.",
          {"value": N, "from_unit": S, "to_unit": S}),
    _tool("get_time", "Current local time in an IANA timezone such as Europe/Paris.", {"timezone": S}),
    _tool("list_events", "The user's calendar events on a date (YYYY-MM-DD).", {"date": S}),
    _tool("add_event", "Add an event to the user's calendar.", {"date": S, "time": S, "title": S}),
    _tool("get_order", "Look up an order by its id (like ORD-1001): status, items, total, delivery city.", {"order_id": S}),
    _tool("cancel_order", "Cancel an order that has not shipped yet.", {"order_id": S, "reason": S}),
    _tool("create_ticket", "Open a support ticket.", {"title": S, "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                                                     "order_id": S}, ["title", "priority"]),
    _tool("search_products", "Search the product catalogue; returns matching products with sku and price in USD.", {"query": S}),
    _tool("check_stock", "Units in stock for a product sku (like SKU-204).", {"sku": S}),
    _tool("lookup_contact", "Find a person in the user's contacts: e-mail, phone, city.", {"name": S}),
    _tool("send_email", "Send an e-mail.", {"to": S, "subject": S, "body": S}),
]

RATES_TO_USD = {"USD": 1.0, "EUR": 1.08, "GBP": 1.25, "JPY": 0.0067, "CHF": 1.12}
WEATHER = {"madrid": (31, "clear"), "london": (9, "rain"), "paris": (14, "cloudy"), "lyon": (12, "cloudy"), "oslo": (-3, "snow"),
           "tokyo": (18, "clear"), "chicago": (4, "windy"), "berlin": (7, "rain"), "lisbon": (22, "sunny"), "denver": (-1, "snow")}
TIMES = {"europe/paris": "15:40", "asia/tokyo": "23:40", "america/chicago": "08:40", "europe/london": "14:40",
         "america/new_york": "09:40", "europe/berlin": "15:40", "america/denver": "07:40", "europe/lisbon": "14:40"}
CITY_TZ = {"paris": "Europe/Paris", "tokyo": "Asia/Tokyo", "chicago": "America/Chicago", "london": "Europe/London",
           "berlin": "Europe/Berlin", "denver": "America/Denver", "lisbon": "Europe/Lisbon"}


def _world() -> dict[str, Any]:
    return {
        "orders": {
            "ORD-1001": {"status": "shipped", "items": ["desk lamp"], "total_usd": 49.0, "city": "Lyon", "customer": "Ana Ruiz"},
            "ORD-1002": {"status": "processing", "items": ["office chair"], "total_usd": 189.0, "city": "Berlin", "customer": "Tom Berg"},
            "ORD-1003": {"status": "delayed", "items": ["monitor arm"], "total_usd": 75.5, "city": "Denver", "customer": "Lee Park",
                         "days_late": 6},
            "ORD-1004": {"status": "delivered", "items": ["keyboard"], "total_usd": 120.0, "city": "Lisbon", "customer": "Ana Ruiz"},
            "ORD-1005": {"status": "processing", "items": ["webcam", "usb hub"], "total_usd": 88.0, "city": "Oslo", "customer": "Mia Holm"},
            "ORD-1006": {"status": "delayed", "items": ["standing desk"], "total_usd": 420.0, "city": "Chicago", "customer": "Tom Berg",
                         "days_late": 3},
        },
        "products": {
            "SKU-201": {"name": "Arc desk lamp", "price_usd": 49.0, "stock": 12},
            "SKU-202": {"name": "Halo ceiling light", "price_usd": 135.0, "stock": 0},
            "SKU-203": {"name": "Ergo office chair", "price_usd": 189.0, "stock": 4},
            "SKU-204": {"name": "Flex monitor arm", "price_usd": 75.5, "stock": 31},
            "SKU-205": {"name": "Quiet mechanical keyboard", "price_usd": 120.0, "stock": 7},
            "SKU-206": {"name": "Oak standing desk", "price_usd": 420.0, "stock": 2},
        },
        "contacts": {
            "ana ruiz": {"email": "ana.ruiz@example.com", "phone": "+34 600 111 222", "city": "Madrid"},
            "tom berg": {"email": "tom.berg@example.com", "phone": "+49 151 333 444", "city": "Berlin"},
            "lee park": {"email": "lee.park@example.com", "phone": "+1 303 555 0199", "city": "Denver"},
            "mia holm": {"email": "mia.holm@example.com", "phone": "+47 912 34 567", "city": "Oslo"},
            "sam okafor": {"email": "sam.okafor@example.com", "phone": "+44 7700 900123", "city": "London"},
        },
        "events": {"2026-12-04": [{"time": "10:00", "title": "Dentist"}], "2026-12-07": [{"time": "09:30", "title": "Team standup"},
                                                                                        {"time": "14:00", "title": "Budget review"}]},
        "tickets": [], "outbox": [], "cancelled": [],
    }


def _num(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


class World:
    """The tools' back-end: deterministic answers; actions change the state the tasks are scored on."""

    def __init__(self) -> None:
        self.s = _world()

    def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        fn = getattr(self, "t_" + name, None) if re.fullmatch(r"[a-z_]{1,40}", name or "") else None
        if fn is None:
            return {"error": f"unknown tool {name!r}"}
        try:
            return fn(**args)  # type: ignore[no-any-return]
        except TypeError as e:
            return {"error": f"bad arguments for {name}: {e}"}

    def t_get_weather(self, city: str) -> dict[str, Any]:
        w = WEATHER.get(str(city).split(",")[0].strip().lower())
        return {"city": city, "temp_c": w[0], "sky": w[1]} if w else {"error": f"no weather for {city}"}

    def t_convert_currency(self, amount: Any, from_currency: str, to_currency: str) -> dict[str, Any]:
        a, f, t = _num(amount), str(from_currency).upper(), str(to_currency).upper()
        if a is None or f not in RATES_TO_USD or t not in RATES_TO_USD:
            return {"error": "unknown amount or currency; use ISO codes like USD, EUR, GBP, JPY, CHF"}
        return {"amount": round(a * RATES_TO_USD[f] / RATES_TO_USD[t], 2), "currency": t}

    def t_convert_units(self, value: Any, from_unit: str, to_unit: str) -> dict[str, Any]:
        v, f, t = _num(value), str(from_unit).lower().rstrip("s"), str(to_unit).lower().rstrip("s")
        alias = {"kilometre": "km", "kilometer": "km", "mile": "mi", "kilogram": "kg", "pound": "lb", "celsiu": "c", "fahrenheit": "f",
                 "litre": "l", "liter": "l", "gallon": "gal", "°c": "c", "°f": "f"}
        f, t = alias.get(f, f), alias.get(t, t)
        conv: dict[tuple[str, str], Callable[[float], float]] = {
            ("km", "mi"): lambda x: x / 1.609344, ("mi", "km"): lambda x: x * 1.609344, ("kg", "lb"): lambda x: x * 2.20462,
            ("lb", "kg"): lambda x: x / 2.20462, ("c", "f"): lambda x: x * 9 / 5 + 32, ("f", "c"): lambda x: (x - 32) * 5 / 9,
            ("l", "gal"): lambda x: x / 3.78541, ("gal", "l"): lambda x: x * 3.78541}
        if v is None or (f, t) not in conv:
            return {"error": "unsupported conversion; units: km, mi, kg, lb, c, f, l, gal"}
        return {"value": round(conv[(f, t)](v), 2), "unit": t}

    def t_get_time(self, timezone: str) -> dict[str, Any]:
        t = TIMES.get(str(timezone).lower())
        return {"timezone": timezone, "time": t} if t else {"error": f"unknown timezone {timezone!r}; use IANA names like Europe/Paris"}

    def t_list_events(self, date: str) -> dict[str, Any]:
        return {"date": date, "events": copy.deepcopy(self.s["events"].get(str(date), []))}

    def t_add_event(self, date: str, time: str, title: str) -> dict[str, Any]:
        self.s["events"].setdefault(str(date), []).append({"time": str(time), "title": str(title)})
        return {"status": "added", "date": date, "time": time, "title": title}

    def _order(self, order_id: str) -> dict[str, Any] | None:
        return self.s["orders"].get(str(order_id).strip().upper())  # type: ignore[no-any-return]

    def t_get_order(self, order_id: str) -> dict[str, Any]:
        o = self._order(order_id)
        return {"order_id": str(order_id).upper(), **{k: v for k, v in o.items() if k != "customer"}, "customer": o["customer"]} \
            if o else {"error": f"no order {order_id}"}

    def t_cancel_order(self, order_id: str, reason: str = "") -> dict[str, Any]:
        o = self._order(order_id)
        if o is None:
            return {"error": f"no order {order_id}"}
        if o["status"] != "processing":
            return {"error": f"order {order_id} is {o['status']} and can no longer be cancelled"}
        o["status"] = "cancelled"
        self.s["cancelled"].append(str(order_id).upper())
        return {"order_id": str(order_id).upper(), "status": "cancelled", "refund_usd": o["total_usd"]}

    def t_create_ticket(self, title: str, priority: str = "normal", order_id: str | None = None) -> dict[str, Any]:
        tid = f"T-{5501 + len(self.s['tickets'])}"
        self.s["tickets"].append({"id": tid, "title": str(title), "priority": str(priority), "order_id": order_id})
        return {"ticket_id": tid, "status": "open", "priority": priority}

    def t_search_products(self, query: str) -> dict[str, Any]:
        words = [w for w in re.findall(r"[a-z]+", str(query).lower()) if len(w) > 2]
        hits = [{"sku": k, "name": p["name"], "price_usd": p["price_usd"]} for k, p in self.s["products"].items()
                if any(w.rstrip("s") in p["name"].lower() for w in words)]
        return {"query": query, "results": hits}

    def t_check_stock(self, sku: str) -> dict[str, Any]:
        p = self.s["products"].get(str(sku).strip().upper())
        return {"sku": str(sku).upper(), "in_stock": p["stock"]} if p else {"error": f"no product {sku}"}

    def t_lookup_contact(self, name: str) -> dict[str, Any]:
        key = " ".join(str(name).lower().split())
        hit = self.s["contacts"].get(key) or next((v | {"name": k} for k, v in self.s["contacts"].items() if key and key in k), None)
        return {"name": name, **hit} if hit else {"error": f"no contact named {name}"}

    def t_send_email(self, to: str, subject: str, body: str) -> dict[str, Any]:
        self.s["outbox"].append({"to": str(to), "subject": str(subject), "body": str(body)})
        return {"status": "sent", "to": to}


# --- scoring -------------------------------------------------------------------------------------

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def carries(answer: str, want: str | float) -> bool:
    """Whether the answer states ``want``: a number to within rounding (110.4 ≈ "110.40", "110"), else the words."""
    if isinstance(want, (int, float)):
        for m in _NUM.findall(answer or ""):
            x = _num(m.replace(",", ""))
            if x is not None and abs(x - want) <= max(0.051, abs(want) * 0.005):
                return True
        return False
    return want.lower() in (answer or "").lower()


@dataclass
class Task:
    id: str
    prompt: str
    calls: int  # tool calls a direct solution needs
    answer: tuple[str | float, ...] = ()  # values the final answer must carry
    state: Callable[[dict[str, Any]], bool] | None = None  # predicate on the world's final state
    state_desc: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def score(self, world: World, answer: str) -> tuple[bool, str]:
        missing = [str(w) for w in self.answer if not carries(answer, w)]
        if missing:
            return False, "answer lacks " + ", ".join(missing)
        if self.state is not None and not self.state(world.s):
            return False, "state: " + self.state_desc
        return True, ""


def _ticket(pred: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda s: any(pred(t) for t in s["tickets"])


def _mail(to: str, *words: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: any(m["to"].lower() == to and all(w.lower() in (m["subject"] + " " + m["body"]).lower() for w in words)
                         for m in s["outbox"])


def _event(date: str, time: str, word: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: any(e["time"].lstrip("0") == time.lstrip("0") and word.lower() in e["title"].lower()
                         for e in s["events"].get(date, []))


def _only_cancelled(*oids: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: sorted(s["cancelled"]) == sorted(oids)


T = Task
TASKS: list[Task] = [
    # one lookup, answered in words
    T("w1", "What's the weather in Madrid right now?", 1, (31,)),
    T("w2", "Is it snowing in Oslo?", 1, ("snow",)),
    T("w3", "How warm is it in Lisbon today?", 1, (22,)),
    T("c1", "How much is 120 US dollars in euros?", 1, (111.11,)),
    T("c2", "Convert 250 GBP to USD.", 1, (312.5,)),
    T("c3", "What is 5000 JPY in Swiss francs?", 1, (29.91,)),
    T("u1", "How many kilometres is 26.2 miles?", 1, (42.16,)),
    T("u2", "Convert 70 kg to pounds.", 1, (154.32,)),
    T("u3", "What is 100 degrees Fahrenheit in Celsius?", 1, (37.78,)),
    T("t1", "What time is it in Tokyo right now?", 1, ("23:40",)),
    T("t2", "What's the current time in Chicago?", 1, ("08:40",)),
    T("o1", "What's the status of my order ORD-1001?", 1, ("shipped",)),
    T("o2", "How much did order ORD-1005 cost?", 1, (88,)),
    T("s1", "How many units of SKU-204 are in stock?", 1, (31,)),
    T("k1", "What is Lee Park's phone number?", 1, ("555 0199",)),
    T("e1", "What's on my calendar on 2026-12-04?", 1, ("Dentist",)),
    T("e2", "What meetings do I have on 2026-12-07?", 1, ("standup", "budget review")),
    # one action, scored on the state
    T("a1", "Add 'Dinner with Ana' to my calendar on 2026-12-10 at 19:30.", 1, (), _event("2026-12-10", "19:30", "dinner"), "event added"),
    T("a2", "Put a 'Flu shot' appointment in my calendar for 2026-12-12 at 08:15.", 1, (), _event("2026-12-12", "8:15", "flu"), "event added"),
    T("a3", "Cancel my order ORD-1002, I changed my mind.", 1, (), _only_cancelled("ORD-1002"), "ORD-1002 cancelled"),
    T("a4", "Open a high priority support ticket titled 'Login page down'.", 1, (),
      _ticket(lambda t: t["priority"] == "high" and "login" in t["title"].lower()), "high ticket about login"),
    T("a5", "Create a low priority ticket: 'Typo on the pricing page'.", 1, (),
      _ticket(lambda t: t["priority"] == "low" and "typo" in t["title"].lower()), "low ticket about the typo"),
    T("a6", "Send an e-mail to sam.okafor@example.com with subject 'Lunch' saying that Friday at noon works for me.", 1, (),
      _mail("sam.okafor@example.com", "lunch", "friday"), "mail to Sam"),
    T("a7", "Cancel order ORD-1005 because it was ordered twice.", 1, (), _only_cancelled("ORD-1005"), "ORD-1005 cancelled"),
    T("a8", "Open a normal priority ticket titled 'Invoice missing' for order ORD-1004.", 1, (),
      _ticket(lambda t: t["priority"] == "normal" and (t["order_id"] or "").upper() == "ORD-1004"), "ticket on ORD-1004"),
    # two calls, the second needs the first's result
    T("m1", "What's the weather where my order ORD-1001 is being delivered?", 2, (12,)),
    T("m2", "What time is it in the city Lee Park lives in?", 2, ("07:40",)),
    T("m3", "How many Flex monitor arms do we have in stock?", 2, (31,)),
    T("m4", "How much does the Oak standing desk cost in euros?", 2, (388.89,)),
    T("m5", "Is the Halo ceiling light in stock?", 2, (), None, "", ("no-number",)),
    T("m6", "E-mail Tom Berg that his chair is on the way, subject 'Your chair'.", 2, (), _mail("tom.berg@example.com", "chair"),
      "mail to Tom's address"),
    T("m7", "What's the weather in Mia Holm's city?", 2, (-3,)),
    T("m8", "My order ORD-1006 is late. Open a high priority ticket about it that names the order.", 1, (),
      _ticket(lambda t: t["priority"] == "high" and ("ORD-1006" in (t["order_id"] or "").upper() or "ORD-1006" in t["title"].upper())),
      "high ticket naming ORD-1006"),
    T("m9", "How much is order ORD-1002 in British pounds?", 2, (151.2,)),
    T("m10", "What's the phone number of the customer of order ORD-1003?", 2, ("555 0199",)),
    T("m11", "Convert the temperature in London to Fahrenheit.", 2, (48.2,)),
    T("m12", "Check the status of ORD-1002 and cancel it if it has not shipped yet.", 2, (), _only_cancelled("ORD-1002"),
      "ORD-1002 cancelled"),
    T("m13", "Check the status of ORD-1001 and cancel it if it has not shipped yet.", 1, (), _only_cancelled(), "nothing cancelled"),
    T("m14", "Send Ana Ruiz an e-mail with subject 'Keyboard' asking whether she likes the keyboard she ordered.", 2, (),
      _mail("ana.ruiz@example.com", "keyboard"), "mail to Ana's address"),
    T("m15", "Do I have anything on 2026-12-07 at 14:00? Tell me what it is.", 1, ("budget review",)),
    # three or four calls
    T("l1", "Look up order ORD-1003; if it is delayed, open a high priority ticket for it and tell me how many days late it is.", 2,
      (6,), _ticket(lambda t: t["priority"] == "high" and ("ORD-1003" in (t["order_id"] or "").upper() or "ORD-1003" in t["title"].upper())),
      "high ticket on ORD-1003"),
    T("l2", "Find the customer of order ORD-1002 and e-mail them (subject 'Order update') that the order is being processed.", 3, (),
      _mail("tom.berg@example.com", "process"), "mail to Tom"),
    T("l3", "What's the weather in Madrid and in Berlin? Tell me both temperatures.", 2, (31, 7)),
    T("l4", "Is the Ergo office chair in stock, and what does it cost in euros?", 3, (4, 175.0)),
    T("l5", "Add 'Call with Lee' on 2026-12-07 at 16:00, unless something is already scheduled at that time. Then tell me my full "
            "schedule that day.", 2, ("standup", "budget review"), _event("2026-12-07", "16:00", "lee"), "event added"),
    T("l6", "Order ORD-1006: look it up, and e-mail its customer (subject 'Delay') an apology that names the number of days it is late.", 3,
      (), _mail("tom.berg@example.com", "3"), "mail to Tom naming 3 days"),
    T("l7", "What time is it in Berlin and what's the weather there?", 2, ("15:40", 7)),
    T("l8", "Cancel whichever of my orders ORD-1002 and ORD-1005 can still be cancelled, and tell me the refunds.", 2, (189, 88),
      _only_cancelled("ORD-1002", "ORD-1005"), "both cancelled"),
    T("l9", "Convert 10 miles to km and 10 kg to pounds.", 2, (16.09, 22.05)),
    T("l10", "Where is order ORD-1004 delivered, what's the weather there, what time is it there, and what did the order cost in euros?",
      4, (22, "14:40", 111.11)),
]


def _m5_ok(world: World, answer: str) -> tuple[bool, str]:
    text = (answer or "").lower()
    ok = any(w in text for w in ("not in stock", "out of stock", "0 units", "no units", "zero", "none in stock", "sold out", "not available",
                                 "isn't in stock", "is not currently in stock", "currently out"))
    return ok, "" if ok else "answer does not say it is out of stock"


SPECIAL: dict[str, Callable[[World, str], tuple[bool, str]]] = {"m5": _m5_ok}


def score(task: Task, world: World, answer: str) -> tuple[bool, str]:
    return SPECIAL[task.id](world, answer) if task.id in SPECIAL else task.score(world, answer)


SYSTEM = ("You are a helpful assistant with tools. Call a tool whenever it can get you a fact or do what the user asked; use "
          "what the tools return; when the task is done, answer the user briefly with the figures they asked for.")

if __name__ == "__main__":
    from _common import parser

    parser(__doc__).parse_args()
    assert len(TOOLS) >= 10 and len(TASKS) >= 50, (len(TOOLS), len(TASKS))
    print(f"{len(TOOLS)} tools, {len(TASKS)} tasks, calls per task: "
          + json.dumps({n: sum(1 for t in TASKS if t.calls == n) for n in (1, 2, 3, 4)}))
    for t in TASKS:
        print(f"{t.id:<4} {t.calls}  {t.prompt}")
