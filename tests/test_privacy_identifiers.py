"""Account, order and policy numbers, user names in paths, handles and app ids; and the look-alikes
(versions, dates, sizes, decorators, vendor packages) that are no one's. Patterns only (no NER)."""

from __future__ import annotations

import pytest

from smallfleet.privacy.detector import Detector

D = Detector(ner=False)


def found(text: str, kind: str) -> list[str]:
    return [e.text for e in D.detect(text) if e.type == kind]


@pytest.mark.parametrize("text, ident", [
    ("My customer number is cx7720415, please check.", "cx7720415"),
    ("policy M55-0193-22 renewed", "M55-0193-22"),
    ("ticket QR#-7B-441K is still open", "QR#-7B-441K"),
    ("Order ORD-10422 arrived broken", "ORD-10422"),
    ("booking ref: K9XQ2L", "K9XQ2L"),
    ("passport no. X1234567", "X1234567"),
    ("Account #: 004-556-7781", "004-556-7781"),
    ("Mi número de pedido es PED-55120", "PED-55120"),
    ("Ma commande n° 778-AB-21 n'est pas arrivée", "778-AB-21"),
    ("Kundennummer: 44120398", "44120398"),
    ("la polizza 88AB123 è scaduta", "88AB123"),
    ("我的订单号：A8823991", "A8823991"),
    ("ref 7734-2291-XK attached", "7734-2291-XK"),  # standalone: the shape of an id
])
def test_identifiers(text: str, ident: str) -> None:
    assert ident in found(text, "ID_NUMBER")


@pytest.mark.parametrize("text", [
    "Upgrade from python 3.11.4 to v2.0.1 on x86_64 with utf-8.",
    "1080p at 60fps, 16GB RAM, 512MB swap, 2.4GHz, 100mg twice a day",
    "Meeting on 2024-05-01 at 10:30, or 12/05/2024.",
    "Use gpt-4o or llama-3 for the COVID-19 summary; see RFC 7231 and ES2020.",
    "colour #1a2b3c, hash 3f2c1a9e8b7d6c5b4a39, route53, python3, mp3, H264, IPv6, sha256",
    "I have 3 kids and 2 dogs and we moved in 1998.",
    "Order the items by 5pm and the total is 42.50 dollars.",
])
def test_ordinary_words_and_versions_are_left_alone(text: str) -> None:
    assert found(text, "ID_NUMBER") == []


@pytest.mark.parametrize("text, name", [
    ('File "C:\\Users\\marta\\Desktop\\proj\\main.py", line 3', "marta"),
    ("see /home/jdoe42/public_html/index.php", "jdoe42"),
    ("open /Users/kim.lee/Library/Logs/app.log", "kim.lee"),
    ("my username is darkstar77", "darkstar77"),
    ("login: m.rossi_84", "m.rossi_84"),
])
def test_user_names(text: str, name: str) -> None:
    assert name in found(text, "USERNAME")


def test_handles_but_not_decorators_or_emails() -> None:
    assert found("follow me @lisa_m92 on insta", "USERNAME") == ["lisa_m92"]  # the "@" stays
    code = "@dataclass\nclass A:\n    x: int\n@app.route('/x')\ndef f(): ...\n@pytest.fixture\n"
    assert found(code, "USERNAME") == []
    assert found("write to jane@example.com or @here in the channel", "USERNAME") == []
    assert found("C:\\Users\\Public\\Desktop and /home/ubuntu/app", "USERNAME") == []


def test_app_ids_outside_vendor_namespaces() -> None:
    assert found("my app com.martaapps.budget crashes", "APP_ID") == ["com.martaapps.budget"]
    assert found("uses org.apache.commons.lang3 and com.google.android.gms", "APP_ID") == []
    assert found("visit example.com or docs.python.org", "APP_ID") == []


def test_an_id_beats_the_ner_reading_it_as_a_name() -> None:
    # spaCy's small model tags "Order ORD-10422" as a PERSON; the id recognizer claims the span first
    ents = Detector().detect("Order ORD-10422 arrived broken.")
    assert [e.type for e in ents if "10422" in e.text] == ["ID_NUMBER"]


def test_types_can_be_chosen() -> None:
    only_names = Detector(entities=["USERNAME"], ner=False)
    assert {e.type for e in only_names.detect("my app com.martaapps.budget, user /home/jdoe42/x")} == {"USERNAME"}


def test_hostile_inputs_cost_bounded_time() -> None:
    """Long runs that tempt backtracking, every script, control characters and typed placeholders."""
    import time

    from smallfleet.privacy.affiliations import affiliations
    from smallfleet.privacy.identifiers import handles, ids

    texts = ["A1-" * 200_000, "account " + "9" * 300_000, "/home/" + "a" * 300_000, "@" + "_" * 300_000,
             "worked at " + "Aa " * 100_000, "com." + "a." * 100_000, "".join(chr(c) for c in range(32, 0x3000)) * 4,
             "\x00\ufffd\ud7ff" * 50_000, "customer <ID_NUMBER_1> and <PERSON_2>, my username is <USERNAME_1>"]
    t0 = time.perf_counter()
    for t in texts:
        for rec in (ids, handles, affiliations):
            list(rec(t))
    assert time.perf_counter() - t0 < 20.0
    # text that already holds placeholders: none of them is read as a new id or user name
    assert found("customer <ID_NUMBER_1> and my username is <USERNAME_1>", "ID_NUMBER") == []
