"""The combined reasoning score: its signals, its fitting and threshold, its artifact, and sampling."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from smallfleet.config import load_config
from smallfleet.errors import ConfigError, NotAvailableError
from smallfleet.verify.program import ProgramResult
from smallfleet.verify.score import BASE, FULL, ReasoningScore, Signals, fit_logistic, fit_score, signals, threshold_for
from tests.conftest import write_config


def test_signals_of_an_answer() -> None:
    s = signals("Ana buys 4 pens at $3 and pays $20. How much change?", ["4 * 3 = 12", "20 - 12 = 9", "#### 9"],
                [math.log(0.9), math.log(0.3)], 9.0, ProgramResult(8.0))
    assert s.program == "disagree" and s.program_value == 8.0 and s.arith_wrong
    assert s.mean_prob == pytest.approx(0.6) and s.unsure_share == 0.5 and s.tokens == 2
    assert len(s.vector(False)) == len(BASE) and len(s.vector(True)) == len(FULL)
    agree = signals("p", ["a", "b"], None, 8.0, ProgramResult(8.0), samples=[8.0, 8.0, None, 7.0])
    assert agree.program == "agree" and agree.vector(True)[-2:] == [0.5, 0.5]
    failed = signals("p", [], None, None, ProgramResult(status="failed", error="x"))
    assert failed.program == "program failed" and failed.vector(False)[BASE.index("no_answer")] == 1.0


def test_logistic_fit_learns_the_informative_signal() -> None:
    rng = np.random.default_rng(0)
    good = rng.integers(0, 2, 400)
    noise = rng.normal(size=400)
    y = ((good == 1) & (rng.random(400) < 0.9)) | ((good == 0) & (rng.random(400) < 0.1))
    m = fit_logistic(np.column_stack([good, noise]).astype(float), y.astype(float))
    assert m.weights[0] > 1.0 and abs(m.weights[1]) < 0.3
    p = m.p(np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert p[0] > 0.8 > 0.2 > p[1]


def test_threshold_reaches_the_target_precision_when_it_can() -> None:
    p = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.5, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0], dtype=float)
    t, prec, share = threshold_for(p, y, 0.95)
    assert t == 0.94 and prec == 1.0 and share == 0.6
    # unreachable: the most precise threshold with at least 5 accepted, and its true precision
    t, prec, _ = threshold_for(np.linspace(1, 0, 10), np.array([0, 1] * 5, dtype=float), 0.95)
    assert prec < 0.95 and prec == pytest.approx(0.5, abs=0.11)


def _rows(n: int, seed: int = 1) -> tuple[list[Signals], list[bool]]:
    rng = np.random.default_rng(seed)
    rows, right = [], []
    for _ in range(n):
        ok = bool(rng.random() < 0.4)
        agree = rng.random() < (0.8 if ok else 0.15)
        samples = [9.0 if rng.random() < (0.85 if ok else 0.3) else 7.0 for _ in range(3)]
        rows.append(Signals(9.0, "agree" if agree else "disagree", 9.0 if agree else 5.0, p_flawed=float(rng.random()),
                            mean_prob=float(rng.uniform(0.7, 1.0)), tokens=150, samples=samples))
        right.append(ok)
    return rows, right


def test_fit_score_chooses_a_band_and_round_trips(tmp_path: Path) -> None:
    rows, right = _rows(300)
    score = fit_score(rows, right, target=0.9)
    info = score.meta["train"]
    assert info["rows"] == 300 and info["full"]["auroc"] >= info["base"]["auroc"] - 0.01
    assert 0 <= score.band[0] <= score.band[1] <= 1 and score.samples == 3
    path = score.save(tmp_path / "s.json")
    again = ReasoningScore.load(path)
    s = rows[0]
    assert again.p_right(s) == pytest.approx(score.p_right(s)) and again.band == pytest.approx(score.band)
    base = Signals(s.answer, s.program, s.program_value, p_flawed=s.p_flawed, mean_prob=s.mean_prob, tokens=s.tokens)
    assert again.p_right(base) == pytest.approx(score.p_right(base))  # no samples: the base model
    with pytest.raises(ValueError, match="samples"):
        fit_score([base], [True])


def test_an_artifact_with_other_features_is_refused(tmp_path: Path) -> None:
    rows, right = _rows(50)
    path = fit_score(rows, right).save(tmp_path / "s.json")
    path.write_text(path.read_text().replace('"program_in_samples"', '"something_else"'))
    with pytest.raises(NotAvailableError, match="retrain"):
        ReasoningScore.load(path)


def test_the_shipped_score_loads_and_says_what_it_was_fitted_on() -> None:
    score = ReasoningScore.load()
    train = score.meta["train"]
    assert "GSM8K train" in score.meta["fitted_on"] and train["rows"] >= 30
    assert 0 < score.threshold < 1 and score.band[0] <= score.band[1] and score.samples >= 1


def test_samples_setting(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path), env={}).verify.samples == 3
    assert load_config(write_config(tmp_path, "\n[verify]\nsamples = 0\n"), env={}).verify.samples == 0
    assert load_config(write_config(tmp_path), env={"SMALLFLEET_REASONING_SAMPLES": "5"}).verify.samples == 5
    for bad in ("-1", "17", "many"):
        with pytest.raises(ConfigError, match=r"verify\.samples"):
            load_config(write_config(tmp_path), env={"SMALLFLEET_REASONING_SAMPLES": bad})


def test_llama_cpp_draws_k_samples_in_one_call(shared_fleet) -> None:  # type: ignore[no-untyped-def]
    from smallfleet.models.base import Sampler

    backend = shared_fleet.get(shared_fleet.config.tier_model("small").name)
    assert isinstance(backend, Sampler)
    s = asyncio.run(backend.samples({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}, 3))
    assert len(s.texts) == 3 and all(isinstance(t, str) for t in s.texts)
    assert 3 <= s.tokens_out <= 24 and s.tokens_in > 0  # each answer's own tokens, not one answer's
