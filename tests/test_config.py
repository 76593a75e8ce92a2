from pathlib import Path

import pytest

from smallfleet.config import load_config
from smallfleet.errors import ConfigError
from smallfleet.step import StepKind

from .conftest import TINY_TOML


def test_builtin_fleet_has_three_tiers_and_a_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.tiers == ("small", "large", "frontier")
    assert cfg.tier_model("small").name == "qwen2.5-coder-0.5b"
    assert cfg.tier_model("large").name == "qwen2.5-coder-1.5b"
    f = cfg.frontier
    assert f.stands_in_for == "qwen2.5-coder-1.5b" and f.location == "package:qwen2.5-coder-1.5b"
    assert cfg.frontier_price() == (2.5, 10.0)  # reference price for the counterfactual
    assert all(m.price_in > 0 and m.price_out > 0 for m in cfg.models.values())
    # measured (bench/agents.py): the 0.5B's next-step pass makes spurious calls, the 1.5B's finishes chains
    assert not cfg.tier_model("small").next_step_pass and cfg.tier_model("large").next_step_pass


def test_frontier_from_env() -> None:
    cfg = load_config(env={"SMALLFLEET_FRONTIER_URL": "http://127.0.0.1:9/v1", "SMALLFLEET_FRONTIER_MODEL": "big",
                           "SMALLFLEET_FRONTIER_PRICE": "1.5,6"})
    f = cfg.frontier
    assert (f.name, f.backend, f.location, f.stands_in_for) == ("big", "openai", "http://127.0.0.1:9/v1", "")
    assert cfg.frontier_price() == (1.5, 6.0)


def test_openai_key_makes_openai_the_frontier() -> None:
    cfg = load_config(env={"OPENAI_API_KEY": "sk-test"})
    assert cfg.frontier.location == "https://api.openai.com/v1"
    assert cfg.frontier.api_key_env == "OPENAI_API_KEY" and cfg.frontier.backend == "openai"


def test_toml_file_and_env_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(TINY_TOML + '\n[routing.reasoning]\nstart = "large"\nmin_confidence = 0.9\n[server]\nport = 9999\n')
    cfg = load_config(p, env={"SMALLFLEET_PORT": "7000", "SMALLFLEET_LEDGER": str(tmp_path / "x.db")})
    assert cfg.port == 7000 and cfg.ledger_path == tmp_path / "x.db"
    assert cfg.routing[StepKind.REASONING].start == "large"
    assert cfg.routing[StepKind.REASONING].min_confidence == 0.9
    assert set(cfg.models) == {"smollm2", "qwen05", "frontier-stand-in"}
    assert all(m.next_step_pass for m in cfg.models.values())  # on unless a model says otherwise
    p.write_text(TINY_TOML.replace('tier = "small"', 'tier = "small"\nnext_step_pass = false', 1))
    assert [m.next_step_pass for m in load_config(p, env={}).models.values()][:2] == [False, True]


@pytest.mark.parametrize("text, needle", [
    ("[models.a]\nbackend='llamacpp'\npath='x.gguf'\ntier='nope'\n", "not one of the fleet tiers"),
    ("[models.a]\nbackend='magic'\npath='x'\ntier='small'\n", "backend = 'magic'"),
    ("[models.a]\npath='x'\ntier='small'\nprice_in='cheap'\n", "price_in must be a float"),
    ("[models.a]\npath='x'\ntier='small'\ncolour='red'\n", "unknown key(s) colour"),
    ("[models.a]\npath='x'\ntier='small'\nnext_step_pass='yes'\n", "next_step_pass must be a bool"),
    ("[models.a]\nbackend='openai'\nurl='ftp://x'\ntier='small'\n", "http(s) base URL"),
    ("[models.a]\npath='x'\ntier='small'\n", "tier 'large' has no model"),
    ("[routing.dreaming]\nstart='small'\n", "unknown step kind"),
    ("[routing.reasoning]\nchecks=['vibes']\n", "unknown check(s)"),
    ("[fleet\n", "not valid TOML"),
    ("[extras]\n", "unknown section"),
])
def test_broken_config_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert needle in str(e.value)


def test_missing_config_file_and_bad_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml", env={})
    with pytest.raises(ConfigError, match="SMALLFLEET_PORT"):
        load_config(env={"SMALLFLEET_PORT": "eighty"})
    with pytest.raises(ConfigError, match="IN,OUT"):
        load_config(env={"SMALLFLEET_FRONTIER_URL": "http://x/v1", "SMALLFLEET_FRONTIER_MODEL": "m",
                         "SMALLFLEET_FRONTIER_PRICE": "free"})


def test_verify_judge_setting(tmp_path: Path) -> None:
    assert load_config(env={}).judge_model() is None
    cfg = load_config(env={"SMALLFLEET_JUDGE": "large"})
    assert cfg.judge_model() is not None and cfg.judge_model().tier == "large" and cfg.verify.band == (0.3, 0.6)
    p = tmp_path / "c.toml"
    p.write_text('[verify]\njudge = "qwen2.5-coder-1.5b"\nband = [0.2, 0.7]\n')
    cfg = load_config(p, env={})
    assert cfg.judge_model().name == "qwen2.5-coder-1.5b" and cfg.verify.band == (0.2, 0.7)
    for bad in ('judge = "gpt-9"', 'band = [0.7, 0.2]', 'band = [0.5]', 'jduge = "large"'):
        p.write_text(f"[verify]\n{bad}\n")
        with pytest.raises(ConfigError):
            load_config(p, env={})
