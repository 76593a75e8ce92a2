"""Employers, schools and towns by the words around them, in several languages; prose left alone."""

from __future__ import annotations

import pytest

from smallfleet.privacy.affiliations import affiliations


def found(text: str) -> list[tuple[str, str]]:
    return [(e.type, e.text) for e in affiliations(text)]


@pytest.mark.parametrize("text, expected", [
    ("I worked at Northwind Automotive for 3 years, then studied at Lakeside Open University.",
     [("ORGANIZATION", "Northwind Automotive"), ("ORGANIZATION", "Lakeside Open University")]),
    ("Senior Data Analyst at Crestline Savings Bank, Boston", [("ORGANIZATION", "Crestline Savings Bank")]),
    ("Northwind Automotive — Software Engineer (2019–2022)", [("ORGANIZATION", "Northwind Automotive")]),
    ("I moved to Portland and my bank, Crestline Savings, froze my card.",
     [("ORGANIZATION", "Crestline Savings"), ("LOCATION", "Portland")]),
    ("Trabajo en Grupo Alvarez y vivo en Zaragoza.", [("ORGANIZATION", "Grupo Alvarez"), ("LOCATION", "Zaragoza")]),
    ("Je travaille chez Boulangerie Martin et j'habite à Nantes.",
     [("ORGANIZATION", "Boulangerie Martin"), ("LOCATION", "Nantes")]),
    ("Ich arbeite bei Stadtwerke Kiel.", [("ORGANIZATION", "Stadtwerke Kiel")]),
    ("我在华星科技有限公司工作，住在杭州。", [("ORGANIZATION", "华星科技有限公司"), ("LOCATION", "杭州")]),
])
def test_affiliations_by_context(text: str, expected: list[tuple[str, str]]) -> None:
    assert set(found(text)) == set(expected)  # several cues may find the same name


@pytest.mark.parametrize("text", [
    "I work at home on Mondays.",
    "It is from The Guardian.",
    "The function returns the values from Python lists.",
    "We joined the two tables and studied at length why it failed.",
])
def test_prose_without_a_named_affiliation(text: str) -> None:
    assert found(text) == []


def test_a_name_said_again_in_part_is_pseudonymised_too() -> None:
    from smallfleet.privacy.detector import Detector
    from smallfleet.privacy.pseudonymize import Pseudonymizer

    pz = Pseudonymizer(Detector(ner=False))
    text = "I build robots at Tidepool Robotics. Before Tidepool I was at a bank. Software is fun."
    red = pz.redact(text).text
    assert "Tidepool" not in red and "Software is fun" in red  # a generic word of the name stays
    assert pz.restore(red).text == text
