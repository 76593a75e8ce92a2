import re
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
    ("[models.a]\npath='x'\ntier='small'\ncolour='red'\n", "[models.a]: unknown key 'colour'"),
    ("[models.a]\npath='x'\ntier='small'\ntags=['ok', 1]\n", "models.a.tags[1] must be a str"),
    ("[models.a]\npath='x'\ntier='small'\nnext_step_pass='yes'\n", "next_step_pass must be a bool"),
    ("[models.a]\nbackend='openai'\nurl='ftp://x'\ntier='small'\n", "http(s) base URL"),
    ("[fleet]\nreplace_builtin=true\n[models.a]\npath='x'\ntier='small'\n", "tier 'large' has no model"),
    ("[fleet]\nreplace_builtin=true\n", "no [models.NAME] entries"),
    ("[models]\n", "non-empty table"),
    ("[models]\na = 'x'\n", "models.a must be a table"),
    ("fleet = 1\n", "fleet must be a table"),
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


@pytest.mark.parametrize("text, table, key, guess", [
    ("[fleet]\nmax_escalatons = 1\n", "[fleet]", "max_escalatons", "max_escalations"),
    ("[routing.reasoning]\nmin_confidense = 0.5\n", "[routing.reasoning]", "min_confidense", "min_confidence"),
    ("[routing.reasonign]\nstart = 'small'\n", "[routing]", "reasonign", "reasoning"),
    ("[ledger]\nrun_budget = 1\n", "[ledger]", "run_budget", "run_budget_usd"),
    ("[server]\nprot = 1\n", "[server]", "prot", "port"),
    ("[server]\nmax_body = 4\n", "[server]", "max_body", "max_body_mb"),
    ("[models.a]\npath = 'x'\ntier = 'small'\ntreads = 2\n", "[models.a]", "treads", "threads"),
    ('[models."qwen2.5-coder-0.5b"]\npath = "x"\ntier = "small"\ncontex = 1\n', '[models."qwen2.5-coder-0.5b"]', "contex",
     "context"),
    ("[knowledge.handbook]\npth = 'x.db'\n", "[knowledge.handbook]", "pth", "path"),
    ("[privacy]\nthreshhold = 0.3\n", "[privacy]", "threshhold", "threshold"),
    ("[guards]\ndatamarks = true\n", "[guards]", "datamarks", "datamark"),
    ("[grounding]\nmin_relevence = 0.3\n", "[grounding]", "min_relevence", "min_relevance"),
    ("[memory]\nmax_pined = 3\n", "[memory]", "max_pined", "max_pinned"),
    ("[verify]\njduge = 'large'\n", "[verify]", "jduge", "judge"),
    ("[fleat]\ntiers = ['small']\n", "bad.toml", "fleat", "fleet"),
    ("port = 8000\n", "bad.toml", "port", "[server] port"),  # a key outside its section
    ("[server]\nmax_escalations = 1\n", "[server]", "max_escalations", "[fleet] max_escalations"),
])
def test_unknown_key_in_any_table_names_it_and_the_closest_valid_one(tmp_path: Path, text: str, table: str, key: str,
                                                                      guess: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert table in e.value.message and repr(key) in e.value.message
    assert e.value.hint is not None and e.value.hint.startswith(f"did you mean {guess}?")


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[ledger]\ncolour = 'red'\n[server]\nport = 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.message == "[ledger]: unknown key 'colour'."
    assert e.value.hint == "valid keys of [ledger]: path, url, run_budget_usd"


def test_every_documented_key_is_accepted(tmp_path: Path) -> None:
    # one of each key of every table: the schema admits what the loader reads, with its type
    p = tmp_path / "c.toml"
    p.write_text('''
[fleet]
tiers = ["small", "large", "frontier"]
max_escalations = 1
reference_price = [3, 12]
replace_builtin = false
[models.m]
backend = "openai"
tier = "frontier"
url = "http://127.0.0.1:9/v1"
model = "big"
api_key_env = "K"
api_key = ""
price_in = 1
price_out = 2.5
context = 8192
max_output = 512
tags = ["tools"]
threads = 1
parallel = 2
timeout_s = 30
retries = 0
next_step_pass = false
[routing.generation]
start = "large"
checks = ["nonempty"]
escalate = false
min_confidence = 0
[ledger]
path = "l.db"
run_budget_usd = 1
[server]
host = "0.0.0.0"
port = 9000
stream = "live"
keys = "k.db"
max_body_mb = 1
header_timeout_s = 2
body_timeout_s = 3
keepalive_s = 4
max_connections = 5
max_concurrent = 6
[privacy]
enabled = false
prefer_local = false
entities = ["PERSON"]
threshold = 1
ner = false
[guards]
mode = "flag"
policy_file = ""
detector = false
trusted_tools = ["crm"]
datamark = true
[grounding]
index = "i.db"
kinds = ["generation"]
k = 2
min_relevance = 0
[memory]
enabled = false
path = "m.db"
model = "m"
max_pinned = 3
defer = false
[verify]
judge = "large"
band = [0, 1]
[knowledge.kb]
path = "kb.db"
''')
    cfg = load_config(p, env={})
    assert (cfg.max_escalations, cfg.reference_price_in, cfg.port, cfg.stream_mode) == (1, 3.0, 9000, "live")
    m = cfg.models["m"]
    assert (m.price_in, m.timeout_s, m.parallel, m.next_step_pass, m.tags) == (1.0, 30.0, 2, False, ("tools",))
    assert isinstance(m.price_in, float) and cfg.verify.band == (0.0, 1.0) and cfg.limits.max_body_mb == 1.0
    assert cfg.routing[StepKind.GENERATION].start == "large" and not cfg.routing[StepKind.GENERATION].escalate
    assert cfg.limits.max_concurrent == 6 and cfg.guards.datamark and cfg.grounding.k == 2 and cfg.memory.max_pinned == 3
    assert cfg.knowledge == {"kb": Path("kb.db")} and cfg.keys_path == Path("k.db") and cfg.run_budget_usd == 1.0


def test_a_dotted_model_name_that_toml_split_says_to_quote_it(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[models.qwen2.5-coder-0.5b]\npath = "package:qwen2.5-coder-0.5b"\ntier = "small"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert "[models.qwen2]" in e.value.message and "qwen2.5-coder-0.5b" in e.value.message
    assert e.value.hint == 'quote a name that has dots: [models."qwen2.5-coder-0.5b"]'
    p.write_text('[knowledge.v1.2]\npath = "kb.db"\n')
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.hint == 'quote a name that has dots: [knowledge."v1.2"]'


def test_user_models_extend_the_builtin_fleet(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    # a new model on the small tier takes the built-in small model's place; large stays built-in
    p.write_text('[models.mine]\npath = "mine.gguf"\ntier = "small"\n')
    cfg = load_config(p, env={})
    assert list(cfg.models) == ["mine", "qwen2.5-coder-1.5b", "frontier-stand-in"]
    assert cfg.tier_model("small").location == "mine.gguf" and cfg.frontier.stands_in_for == "qwen2.5-coder-1.5b"
    # the same name as a built-in replaces it, in its place
    p.write_text('[models."qwen2.5-coder-1.5b"]\npath = "big.gguf"\ntier = "large"\nthreads = 1\n')
    cfg = load_config(p, env={})
    assert list(cfg.models) == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "frontier-stand-in"]
    assert cfg.tier_model("large").location == "big.gguf" and cfg.tier_model("large").threads == 1
    assert not cfg.tier_model("small").next_step_pass  # the untouched built-in keeps its settings
    # a model on a tier the built-ins leave empty is added; the env overrides still apply to local tiers
    p.write_text('[models.api]\nbackend = "openai"\nurl = "http://127.0.0.1:9/v1"\ntier = "frontier"\n')
    cfg = load_config(p, env={"SMALLFLEET_SMALL_MODEL": "s.gguf"})
    assert list(cfg.models) == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "api"]
    assert cfg.frontier.name == "api" and cfg.tier_model("small").location == "s.gguf"
    # a built-in on a tier the file's tiers leave out is dropped, not listed or served by name
    p.write_text('[fleet]\ntiers = ["small", "frontier"]\n[models.s]\npath = "s.gguf"\ntier = "small"\n')
    assert list(load_config(p, env={}).models) == ["s", "frontier-stand-in"]
    # replace_builtin: the user's models are the whole fleet
    p.write_text('[fleet]\nreplace_builtin = true\n[models.s]\npath = "s.gguf"\ntier = "small"\n'
                 '[models.l]\npath = "l.gguf"\ntier = "large"\n')
    cfg = load_config(p, env={"SMALLFLEET_LARGE_MODEL": "x.gguf"})
    assert list(cfg.models) == ["s", "l", "frontier-stand-in"] and cfg.tier_model("large").location == "x.gguf"


def _readme_smallfleet_toml_blocks() -> list[str]:
    """The README's smallfleet.toml examples: every toml block of its Configuration section, and any other toml
    block that opens with a smallfleet.toml section (the tool-policy example is another file)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", readme, flags=re.M)
    config = next(s for s in sections if s.startswith("Configuration\n"))
    blocks = re.findall(r"^```toml\n(.*?)^```", config, flags=re.S | re.M)
    assert blocks, "the README's Configuration section has no toml example"
    for s in sections:
        if s is not config:
            blocks += [b for b in re.findall(r"^```toml\n(.*?)^```", s, flags=re.S | re.M)
                       if re.match(r"\[(fleet|models|routing|ledger|server|privacy|guards|grounding|memory|verify|knowledge)\b", b)]
    return blocks


def test_readme_config_examples_load_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _readme_smallfleet_toml_blocks()
    for i, block in enumerate(blocks):
        p = tmp_path / f"readme{i}.toml"
        p.write_text(block, encoding="utf-8")
        load_config(p, env={})
    cfg = load_config(tmp_path / "readme0.toml", env={})  # the full example: extends the built-in fleet
    assert list(cfg.models) == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gpt-4o"]
    small = cfg.tier_model("small")
    assert (small.location, small.threads, small.price_in) == ("package:qwen2.5-coder-0.5b", 2, 0.02)
    assert cfg.frontier.backend == "openai" and cfg.knowledge_path("handbook").name == "handbook.db"
