"""Step labels from completions (smallfleet.verify.shepherd) and training on them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from smallfleet.cli import cli
from smallfleet.errors import InvalidRequestError
from smallfleet.models.base import Samples
from smallfleet.verify import ProcessVerifier, train_verifier
from smallfleet.verify.shepherd import MAX_STEPS, label_trace, sampler_completer

GOLD = 42.0


def broken_at(first_error: int | None, solvable: bool = True, calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    """A scripted completer: prefixes that end before step ``first_error`` reach the answer, the others do not."""

    async def complete(problem: str, prefix: list[str], k: int) -> list[float | None]:
        if calls is not None:
            calls.append(len(prefix))
        ok = solvable and (first_error is None or len(prefix) <= first_error)
        return [GOLD if ok and i == k - 1 else 7.0 for i in range(k)]  # one hit out of k is enough

    return complete


@pytest.mark.parametrize("n, err", [(1, 0), (2, 0), (2, 1), (7, 0), (7, 3), (7, 6), (20, 13)])
def test_binary_search_finds_the_first_step_no_completion_recovers_from(n: int, err: int) -> None:
    steps = [f"step {i}: 1 + 1 = 2" for i in range(n - 1)] + ["#### 5"]
    calls: list[int] = []
    lab = asyncio.run(label_trace("p", steps, GOLD, broken_at(err, calls=calls), k=3))
    assert lab.label == err
    assert len(calls) <= 2 + (n - 1).bit_length()  # the gate plus a binary search, not one probe per step
    assert calls[0] == 0 and all(p[2] == 3 for p in lab.probes)
    assert lab.as_dict()["label"] == err and json.dumps(lab.as_dict())


def test_a_right_trace_has_no_error_and_costs_no_completion() -> None:
    calls: list[int] = []
    lab = asyncio.run(label_trace("p", ["6 * 7 = 42", "#### 42"], GOLD, broken_at(0, calls=calls)))
    assert lab.label == -1 and calls == []


def test_a_problem_the_completer_cannot_solve_is_skipped() -> None:
    lab = asyncio.run(label_trace("p", ["6 * 7 = 41", "#### 41"], GOLD, broken_at(None, solvable=False)))
    assert lab.label is None and lab.reason.startswith("skipped") and lab.probes == [(-1, 0, 4)]


def test_an_unfinished_trace_whose_last_step_still_reaches_the_answer_has_no_error() -> None:
    lab = asyncio.run(label_trace("p", ["6 * 7 = 42", "so the"], GOLD, broken_at(None), finished=False))
    assert lab.label == -1 and "unfinished" in lab.reason and len(lab.probes) == 2
    # ... and one whose last prefix does not is searched like any other
    assert asyncio.run(label_trace("p", ["6 * 7 = 41", "so the"], GOLD, broken_at(0), finished=False)).label == 0
    # a finished trace's answer is the last number of the whole trace, not of its last step
    assert asyncio.run(label_trace("p", ["6 * 7 = 42", "That is the answer."], GOLD, broken_at(0))).label == -1


def test_bad_input() -> None:
    with pytest.raises(InvalidRequestError):
        asyncio.run(label_trace("p", [], GOLD, broken_at(0)))
    for k in (0, 17):
        with pytest.raises(InvalidRequestError):
            asyncio.run(label_trace("p", ["x"], GOLD, broken_at(0), k=k))
    long = asyncio.run(label_trace("p", ["1 + 1 = 3"] * (MAX_STEPS + 1), GOLD, broken_at(0)))
    assert long.label is None and "more than" in long.reason


class Recorder:
    """A Sampler double that records the request and answers with the given texts."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.requests = texts, []  # type: list[str], list[tuple[dict[str, Any], int]]

    async def samples(self, request: dict[str, Any], k: int) -> Samples:
        self.requests.append((request, k))
        return Samples(self.texts[:k], 10, 10, 1.0)


def test_the_sampler_completer_puts_the_prefix_in_the_assistant_turn() -> None:
    # llama.cpp returns the prefix with the continuation; a server that returns only the continuation works too
    # The answer is the number the whole text ends on: a continuation with none leaves the prefix's last.
    rec = Recorder(["a = 40 + 2\n#### 42", "#### 40", "a = 40 + 2\nhmm"])
    complete = sampler_completer(rec, "sys", max_tokens=50)
    assert asyncio.run(complete("problem", ["a = 40 + 2"], 3)) == [42.0, 40.0, 40.0]
    req, k = rec.requests[0]
    assert k == 3 and req["max_tokens"] == 50 and req["temperature"] == 0.7
    assert req["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "problem"},
                               {"role": "assistant", "content": "a = 40 + 2\n"}]
    rec.texts = ["no number", "#### 42"]
    assert asyncio.run(complete("problem", [], 2)) == [None, 42.0]  # the empty prefix: a plain question
    assert [m["role"] for m in rec.requests[1][0]["messages"]] == ["system", "user"]


def test_llama_cpp_continues_the_prefix(shared_fleet) -> None:  # type: ignore[no-untyped-def]
    # What the labels rest on: the completion goes on from the given steps instead of starting over.
    backend = shared_fleet.get(shared_fleet.config.tier_model("small").name)
    head = "Tom has 3 boxes of 4 apples, so 3 * 4 = 12 apples.\n"
    msgs = [{"role": "user", "content": "Tom has 3 boxes of 4 apples and eats 2. How many are left?"},
            {"role": "assistant", "content": head}]
    s = asyncio.run(backend.samples({"messages": msgs, "max_tokens": 12}, 2))
    assert len(s.texts) == 2 and all(t.startswith(head) for t in s.texts)


def test_training_on_labelled_traces(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parent / "data"  # small fixtures: tests never read ../shared
    labels = tmp_path / "labels.jsonl"
    rows = [{"problem": "p", "steps": ["2 + 2 = 4", "4 * 3 = 12", "#### 12"], "label": -1},
            {"problem": "q", "steps": ["5 + 5 = 10", "10 - 1 = 9", "#### 9"], "label": 1},
            {"problem": "r", "steps": ["x"], "label": None}]  # skipped: left out
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = train_verifier("math", tmp_path / "a.json", data, n_synthetic=60)
    one = train_verifier("math", tmp_path / "b.json", data, n_synthetic=60, labels=labels)
    heavy = train_verifier("math", tmp_path / "c.json", data, n_synthetic=60, labels=labels, label_weight=50.0)
    assert base["labelled_traces"] == 0 and one["labelled_traces"] == heavy["labelled_traces"] == 2
    assert one["training_traces"] == base["training_traces"] + 2 and one["training_data_sha256"] != base["training_data_sha256"]
    assert one["weights"] != base["weights"] and heavy["weights"] != one["weights"]
    ProcessVerifier.load(tmp_path / "c.json")
    for bad in ('{"problem": "p", "steps": "not a list", "label": 0}', '["no"]', '{"problem": 1, "steps": [], "label": 0}',
                '{"problem": "p", "steps": ["a"], "label": 1}', '{"problem": "p", "steps": ["a"], "label": true}',
                '{"problem": "p", "steps": [], "label": null}', '{"problem": "p", "steps": ["a"], "lab'):
        labels.write_text(bad + "\n")
        with pytest.raises(InvalidRequestError, match="labelled trace"):
            train_verifier("math", tmp_path / "d.json", data, n_synthetic=60, labels=labels)


def test_the_train_command_takes_labels(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parent / "data"
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"problem": "q", "steps": ["5 + 5 = 10", "10 - 1 = 8"], "label": 1}) + "\n")
    out = tmp_path / "v.json"
    args = ["verifier", "train", "--holdout", "math", "--data", str(data), "--synthetic", "60", "--out", str(out)]
    r = CliRunner().invoke(cli, [*args, "--labels", str(labels), "--label-weight", "5"])
    assert r.exit_code == 0, r.output
    meta = json.loads(out.read_text())
    assert meta["labelled_traces"] == 1 and meta["label_weight"] == 5.0
    r = CliRunner().invoke(cli, [*args, "--labels", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 2 and "does not exist" in r.output
