"""Dates and times for grounding: is a date or time a model put in a tool argument one the
conversation stated, in any common format, or a simple derivation of one ("tomorrow", "next Friday")?

Why: agents write dates in ISO form (``2024-03-05T14:00``) while people write "March 5th at 2pm"; a
grounding check that compares strings calls every such argument invented. Numeric dates are
ambiguous (03/05 is March 5 or May 3), so both readings count: the check is there to catch values that
come from nowhere, not to pick a locale.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta

from ..textcache import text_cached

_MONTHS = {m: i for i, names in enumerate((
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
    ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
    ("november", "nov"), ("december", "dec")), 1) for m in names}
_MONTH = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?:,?[ \t]+(?P<year>\d{4})(?![\d/.-]\d))?"  # on the same line, not the start of another date
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY = r"(?:(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)\.?|" + "|".join(_WEEKDAYS) + ")"

_ISO = re.compile(r"(?<!\d)(?P<year>\d{4})[-/.](?P<mon>\d{1,2})[-/.](?P<day>\d{1,2})(?!\d)")
_NUMERIC = re.compile(r"(?<![\d/.-])(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<year>\d{4}|\d{2})(?![\d/-])")
_MONTH_DAY = re.compile(rf"\b{_MONTH}\s+{_DAY}\b{_YEAR}", re.I)
_DAY_MONTH = re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}(?![a-z]){_YEAR}", re.I)
_CLOCK = re.compile(r"(?<![\d:])(?P<h>\d{1,2})(?::(?P<m>\d{2}))?(?::\d{2}(?:\.\d+)?)?\s*"
                    r"(?P<ampm>[ap]\.?m\.?(?![a-z]))?", re.I)
_RELATIVE = re.compile(r"\b(?:(?P<word>today|tonight|tomorrow|yesterday)|day after tomorrow|day before yesterday"
                       r"|in (?P<n>\d{1,3}|a|one|two|three|four|five|six|seven|ten|fourteen) (?P<unit>days?|weeks?)"
                       r"|(?:next|this|coming) (?P<span>week|weekend)|(?P<wd>" + "|".join(_WEEKDAYS) + r"))\b", re.I)
_SMALL = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "ten": 10, "fourteen": 14}
_ZONE = re.compile(r"(?:z|[+-]\d{2}:?\d{2})\s*$", re.I)
# what may surround a date in an argument besides a time: "Tue, 2024-03-05 at 14:00 UTC"
_FILLER = re.compile(rf"\b(?:{_WEEKDAY}|at|on|the|from|to|until|till|through|and|utc|gmt|z|t)\b|[\s,–-]+", re.I)


def _valid(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def _year(s: str | None) -> int | None:
    if not s:
        return None
    y = int(s)
    return 2000 + y if y < 100 else y


@dataclass
class Mentions:
    """The dates and clock times a text states."""

    # one entry per place a date is written: (span, its possible full dates, its month/day pairs when
    # written without a year); a numeric date has two readings (month/day and day/month)
    groups: dict[tuple[int, int], tuple[set[date], set[tuple[int, int]]]] = field(default_factory=dict)
    times: set[tuple[int, int]] = field(default_factory=set)

    def add(self, y: int | None, m: int, d: int, span: tuple[int, int]) -> None:
        if _valid(2000, m, d) is None or (y is not None and _valid(y, m, d) is None):
            return  # 2000 is a leap year: Feb 29 stays possible without a year
        full, month_days = self.groups.setdefault(span, (set(), set()))
        if y is None:
            month_days.add((m, d))
        else:
            full.add(date(y, m, d))

    @property
    def dates(self) -> set[date]:
        return {d for full, _ in self.groups.values() for d in full}

    @property
    def month_days(self) -> set[tuple[int, int]]:
        return {md for _, mds in self.groups.values() for md in mds}


def mentions(text: str) -> Mentions:
    """Every date (full or without a year) and clock time written in text."""
    out = Mentions()
    for mt in _ISO.finditer(text):
        out.add(int(mt["year"]), int(mt["mon"]), int(mt["day"]), mt.span())
    for mt in _NUMERIC.finditer(text):
        a, b, y = int(mt["a"]), int(mt["b"]), _year(mt["year"])
        out.add(y, a, b, mt.span())  # month/day
        out.add(y, b, a, mt.span())  # day/month
    for rx in (_MONTH_DAY, _DAY_MONTH):
        for mt in rx.finditer(text):
            out.add(_year(mt["year"]), _MONTHS[mt["mon"].lower()], int(mt["day"]), mt.span())
    spans = sorted(out.groups)
    starts = [a for a, _ in spans]
    for mt in _CLOCK.finditer(text):
        j = bisect_right(starts, mt.start()) - 1  # the date written here, if any, starts at or before it
        if j >= 0 and mt.start() < spans[j][1]:
            continue
        t = _clock(mt)
        if t is not None:
            out.times.add(t)
    low = text.lower()
    if "noon" in low or "midday" in low:
        out.times.add((12, 0))
    if "midnight" in low:
        out.times.add((0, 0))
    return out


def _clock(mt: re.Match[str]) -> tuple[int, int] | None:
    h, m, ampm = int(mt["h"]), mt["m"], (mt["ampm"] or "").lower()
    if not m and not ampm:
        return None  # a bare number is not a time
    if ampm:
        if not 1 <= h <= 12:
            return None
        h = h % 12 + (12 if ampm.startswith("p") else 0)
    return (h, int(m or 0)) if h < 24 and int(m or 0) < 60 else None


_NOW_CUE = re.compile(r"\b(?:today|current(?:ly)?|now)\b[^\n]{0,30}$", re.I)


def current_dates(text: str, m: Mentions) -> set[date]:
    """Dates the text gives as the current one: after "today is", "current date:", "now", or alone on
    a line (what a get-current-date tool returns)."""
    out: set[date] = set()
    for (a, b), (full, _) in m.groups.items():
        line_start = text.rfind("\n", 0, a) + 1
        line_end = text.find("\n", b)
        line = text[line_start:len(text) if line_end < 0 else line_end]
        if _NOW_CUE.search(text[max(line_start, a - 40):a]) or not line.replace(text[a:b], "").strip(" \t\"'.,:;"):
            out |= full
    return out


def _relative_terms(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Day offsets that relative words in text name ("tomorrow" = 1, "in 2 weeks" = 14, "next week" =
    any of 0..13) and the weekdays it names (0 = Monday)."""
    offsets: list[int] = []
    weekdays: list[int] = []
    for mt in _RELATIVE.finditer(text):
        g = mt.group(0).lower()
        if mt["word"]:
            offsets.append({"today": 0, "tonight": 0, "tomorrow": 1, "yesterday": -1}[mt["word"].lower()])
        elif g.startswith("day after"):
            offsets.append(2)
        elif g.startswith("day before"):
            offsets.append(-2)
        elif mt["n"]:
            n = _SMALL.get(mt["n"].lower()) or int(mt["n"])
            offsets.append(n * (7 if mt["unit"].lower().startswith("week") else 1))
        elif mt["span"]:
            offsets.extend(range(14))
        else:
            weekdays.append(_WEEKDAYS.index(mt["wd"].lower()))
    return tuple(sorted(set(offsets))), tuple(sorted(set(weekdays)))


def relative_dates(offsets: tuple[int, ...], weekdays: tuple[int, ...], references: set[date]) -> set[date]:
    """The dates those offsets and weekdays name, counted from each reference date (today, or a date the
    conversation gives as the current one). Lenient on purpose: "Friday" is the last one or either of
    the next two."""
    out: set[date] = set()
    for ref in references:
        out.update(ref + timedelta(days=k) for k in offsets)
        for wd in weekdays:
            ahead = (wd - ref.weekday()) % 7
            out.update({ref + timedelta(days=ahead), ref + timedelta(days=ahead + 7), ref - timedelta(days=7 - ahead or 7)})
    return out


@dataclass(frozen=True)
class TextDates:
    """What one text states about dates and times, before today's date is known."""

    dates: frozenset[date]
    month_days: frozenset[tuple[int, int]]
    times: frozenset[tuple[int, int]]
    current: frozenset[date]  # dates it gives as the current one
    offsets: tuple[int, ...]
    weekdays: tuple[int, ...]


@text_cached(max_entries=256, max_bytes=8 << 20)
def text_dates(text: str) -> TextDates:
    """Cached per text: agents send the same history with every step, so each message is read once."""
    m = mentions(text)
    offsets, weekdays = _relative_terms(text)
    return TextDates(frozenset(m.dates), frozenset(m.month_days), frozenset(m.times), frozenset(current_dates(text, m)),
                     offsets, weekdays)


# a date value: each date's readings (Mentions.groups) and the times it names
DateValue = tuple[list[tuple[set[date], set[tuple[int, int]]]], list[tuple[int, int]]]


def parse_value(s: str) -> DateValue | None:
    """A tool-argument string that is a date or a range of two, optionally with times: (each date's
    readings as in Mentions.groups, the times). None when the string is anything else (a date inside
    a sentence is not a date value)."""
    if len(s) > 60 or not any(c.isdigit() for c in s):
        return None
    m = mentions(s)
    if not m.groups or len(m.groups) > 2:
        return None
    rest = s
    for a, b in sorted(m.groups, reverse=True):
        rest = rest[:a] + " " + rest[b:]
    rest = _ZONE.sub("", rest)  # "+01:00" is an offset, not a time
    times = []
    for mt in reversed(list(_CLOCK.finditer(rest))):
        t = _clock(mt)
        if t is not None:
            times.append(t)
            rest = rest[:mt.start()] + " " + rest[mt.end():]
    if _FILLER.sub("", rest).strip():
        return None
    return list(m.groups.values()), times


def parse_time(s: str) -> tuple[int, int] | None:
    """A tool-argument string that is only a clock time ("14:00", "2pm"), else None."""
    mt = _CLOCK.fullmatch(s.strip())
    return _clock(mt) if mt else None


def parse_date_value(s: str) -> DateValue | None:
    """A tool-argument string that is a date, a date-time, a range or only a time, as (its dates'
    readings, its times); None for anything else."""
    parsed = parse_value(s)
    if parsed is not None:
        return parsed
    t = parse_time(s)
    return None if t is None else ([], [t])


class DateContext:
    """The dates and times of a conversation, for checking date and time values against it."""

    def __init__(self, texts: list[str], today: date | None = None) -> None:
        parts = [text_dates(t) for t in texts]
        self.month_days: set[tuple[int, int]] = set().union(*(p.month_days for p in parts))
        self.times: set[tuple[int, int]] = set().union(*(p.times for p in parts))
        references = {today or date.today()}.union(*(p.current for p in parts))
        offsets = tuple(sorted({k for p in parts for k in p.offsets}))
        weekdays = tuple(sorted({w for p in parts for w in p.weekdays}))
        # stated dates and those relative words name; and their month/day, which a date given
        # without a year ("March 5") matches in any year
        self.known: set[date] = set().union(*(p.dates for p in parts)) | relative_dates(offsets, weekdays, references)
        self.known_pairs = {(d.month, d.day) for d in self.known} | self.month_days

    def _date_grounded(self, full: set[date], month_days: set[tuple[int, int]]) -> bool:
        return bool(full & self.known) or bool({(d.month, d.day) for d in full} & self.month_days) \
            or bool(month_days & self.known_pairs)

    def time_grounded(self, t: tuple[int, int]) -> bool:
        # midnight and the last minute are how APIs spell "the whole day", not a time anyone stated
        return t in self.times or t in ((0, 0), (23, 59))

    def grounded(self, value: DateValue) -> bool:
        """Every date of a parsed value (any reading) and every time it names was stated or derived."""
        groups, times = value
        return all(self._date_grounded(*g) for g in groups) and all(self.time_grounded(t) for t in times)
