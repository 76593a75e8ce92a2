"""Dates and times in grounding: formats, ranges, relative words, and what stays invented."""

from __future__ import annotations

from datetime import date

import pytest

from smallfleet.verify import Context, ungrounded
from smallfleet.verify.dates import mentions, parse_time, parse_value

TODAY = date(2024, 5, 20)  # a Monday
CONVERSATION = [
    "Please book the room for March 5th, 2024 at 2pm and invite bob@x.org. Also call me tomorrow.",
    "The review is on 12/04/2024 at 10:30. Lunch on Friday at noon. Dinner 7 June.",
    "Current date: 2024-03-01",
]


@pytest.mark.parametrize("value", [
    "2024-03-05T14:00:00Z", "2024-03-05 14:00", "2024-03-05T14:00:00-05:00", "Tue, 5 Mar 2024 14:00:00 GMT",
    "March 5, 2024", "05/03/2024", "2024-03-05T00:00:00",  # midnight: an API's "whole day"
    "2024-04-12", "2024-12-04",  # 12/04/2024 read both ways
    "2024-06-07", "2025-06-07",  # "7 June" has no year
    "2024-03-02", "2024-05-21",  # "tomorrow" after the stated current date, and after today
    "2024-05-24T12:00",  # "Friday at noon", counted from today
    "14:00", "2 pm", "10:30", "2024-03-05 to 2024-04-12",
])
def test_dates_and_times_stated_in_any_format_are_grounded(value: str) -> None:
    assert ungrounded({"when": value}, Context(CONVERSATION, today=TODAY), None) == []


@pytest.mark.parametrize("value", [
    "2024-03-05T15:00", "2024-03-06", "2024-12-05", "2023-03-05", "15:00", "2024-03-05 from 14:00 to 15:00",
    "2024-03-05 to 2024-03-07",
])
def test_invented_dates_and_times_are_named(value: str) -> None:
    assert ungrounded({"when": value}, Context(CONVERSATION, today=TODAY), None) == [f"when = {value!r}"]


def test_parsing_edges() -> None:
    # a year on the next line, or the start of another date, is not this date's year
    assert mentions("Dinner 7 June.\n2024-03-01").month_days == {(6, 7)}
    assert parse_value("the 2024-03-05 report is late") is None  # a sentence, not a date value
    assert parse_value("ORD-2024-03-05") is None
    assert parse_value("2024-02-30") is None and parse_value("31/31/2024") is None
    assert parse_time("5 amazing") is None and parse_time("12") is None and parse_time("6 a.m.") == (6, 0)
    assert mentions("version 1.2.3, room 12, 3/4/25").dates == {date(2025, 3, 4), date(2025, 4, 3)}
    # a number that is not a date still goes through the number check
    assert ungrounded({"n": "3.5"}, Context(["3.5 kg"]), None) == []
