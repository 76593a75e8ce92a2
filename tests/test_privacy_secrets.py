"""Secrets in pasted code, config, URLs and headers: found by format, by context and by entropy; code and
placeholders left alone. Patterns only (no NER), so these run in milliseconds."""

from __future__ import annotations

import time

import pytest

from smallfleet.privacy.detector import Detector
from smallfleet.privacy.secrets import entropy, secrets

D = Detector(ner=False)


def found(text: str, kind: str = "SECRET") -> list[str]:
    return [e.text for e in D.detect(text) if e.type == kind]


# Invented values with the shapes real ones have.
@pytest.mark.parametrize("text, secret", [
    ("aws_access_key_id = AKIAQWERTYUIOPASDFGH", "AKIAQWERTYUIOPASDFGH"),
    ("token: ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9),
    ("STRIPE=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("key AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q used", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    ("bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 sends", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"),
    ("xoxb-2345678901-2345678901234-AbCdEfGhIjKlMnOpQrStUvWx in slack", "xoxb-2345678901-2345678901234-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("OPENAI_API_KEY=sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789ABCD", "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789ABCD"),
    ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567 is my token", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("?client_id=1000.A1B2C3D4E5F6G7H8I9J0KLMNOPQRST&scope=x", "1000.A1B2C3D4E5F6G7H8I9J0KLMNOPQRST"),
])
def test_known_formats(text: str, secret: str) -> None:
    assert secret in found(text)


def test_jwt_and_private_key_blocks() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert found(f"Authorization: Bearer {jwt}") == [jwt]
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----"
    got = found(f"my key:\n{pem}\nthanks")
    assert len(got) == 1 and "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ" in got[0]


@pytest.mark.parametrize("text, secret", [
    ("DB_PASSWORD=hunter22", "hunter22"),
    ('{"password": "correct horse"}', "correct horse"),
    ("client_secret: 'x9Lk2PqR7sT'", "x9Lk2PqR7sT"),
    ("DATABASE_URL=postgres://appuser:S3cr3tPa55@db.internal:5432/prod", "S3cr3tPa55"),
    ("mongodb+srv://admin:pa55w0rd!@cluster0.abcde.mongodb.net/test", "pa55w0rd!"),
    ("DefaultEndpointsProtocol=https;AccountName=x;AccountKey=AbC123dEf456GhI789==;EndpointSuffix=core", "AbC123dEf456GhI789=="),
    ("GET https://api.example.com/v1/data?api_key=q8Zr5LmN2vX7&limit=5", "q8Zr5LmN2vX7"),
    ("headers = {'Authorization': 'Bearer Zq81mNcX02pLrT5vYbW9'}", "Zq81mNcX02pLrT5vYbW9"),
    ('SIGNING = "Zk3u9QpL2mX8vR5tYw1cB7nD4hJ6gF0s"', "Zk3u9QpL2mX8vR5tYw1cB7nD4hJ6gF0s"),
])
def test_secrets_by_context(text: str, secret: str) -> None:
    assert secret in found(text)


@pytest.mark.parametrize("text", [
    "password = os.environ['DB_PASSWORD']",
    "token = get_token(user)",
    "api_key: YOUR_API_KEY_HERE",
    "secret: <your secret>",
    "API_KEY=${API_KEY}",
    "password: ********",
    "commit 3f2c1a9e8b7d6c5b4a39281706f5e4d3c2b1a098 fixed it",
    "id 123e4567-e89b-12d3-a456-426614174000",
    "The token limit is 4096 and the secret to good soup is patience.",
    "reset your password from the settings page",
    '"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
])
def test_code_placeholders_and_prose_are_not_secrets(text: str) -> None:
    assert found(text) == []


def test_a_connection_string_password_is_not_an_email() -> None:
    ents = D.detect("postgres://appuser:S3cr3tPa55@db.internal:5432/prod")
    assert [e.type for e in ents if "S3cr3t" in e.text] == ["SECRET"]
    assert not any(e.type == "EMAIL_ADDRESS" for e in ents)
    assert [e.text for e in D.detect("write to mailto:jane.doe@example.com")] == ["jane.doe@example.com"]


def test_entropy() -> None:
    assert entropy("aaaa") == 0.0 and entropy("abcd") == 2.0 and entropy("") == 0.0


def test_a_pasted_megabyte_costs_linear_time() -> None:
    t0 = time.perf_counter()
    list(secrets("password=" + "a" * 1_000_000))
    list(secrets("-----BEGIN PRIVATE KEY-----" + "A" * 500_000))
    list(secrets(("x=" + "'" + "Ab1" * 200 + "' ") * 2000))
    assert time.perf_counter() - t0 < 5.0
