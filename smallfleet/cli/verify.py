"""Reasoning traces: verify, and the verifier artifact (train, info)."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from ._app import cli, console, out


# -- verify ------------------------------------------------------------------------------------------
@cli.command(short_help="Check reasoning traces (JSON lines) with the process verifier.")
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--verifier", "artifact", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A verifier artifact (default: the one shipped in the package).")
def verify(source: Any, artifact: str | None) -> None:
    """Score reasoning traces: JSON lines in, JSON lines out.

    \b
    Input lines:   {"problem": "...", "steps": ["step 1", "step 2", ...]}   (other fields ignored)
    Output lines:  {"first_error_step": 1, "p_flawed": 0.83, "step_scores": [0.1, 0.83], "p_wrong": 0.7, ...}
    first_error_step is -1 when no error is found; p_wrong (shipped verifier only) is the outcome
    verifier's odds that the final answer is wrong. Each step is recomputed (arithmetic) and scored
    by the distilled verifier; traces over 64 steps and steps over 4,000 characters are cut, and the
    output says so in "truncated". A bad line gets {"line": N, "error": ...}; blank lines are skipped;
    the exit code is 1 if any line failed.
    """
    from ..errors import SmallfleetError
    from ..verify import ProcessVerifier
    from ..verify.arith import equations
    from ..verify.process import MAX_STEP_CHARS

    v = ProcessVerifier.load(artifact)
    failed = 0
    for n, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise SmallfleetError("expected a JSON object")
            res = v.verify(obj.get("problem"), obj.get("steps"))
            out = res.as_dict()
            wrong = [{"step": i, "expression": e.expr, "claimed": e.claimed, "actual": e.actual}
                     for i, st in enumerate(obj["steps"][:len(res.step_scores)])
                     for e in equations(st[:MAX_STEP_CHARS]) if e.ok is False]
            if wrong:
                out["arithmetic_errors"] = wrong
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
        except (orjson.JSONDecodeError, SmallfleetError) as e:
            failed += 1
            msg = f"not valid JSON: {e}" if isinstance(e, orjson.JSONDecodeError) else getattr(e, "message", str(e))
            sys.stdout.write(orjson.dumps({"line": n, "error": msg}).decode() + "\n")
    if failed:
        console.print(f"[red]{failed} line(s) failed[/]")
        sys.exit(1)


@cli.group()
def verifier() -> None:
    """Train or inspect the distilled process verifier."""


@verifier.command("train")
@click.option("--holdout", type=click.Choice(["none", "gsm8k", "math"]), default="none", show_default=True,
              help="Leave one ProcessBench subset out (for honest benchmarks).")
@click.option("--out", type=click.Path(dir_okay=False), default="smallfleet/verify/data/verifier-v1.json", show_default=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Data folder with processbench/ and gsm8k/ (default: ../shared/data beside the checkout).")
@click.option("--synthetic", type=int, default=3000, show_default=True, help="GSM8K-train problems to perturb.")
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None,
              help="More labelled traces, JSONL in ProcessBench's shape (problem, steps, label): e.g. step labels "
                   "from completions, written by `python bench/reasoning.py label`.")
@click.option("--label-weight", type=click.FloatRange(0.0, 100.0), default=1.0, show_default=True,
              help="Weight of each step of a --labels trace against a ProcessBench or synthetic step.")
def verifier_train(holdout: str, out: str, data_dir: str | None, synthetic: int, seed: int, labels: str | None,
                   label_weight: float) -> None:
    """Train reproducibly from ProcessBench + synthetic flawed GSM8K-train traces (+ --labels); write the artifact."""
    from ..verify import train_verifier

    with console.status("extracting features and training …"):
        meta = train_verifier(None if holdout == "none" else holdout, out, data_dir, synthetic, seed, labels, label_weight)
    m = meta["train_metrics"]
    console.print(f"wrote {out}: {meta['training_traces']} traces ({meta['training_steps']} steps), threshold "
                  f"{meta['threshold']}, on ProcessBench training traces acc_err {m['acc_erroneous']:.3f} acc_ok "
                  f"{m['acc_correct']:.3f} F1 {m['f1']:.3f}; data sha256 {meta['training_data_sha256'][:12]}…")


@verifier.command("train-outcome")
@click.option("--out", type=click.Path(dir_okay=False), default="smallfleet/verify/data/outcome-v1.json", show_default=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder with gsm8k/example_model_solutions.jsonl (default: ../shared/data).")
@click.option("--folds", type=int, default=5, show_default=True, help="Cross-validation folds over questions (reported).")
def verifier_train_outcome(out: str, data_dir: str | None, folds: int) -> None:
    """Train the outcome verifier (p_wrong: the final answer's odds of being wrong) from the GSM8K
    example model solutions; uses the shipped process verifier's step scores as features."""
    from ..verify.training import train_outcome

    with console.status("extracting features and training …"):
        meta = train_outcome(out, data_dir, folds)
    console.print(f"wrote {out}: {meta['solutions']} solutions of {meta['questions']} questions ({meta['wrong']} wrong); "
                  f"{folds}-fold CV AUROC {meta['cv']['auroc_all']:.3f} (by source {meta['cv']['auroc_by_source']}); "
                  f"data sha256 {meta['training_data_sha256'][:12]}…")


@verifier.command("info")
@click.option("--verifier", "artifact", type=click.Path(dir_okay=False, exists=True), default=None)
def verifier_info(artifact: str | None) -> None:
    """Show the artifact's training data hash, sizes and metrics."""
    from ..verify import ProcessVerifier

    v = ProcessVerifier.load(artifact)
    meta = {k: x for k, x in v.meta.items() if k not in ("weights", "mean", "scale")}
    if v.outcome is not None:
        meta["outcome"] = {k: x for k, x in v.outcome.meta.items() if k not in ("weights", "mean", "scale")}
    out.print_json(orjson.dumps(meta).decode())
