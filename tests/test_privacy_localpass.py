"""The local model's pass over text bound for a remote model: what it may add, what it may not, what it costs;
and, end to end, what reaches a remote model's HTTP server when it is on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from smallfleet.config import load_config
from smallfleet.errors import ConfigError
from smallfleet.models import FunctionBackend
from smallfleet.privacy.detector import Detector
from smallfleet.privacy.guard import PrivacyGuard, PrivacySettings
from smallfleet.privacy.localpass import PROMPT, LocalPass, accept
from smallfleet.spec import ModelSpec
from tests.conftest import write_config

TEXT = "mi abuela Carmen vive con 王小明 cerca del parque. Can you write her a birthday card?"


def listing(items: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    def fn(req: dict[str, Any]) -> str:
        assert req["messages"][0]["content"] == PROMPT and req["response_format"]["type"] == "json_schema"
        return orjson.dumps({"items": items}).decode()
    return fn


def backend(items: list[dict[str, str]]) -> FunctionBackend:
    return FunctionBackend(ModelSpec(name="local", backend="scripted", tier="small"), listing(items))


def test_only_verbatim_spans_of_known_types_that_are_not_plain_words() -> None:
    assert accept(TEXT, "Carmen", "PERSON") and accept(TEXT, "王小明", "PERSON")
    assert not accept(TEXT, "Carmela", "PERSON")  # not in the text: the model made it up
    assert not accept(TEXT, "Carmen", "FAVOURITE_COLOUR")
    assert not accept(TEXT, "abuela", "PERSON") and not accept(TEXT, "the", "PERSON")
    assert not accept(TEXT, None, "PERSON") and not accept(TEXT, ["Carmen"], "PERSON")


def test_spans_are_checked_cached_and_counted() -> None:
    be = backend([{"text": "Carmen", "type": "PERSON"}, {"text": "王小明", "type": "PERSON"},
                  {"text": "Carmela Ruiz", "type": "PERSON"}, {"text": "parque", "type": "LOCATION"}])
    lp = LocalPass(be)
    got = asyncio.run(lp.spans(TEXT))
    assert got == [("PERSON", "Carmen"), ("PERSON", "王小明")]
    assert lp.stats.calls == 1 and lp.stats.rejected == 2 and lp.stats.spans == 2 and lp.stats.tokens_out > 0
    assert asyncio.run(lp.spans(TEXT)) == got and len(be.calls) == 1  # each distinct text is read once


def test_a_model_that_answers_nonsense_adds_nothing() -> None:
    lp = LocalPass(FunctionBackend(ModelSpec(name="local", backend="scripted", tier="small"), lambda req: "not json"))
    assert asyncio.run(lp.spans(TEXT)) == [] and lp.stats.failures


def test_the_guard_pseudonymises_what_the_local_pass_found() -> None:
    guard = PrivacyGuard(PrivacySettings(ner=False), detector=Detector(ner=False))
    guard.local_pass = LocalPass(backend([{"text": "Carmen", "type": "PERSON"}, {"text": "王小明", "type": "PERSON"}]))
    req = {"messages": [{"role": "user", "content": TEXT}]}
    out, pz, n = asyncio.run(guard.outbound_async(req, "s1"))
    sent = out["messages"][0]["content"]
    assert "Carmen" not in sent and "王小明" not in sent and n >= 2
    assert pz.restore(sent).text == TEXT


def test_local_pass_setting_must_name_a_local_model(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, '\n[privacy]\nlocal_pass = "small"\n'), env={})
    assert cfg.privacy.local_pass == "smollm2"
    assert load_config(write_config(tmp_path), env={"SMALLFLEET_PRIVACY_LOCAL_PASS": "qwen05"}).privacy.local_pass == "qwen05"
    with pytest.raises(ConfigError, match="neither a model nor a tier"):
        load_config(write_config(tmp_path, '\n[privacy]\nlocal_pass = "nope"\n'), env={})
    remote = '\n[models.remote]\nbackend = "openai"\nurl = "http://127.0.0.1:9/v1"\ntier = "frontier"\n'
    with pytest.raises(ConfigError, match="not a local model"):
        load_config(write_config(tmp_path, remote + '\n[privacy]\nlocal_pass = "remote"\n'), env={})


def test_rewrite_settings(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, '\n[privacy]\nrewrite = ["generation"]\n'), env={})
    assert cfg.privacy.rewrite == ("generation",) and cfg.privacy.rewrite_model == "smollm2"  # the first local tier's
    cfg = load_config(write_config(tmp_path), env={"SMALLFLEET_PRIVACY_REWRITE": "generation, reasoning",
                                                  "SMALLFLEET_PRIVACY_LOCAL_PASS": "qwen05"})
    assert cfg.privacy.rewrite == ("generation", "reasoning") and cfg.privacy.rewrite_model == "qwen05"
    assert load_config(write_config(tmp_path), env={}).privacy.rewrite == ()
    with pytest.raises(ConfigError, match="unknown step kind"):
        load_config(write_config(tmp_path, '\n[privacy]\nrewrite = ["poetry"]\n'), env={})


def test_a_listing_cut_off_at_max_tokens_keeps_its_whole_items() -> None:
    cut = '{"items": [{"text": "Carmen", "type": "PERSON"}, {"text": "王小明", "type": "PERSON"}, {"text": "Zarag'
    lp = LocalPass(FunctionBackend(ModelSpec(name="local", backend="scripted", tier="small"), lambda req: cut))
    assert asyncio.run(lp.spans(TEXT)) == [("PERSON", "Carmen"), ("PERSON", "王小明")] and not lp.stats.failures
