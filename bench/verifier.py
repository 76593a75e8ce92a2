"""Process verifier benchmark: ProcessBench with held-out models, right-for-wrong-reasons, a 6B->175B cascade on
GSM8K, and speed against a local LLM judge.

Everything runs against ``smallfleet.verify`` (ProcessVerifier, LLMJudge, train_verifier). Data are read from
../shared/data beside the repo (ProcessBench ``processbench/{gsm8k,math}.json``; GSM8K
``gsm8k/example_model_solutions.jsonl``).

Protocol and splits
1. ProcessBench, held out. ``train_verifier(holdout="gsm8k")`` trains on ProcessBench MATH + synthetic flawed
   GSM8K-*train* traces and is tested on ProcessBench GSM8K; ``train_verifier(holdout="math")`` trains on
   ProcessBench GSM8K + the synthetic traces and is tested on ProcessBench MATH. No model is tested on ProcessBench
   samples it trained on. The artifacts are cached in --artifact-dir (default bench/results/,
   ``verifier-holdout-<subset>.json`` with ``.meta.json`` holding train_verifier's metadata) and retrained only with
   --retrain. Prediction = ``first_error_step`` (the verifier's own ``threshold``). Metrics as in the ProcessBench
   paper: accuracy on erroneous samples (label != -1) = share with predicted first_error_step == label exactly;
   accuracy on correct samples (label == -1) = share predicted -1; F1 = their harmonic mean; reported x100.
   Also shown, as diagnostics only: the AUROC of p_flawed for "trace has an error", and the F1 the same step scores
   would reach at the best threshold (rule: first step with score >= t) -- that threshold is tuned on the test
   split itself, so it is optimistic and never the reported number.
2. Right-for-wrong-reasons (RWR), same held-out models and predictions as 1: RWR samples = final_answer_correct and
   label != -1. Flagged = first_error_step != -1. Caught = share of RWR samples flagged; false flags = share of
   sound samples (label == -1) flagged. Per subset and pooled (each subset scored by its own held-out model).
   Plus an operating point from a sweep on p_flawed (flag = p_flawed >= t): the most RWR caught among thresholds
   with false flags <= the goal's cap -- tuned on the test split, so optimistic.
3. Cascade on GSM8K test (example_model_solutions.jsonl): weak = ``6b_finetuning``, strong = ``175b_finetuning``
   (both the fine-tuned, not the verifier-selected, solutions), correctness = their ``is_correct``. The verifier
   reads the weak solution: problem = question, steps = the solution's non-empty lines *including* the final
   ``A: <answer>`` line, with GSM8K calculator annotations ``<<expr=value>>`` removed (they repeat the expression
   written just before them; --calc-annotations keep leaves them in). Escalate to the strong solution when
   p_flawed > t; sweeping t traces accuracy vs share escalated. Baselines: random escalation (expected accuracy at
   each share, a straight line from weak to strong accuracy) and an oracle that escalates weak-wrong solutions
   first (those the strong model gets right before those it gets wrong; weak-right ones last). Reported: the
   smallest share escalated at which each policy reaches the strong model's accuracy, and 95 % of it.
   Model: the shipped artifact ``ProcessVerifier.load()``, trained on all of ProcessBench + synthetic flawed traces
   from GSM8K *train*; it never saw these 6B/175B solutions. ProcessBench GSM8K's problems are, however, GSM8K
   test questions, so the shipped artifact has seen other models' labelled solutions to some of the cascade's
   questions (the overlap is counted and printed). As a leakage control the cascade is also run with the
   holdout="gsm8k" model of part 1, which never saw any GSM8K test question.
4. Speed: wall time of each ``ProcessVerifier.verify`` call (shipped artifact, after one warm-up call) over the
   ProcessBench GSM8K traces, p50/p95 in ms, on this machine's cores (printed; the < 20 ms goal is checked on p50);
   and of ``LLMJudge.verify`` on a stratified seeded subset of --judge-n of the same traces (half label == -1, half
   not; constructor and one warm-up call on the shortest trace outside the subset -- where a lazily loaded model
   loads -- timed apart, not counted). Speed-up = judge median / verifier median on the same subset. The judge's
   ProcessBench F1 on that subset is printed beside the held-out (holdout="gsm8k") verifier's F1 on the same subset.

5. Step labels from completions (--labels FILE, written by ``python bench/reasoning.py label``; #18 item 4): the
   held-out models of part 1 are trained again with the labelled traces added (each labelled step weighted by
   each of --label-weights) and tested the same way, beside part 1's numbers. The labels are also checked against
   recomputed arithmetic: where a step of a labelled trace holds a wrong equation, the first wrong step should be
   that one or an earlier one.

Every result is also checked against the API contract (len(step_scores) == len(steps), scores and p_flawed in
[0, 1], first_error_step in [-1, len(steps)) and consistent with step_scores and threshold); violations are
counted and printed, not hidden. If the shipped artifact cannot be loaded, the run says so and uses the
holdout="gsm8k" model for the cascade and the speed measurement; if LLMJudge cannot be imported, part 4 runs
without it. --limit N takes a seeded sample of N per data set (ProcessBench subsets, cascade questions).

Reproduce (a run trains the two held-out models if they are not cached, ~1 min each on 2 cores; the rest takes ~1 min
plus the judge, ~30 s per trace with the 1.5B model on 2 cores, so ~10 min at --judge-n 20):
    pip install matplotlib            # for the cascade plot
    python bench/verifier.py [--retrain] [--judge-n 20 | --skip-judge] [--limit N] [--out bench/results/verifier.json]
(the published bench/results/verifier.json is the default run: --judge-n 20, seed 0, no --limit)

Writes --out (JSON) and verifier_cascade.png beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, SHARED_DATA, environment, git_describe, now, parser, version, write_json
from _common import wilson as wilson_interval

DATA = SHARED_DATA
SUBSETS = ("gsm8k", "math")
CALC = re.compile(r"<<[^<>]*>>")
NUMLIST = re.compile(r"\[\s*((?:-?[\d.eE+-]+,\s*)*-?[\d.eE+-]+)\s*\]")

# Goals (targets printed beside the measured numbers) and published reference figures (not measured here).
GOAL_F1 = {"gsm8k": 50.0, "math": 35.0}
REFERENCE_F1 = {"gsm8k": 47.9, "math": 29.5}  # Math-Shepherd-PRM-7B (7B, GPU), ProcessBench paper, Zheng et al. 2024
REFERENCE_NAME = "Math-Shepherd-PRM-7B"
GOAL_RWR_CAUGHT = 0.60
GOAL_RWR_FALSE_MAX = 0.10
GOAL_CASCADE_SHARE_MAX = 0.40
STRONG_FRACTION = 0.95
GOAL_SPEEDUP = 100.0
GOAL_MS = 20.0


@dataclass
class Pred:
    step_scores: list[float]
    first_error_step: int
    p_flawed: float
    ms: float


Verify = Callable[[str, list[str]], Any]


# ---------------------------------------------------------------- helpers

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def take(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """All rows, or a seeded sample of `limit` of them in their original order."""
    if limit is None or limit >= len(rows):
        return rows
    keep = set(random.Random(seed).sample(range(len(rows)), limit))
    return [r for i, r in enumerate(rows) if i in keep]


def goal(ok: bool) -> str:
    return "met" if ok else "NOT met"


def pct(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def ci(c: list[float] | None) -> str:
    return "—" if not c else f"{100 * c[0]:.0f}-{100 * c[1]:.0f}%"


def wilson(k: int, n: int) -> list[float] | None:
    """95 % Wilson score interval for k successes out of n; None for n = 0."""
    return list(wilson_interval(k, n, z=1.959964)) if n else None


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(score of a positive > score of a negative), ties count half."""
    if not pos or not neg:
        return None
    n = np.sort(np.asarray(neg, dtype=float))
    p = np.asarray(pos, dtype=float)
    below = np.searchsorted(n, p, side="left")
    ties = np.searchsorted(n, p, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(p) * len(n)))


def percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q))


def run_verify(verify: Verify, samples: list[dict], label: str) -> list[Pred]:
    out: list[Pred] = []
    t_report = time.perf_counter()
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        r = verify(s["problem"], s["steps"])
        ms = 1000 * (time.perf_counter() - t0)
        out.append(Pred([float(x) for x in r.step_scores], int(r.first_error_step), float(r.p_flawed), ms))
        if time.perf_counter() - t_report > 30:
            print(f"  {label}: {i + 1}/{len(samples)}", file=sys.stderr)
            t_report = time.perf_counter()
    return out


def contract_check(samples: list[dict], preds: list[Pred], threshold: float | None) -> dict[str, Any]:
    """Count results that break the API contract. first_error_step must equal the first step whose score reaches the
    threshold (>= or >, either accepted) when a threshold is given."""
    bad: dict[str, list[str]] = {"len_mismatch": [], "score_range": [], "p_range": [], "first_error_range": [],
                                 "first_error_vs_threshold": []}
    for s, p in zip(samples, preds):
        sid = str(s.get("id", "?"))
        if len(p.step_scores) != len(s["steps"]):
            bad["len_mismatch"].append(sid)
        if any(not 0.0 <= x <= 1.0 for x in p.step_scores):
            bad["score_range"].append(sid)
        if not 0.0 <= p.p_flawed <= 1.0:
            bad["p_range"].append(sid)
        if not -1 <= p.first_error_step < len(s["steps"]):
            bad["first_error_range"].append(sid)
        if threshold is not None:
            ge = next((i for i, x in enumerate(p.step_scores) if x >= threshold), -1)
            gt = next((i for i, x in enumerate(p.step_scores) if x > threshold), -1)
            if p.first_error_step not in (ge, gt):
                bad["first_error_vs_threshold"].append(sid)
    return {k: {"count": len(v), "examples": v[:5]} for k, v in bad.items()}


def print_contract(name: str, check: dict[str, Any]) -> None:
    issues = {k: v for k, v in check.items() if v["count"]}
    if issues:
        print(f"  !! API contract violations ({name}): "
              + "; ".join(f"{k}: {v['count']} (e.g. {', '.join(v['examples'])})" for k, v in issues.items()))


# ---------------------------------------------------------------- data

def load_processbench(subset: str) -> list[dict]:
    return json.loads((DATA / "processbench" / f"{subset}.json").read_text())


def load_cascade(calc: str) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").read_text().splitlines()
            if line.strip()]
    out = []
    for i, r in enumerate(rows):
        sol = r["6b_finetuning"]["solution"]
        if calc == "strip":
            sol = CALC.sub("", sol)
        out.append({"id": f"gsm8k-test-{i}", "problem": r["question"],
                    "steps": [ln.strip() for ln in sol.splitlines() if ln.strip()],
                    "weak_correct": bool(r["6b_finetuning"]["is_correct"]),
                    "strong_correct": bool(r["175b_finetuning"]["is_correct"])})
    return out


def norm(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- part 1: ProcessBench

def pb_metrics(labels: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    err = [(lab, p) for lab, p in zip(labels, predicted) if lab != -1]
    cor = [p for lab, p in zip(labels, predicted) if lab == -1]
    k_err = sum(lab == p for lab, p in err)
    k_cor = sum(p == -1 for p in cor)
    acc_err = k_err / len(err) if err else float("nan")
    acc_cor = k_cor / len(cor) if cor else float("nan")
    f1 = 2 * acc_err * acc_cor / (acc_err + acc_cor) if acc_err + acc_cor > 0 else 0.0
    return {"n": len(labels), "n_erroneous": len(err), "n_correct": len(cor),
            "acc_erroneous": 100 * acc_err, "acc_erroneous_ci95": [100 * x for x in wilson(k_err, len(err)) or []],
            "acc_correct": 100 * acc_cor, "acc_correct_ci95": [100 * x for x in wilson(k_cor, len(cor)) or []],
            "f1": 100 * f1,
            "flagged_erroneous_any_step": 100 * sum(p != -1 for _, p in err) / len(err) if err else None,
            "too_early": sum(p != -1 and p < lab for lab, p in err), "too_late_or_missed": sum(p == -1 or p > lab for lab, p in err)}


def best_threshold_f1(labels: Sequence[int], preds: Sequence[Pred]) -> dict[str, Any]:
    """F1 at the best t for the rule 'first step with score >= t' (diagnostic; tuned on the test data).
    With running maxima M_i, a sample with label L is right iff M_{L-1} < t <= M_L, a correct one iff t > M_last."""
    lo_e, hi_e, lo_c = [], [], []
    for lab, p in zip(labels, preds):
        m = np.maximum.accumulate(np.asarray(p.step_scores, dtype=float)) if p.step_scores else np.zeros(0)
        if lab == -1:
            lo_c.append(m[-1] if len(m) else -np.inf)
        elif lab < len(m):
            lo_e.append(m[lab - 1] if lab > 0 else -np.inf)
            hi_e.append(m[lab])
    if not lo_e or not lo_c:
        return {}
    lo_e_s, hi_e_s, lo_c_s = np.sort(lo_e), np.sort(hi_e), np.sort(lo_c)
    vals = np.unique(np.concatenate([hi_e_s, lo_c_s[np.isfinite(lo_c_s)]]))
    cands = np.concatenate([vals, [np.nextafter(vals.max(), np.inf)]])
    n_err = sum(lab != -1 for lab in labels)  # samples whose label is past their last score count as misses
    acc_e = (np.searchsorted(lo_e_s, cands, "left") - np.searchsorted(hi_e_s, cands, "left")) / n_err
    acc_c = np.searchsorted(lo_c_s, cands, "left") / len(lo_c)
    f1 = np.where(acc_e + acc_c > 0, 2 * acc_e * acc_c / np.maximum(acc_e + acc_c, 1e-300), 0.0)
    i = int(np.argmax(f1))
    return {"threshold": float(cands[i]), "f1": 100 * float(f1[i]), "acc_erroneous": 100 * float(acc_e[i]),
            "acc_correct": 100 * float(acc_c[i])}


def ensure_artifact(holdout: str, retrain: bool, art_dir: Path, train: Callable[..., dict]) -> dict[str, Any]:
    path = art_dir / f"verifier-holdout-{holdout}.json"
    meta_path = path.with_suffix(".meta.json")
    if retrain or not path.exists():
        print(f"  training holdout={holdout!r} -> {path} ...", file=sys.stderr)
        art_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        meta = train(holdout=holdout, out=path)
        info = {"holdout": holdout, "train_s": time.perf_counter() - t0, "trained_at": now(), "git": git_describe(),
                "train_verifier_metadata": brief(meta)}
        meta_path.write_text(json.dumps(info, indent=1, default=to_json) + "\n")
        cached = False
    else:
        info = json.loads(meta_path.read_text()) if meta_path.exists() else {"holdout": holdout, "note": "no .meta.json"}
        cached = True
    return {"path": str(path), "sha256": sha256(path), "cached": cached, **info}


def part_processbench(pv: Any, train: Callable[..., dict], args: argparse.Namespace,
                      data: dict[str, list[dict]]) -> tuple[dict[str, Any], dict[str, tuple[Any, list[Pred]]]]:
    print("\n== 1. ProcessBench, held-out models ==")
    res: dict[str, Any] = {}
    keep: dict[str, tuple[Any, list[Pred]]] = {}
    for test in SUBSETS:
        trained_on = [s for s in SUBSETS if s != test]
        art = ensure_artifact(test, args.retrain, args.artifact_dir, train)
        try:
            v = pv.load(Path(art["path"]))
        except Exception as e:
            raise SystemExit(f"cannot load {art['path']} ({type(e).__name__}: {e}); rerun with --retrain") from e
        samples = data[test]
        preds = run_verify(v.verify, samples, f"processbench {test}")
        labels = [s["label"] for s in samples]
        m = pb_metrics(labels, [p.first_error_step for p in preds])
        check = contract_check(samples, preds, float(v.threshold))
        res[test] = {"test": f"ProcessBench {test}", "trained_on": [f"ProcessBench {s}" for s in trained_on]
                     + ["synthetic flawed GSM8K-train traces"], "artifact": art, "threshold": float(v.threshold),
                     **m, "goal_f1": GOAL_F1[test], "goal_met": m["f1"] >= GOAL_F1[test],
                     "reference": {"name": REFERENCE_NAME, "f1": REFERENCE_F1[test]},
                     "auroc_p_flawed": auroc([p.p_flawed for lab, p in zip(labels, preds) if lab != -1],
                                             [p.p_flawed for lab, p in zip(labels, preds) if lab == -1]),
                     "diagnostic_best_threshold_on_test": best_threshold_f1(labels, preds),
                     "ms_per_trace_p50": percentile([p.ms for p in preds], 50), "contract": check}
        keep[test] = (v, preds)
        how = f"cached, trained {art.get('trained_at', '?')} at git {art.get('git', '?')}" if art["cached"] else "trained now"
        print(f"  holdout={test!r}: trained on {' + '.join(res[test]['trained_on'])} ({how}, {art['path']}); "
              f"tested on ProcessBench {test}")
        meta = art.get("train_verifier_metadata")
        if meta:
            print(f"    train_verifier metadata: {meta_line(meta)}")
        print_contract(test, check)
    print(f"\n{'test split':12}{'trained on':28}{'n':>6}{'err acc':>9}{'cor acc':>9}{'F1':>7}{'goal':>10}"
          f"{'ref F1':>8}{'AUROC':>7}{'thr':>7}")
    for test, r in res.items():
        ok = f">={r['goal_f1']:.0f} {goal(r['goal_met'])}"
        trained = "PB " + "+".join(s for s in SUBSETS if s != test) + " + synth"
        au = "—" if r["auroc_p_flawed"] is None else f"{r['auroc_p_flawed']:.3f}"
        print(f"{'PB ' + test:12}{trained:28}{r['n']:>6}{r['acc_erroneous']:>9.1f}{r['acc_correct']:>9.1f}"
              f"{r['f1']:>7.1f}{ok:>14}{r['reference']['f1']:>8.1f}{au:>7}{r['threshold']:>7.3f}")
    print(f"  (ref F1 = {REFERENCE_NAME}, 7B on a GPU, as published; err/cor acc = exact first-error-step match on "
          "label != -1 / predicted -1 on label == -1; AUROC = p_flawed, trace has an error)")
    for test, r in res.items():
        d = r["diagnostic_best_threshold_on_test"]
        if d:
            print(f"  diagnostic, NOT the reported number: {test} F1 at the best step threshold chosen on this test "
                  f"split = {d['f1']:.1f} (t={d['threshold']:.3f}; the model's own threshold {r['threshold']:.3f} gives "
                  f"{r['f1']:.1f})")
    return res, keep


# ---------------------------------------------------------------- part 2: right for wrong reasons

def rwr_stats(samples: list[dict], preds: list[Pred], scores: list[float] | None = None) -> dict[str, Any]:
    rwr = [p for s, p in zip(samples, preds) if s["final_answer_correct"] and s["label"] != -1]
    sound = [p for s, p in zip(samples, preds) if s["label"] == -1]
    k_c = sum(p.first_error_step != -1 for p in rwr)
    k_f = sum(p.first_error_step != -1 for p in sound)
    out: dict[str, Any] = {
        "n_rwr": len(rwr), "n_sound": len(sound),
        "caught": k_c / len(rwr) if rwr else None, "caught_ci95": wilson(k_c, len(rwr)),
        "false_flags": k_f / len(sound) if sound else None, "false_flags_ci95": wilson(k_f, len(sound)),
        "auroc_p_flawed": auroc([p.p_flawed for p in rwr], [p.p_flawed for p in sound])}
    out["goal_met"] = (out["caught"] is not None and out["false_flags"] is not None
                       and out["caught"] >= GOAL_RWR_CAUGHT and out["false_flags"] <= GOAL_RWR_FALSE_MAX)
    # sweep on p_flawed: flag = p_flawed >= t
    if rwr and sound:
        pr, ps = np.sort([p.p_flawed for p in rwr]), np.sort([p.p_flawed for p in sound])
        vals = np.unique(np.concatenate([pr, ps]))
        cands = np.concatenate([vals, [np.nextafter(vals.max(), np.inf)]])
        caught = (len(pr) - np.searchsorted(pr, cands, "left")) / len(pr)
        false = (len(ps) - np.searchsorted(ps, cands, "left")) / len(ps)
        ok = false <= GOAL_RWR_FALSE_MAX + 1e-12
        i = int(np.flatnonzero(ok)[np.argmax(caught[ok])])
        out["sweep_best"] = {"rule": "p_flawed >= t", "false_flags_cap": GOAL_RWR_FALSE_MAX, "threshold": float(cands[i]),
                             "caught": float(caught[i]), "false_flags": float(false[i]),
                             "goal_met": bool(caught[i] >= GOAL_RWR_CAUGHT)}
    return out


def part_rwr(data: dict[str, list[dict]], kept: dict[str, tuple[Any, list[Pred]]]) -> dict[str, Any]:
    print("\n== 2. Right for wrong reasons (final answer correct, process wrong) ==")
    print("  flagged = first_error_step != -1 (each subset scored by the model that held it out)")
    res: dict[str, Any] = {}
    for sub in SUBSETS:
        res[sub] = rwr_stats(data[sub], kept[sub][1])
    res["pooled"] = rwr_stats(data["gsm8k"] + data["math"], kept["gsm8k"][1] + kept["math"][1])
    res["pooled"]["note"] = "gsm8k and math samples together, each scored by its own held-out model; the sweep " \
                            "applies one p_flawed threshold to both models"
    print(f"\n{'subset':9}{'RWR n':>7}{'caught':>9}{'95% CI':>14}{'sound n':>9}{'false fl.':>10}{'95% CI':>14}"
          f"{'goal':>9}  | sweep on p_flawed (test-tuned): caught at false<= {GOAL_RWR_FALSE_MAX:.0%}")
    for sub, r in res.items():
        sw = r.get("sweep_best")
        sws = "—" if not sw else (f"{pct(sw['caught'])} at false {pct(sw['false_flags'])} (p>={sw['threshold']:.3f}) "
                                  f"{goal(sw['goal_met'])}")
        print(f"{sub:9}{r['n_rwr']:>7}{pct(r['caught']):>9}{ci(r['caught_ci95']):>14}{r['n_sound']:>9}"
              f"{pct(r['false_flags']):>10}{ci(r['false_flags_ci95']):>14}{goal(r['goal_met']):>9}  | {sws}")
    print(f"  goal: >= {GOAL_RWR_CAUGHT:.0%} caught at <= {GOAL_RWR_FALSE_MAX:.0%} false flags")
    return res


# ---------------------------------------------------------------- part 5: step labels from completions

def label_vs_arithmetic(rows: list[dict]) -> dict[str, Any]:
    """Where a labelled wrong trace holds a wrong equation at step j, its label should be j or earlier."""
    from smallfleet.verify.arith import equations

    at = before = after = without = 0
    for r in rows:
        if r.get("label") in (None, -1):
            continue
        j = next((i for i, st in enumerate(r["steps"]) if any(e.ok is False for e in equations(st))), None)
        if j is None:
            without += 1
        elif r["label"] == j:
            at += 1
        elif r["label"] < j:
            before += 1
        else:
            after += 1
    n = at + before + after
    return {"with_wrong_equation": n, "label_at_it": at, "label_before_it": before, "label_after_it": after,
            "consistent": (at + before) / n if n else None, "without_wrong_equation": without}


def part_labels(pv: Any, train: Callable[..., dict], args: argparse.Namespace, data: dict[str, list[dict]],
                pb: dict[str, Any], rwr: dict[str, Any]) -> dict[str, Any]:
    print(f"\n== 5. Step labels from completions ({args.labels}) ==")
    rows = [json.loads(x) for x in args.labels.read_text().splitlines() if x.strip()]
    used = [r for r in rows if r.get("label") is not None]
    out: dict[str, Any] = {
        "labels": str(args.labels), "sha256": sha256(args.labels), "traces": len(rows),
        "first_error_found": sum(r["label"] not in (None, -1) for r in rows), "no_error": sum(r["label"] == -1 for r in rows),
        "skipped": len(rows) - len(used), "completer": sorted({r.get("completer", "?") for r in rows}),
        "k": sorted({r.get("k", 0) for r in rows}), "probes_per_trace": float(np.mean([len(r["probes"]) for r in rows])),
        "seconds_per_trace": float(np.mean([r["seconds"] for r in rows])), "seconds_total": float(sum(r["seconds"] for r in rows)),
        "vs_arithmetic": label_vs_arithmetic(rows), "variants": []}
    print(f"  {len(rows)} traces: first error found {out['first_error_found']}, no error {out['no_error']}, skipped "
          f"{out['skipped']}; {out['probes_per_trace']:.1f} probes, {out['seconds_per_trace']:.0f} s a trace")
    print(f"  against recomputed arithmetic: {out['vs_arithmetic']}")
    base = {"weight": 0, "gsm8k_f1": pb["gsm8k"]["f1"], "math_f1": pb["math"]["f1"],
            "gsm8k_auroc": pb["gsm8k"]["auroc_p_flawed"], "math_auroc": pb["math"]["auroc_p_flawed"],
            "rwr_pooled_caught_at_10pct": (rwr["pooled"].get("sweep_best") or {}).get("caught")}
    out["variants"].append(base)
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.label_weights:
            v: dict[str, Any] = {"weight": w}
            preds_all: list[Pred] = []
            for test in SUBSETS:
                art = Path(tmp) / f"{test}-{w:g}.json"
                train(holdout=test, out=art, labels=args.labels, label_weight=w)
                preds = run_verify(pv.load(art).verify, data[test], f"labels w={w:g} {test}")
                labels = [x["label"] for x in data[test]]
                v[f"{test}_f1"] = pb_metrics(labels, [p.first_error_step for p in preds])["f1"]
                v[f"{test}_auroc"] = auroc([p.p_flawed for lab, p in zip(labels, preds) if lab != -1],
                                           [p.p_flawed for lab, p in zip(labels, preds) if lab == -1])
                preds_all += preds
            v["rwr_pooled_caught_at_10pct"] = (rwr_stats(data["gsm8k"] + data["math"], preds_all).get("sweep_best") or {}).get("caught")
            out["variants"].append(v)
    print(f"\n{'label weight':>13}{'GSM8K F1':>10}{'MATH F1':>9}{'AUROC GSM8K':>13}{'AUROC MATH':>12}{'RWR caught':>12}")
    for v in out["variants"]:
        name = "none" if v["weight"] == 0 else f"{v['weight']:g}"
        print(f"{name:>13}{v['gsm8k_f1']:>10.1f}{v['math_f1']:>9.1f}{v['gsm8k_auroc'] or 0:>13.3f}{v['math_auroc'] or 0:>12.3f}"
              f"{pct(v['rwr_pooled_caught_at_10pct']):>12}")
    print(f"  goals: F1 >= {GOAL_F1['gsm8k']:.0f} / >= {GOAL_F1['math']:.0f}; RWR caught >= {GOAL_RWR_CAUGHT:.0%} at "
          f"<= {GOAL_RWR_FALSE_MAX:.0%} false flags")
    return out


# ---------------------------------------------------------------- part 3: cascade

def cascade_curves(p: Sequence[float], weak: Sequence[bool], strong: Sequence[bool]) -> dict[str, Any]:
    """Accuracy vs share escalated. Verifier: escalate when p_flawed > t, one point per distinct threshold (ties move
    together). Random: expected accuracy. Oracle: weak-wrong & strong-right first, then weak-wrong & strong-wrong,
    then weak-right & strong-right, then weak-right & strong-wrong. Correct counts are kept as numbers of questions."""
    n = len(p)
    w = np.asarray(weak, dtype=int)
    s = np.asarray(strong, dtype=int)
    base = int(w.sum())
    pa = np.asarray(p, dtype=float)
    order = np.argsort(-pa, kind="stable")
    gain = np.concatenate([[0], np.cumsum(s[order] - w[order])])
    # t = each distinct p (descending), then just below the smallest: escalated = #(p > t)
    distinct = np.unique(pa)[::-1]
    thr = np.concatenate([distinct, [np.nextafter(distinct[-1], -np.inf)]])
    escalated = n - np.searchsorted(np.sort(pa), thr, side="right")
    verifier = [{"threshold_gt": float(t), "escalated": int(e), "correct": base + int(gain[e])}
                for t, e in zip(thr, escalated)]
    okey = sorted(range(n), key=lambda i: (w[i], -s[i]))
    ogain = np.concatenate([[0], np.cumsum(s[okey] - w[okey])])
    oracle = [{"escalated": k, "correct": base + int(ogain[k])} for k in range(n + 1)]
    random_ = [{"escalated": k, "correct": base + k / n * (int(s.sum()) - base)} for k in range(n + 1)]
    return {"verifier": verifier, "random": random_, "oracle": oracle}


def share_to_reach(points: list[dict], n: int, target_correct: float) -> float | None:
    hits = [pt["escalated"] for pt in points if pt["correct"] >= target_correct - 1e-9]
    return min(hits) / n if hits else None


def part_cascade(v_shipped: Any | None, v_control: Any, args: argparse.Namespace,
                 pb_gsm8k_all: list[dict]) -> dict[str, Any]:
    print("\n== 3. Cascade on GSM8K test: 6B fine-tuned (weak) -> 175B fine-tuned (strong) ==")
    rows = take(load_cascade(args.calc_annotations), args.limit, args.seed)
    n = len(rows)
    pb_q = {norm(s["problem"]) for s in pb_gsm8k_all}
    overlap = sum(norm(r["problem"]) in pb_q for r in rows)
    weak, strong = [r["weak_correct"] for r in rows], [r["strong_correct"] for r in rows]
    acc_w, acc_s = sum(weak) / n, sum(strong) / n
    print(f"  {n} questions; steps = solution lines incl. the final 'A: <answer>' line, calculator annotations "
          f"{args.calc_annotations}; escalate when p_flawed > t")
    if v_shipped is None:
        print("  shipped artifact NOT AVAILABLE: only the holdout='gsm8k' model (no GSM8K-test question seen) runs")
    else:
        print(f"  shipped artifact: trained on all ProcessBench + synthetic flawed GSM8K-train traces, never on these "
              f"6B/175B solutions; but {overlap}/{n} of these questions have ProcessBench GSM8K solutions (other models) "
              "it trained on -> control: the holdout='gsm8k' model (no GSM8K-test question seen)")
    if isinstance(out_meta := getattr(v_shipped, "meta", None), dict):
        print(f"  shipped artifact metadata: {meta_line(brief(out_meta))}")
    out: dict[str, Any] = {"n": n, "shipped_artifact_meta": brief(getattr(v_shipped, "meta", None)),
                           "weak": "6b_finetuning", "strong": "175b_finetuning",
                           "steps": "non-empty solution lines including the final 'A: <answer>' line",
                           "calc_annotations": args.calc_annotations, "escalate_rule": "p_flawed > t",
                           "questions_with_processbench_solutions": overlap,
                           "weak_accuracy": acc_w, "strong_accuracy": acc_s, "models": {}}
    targets = {"match_strong": acc_s * n, f"{STRONG_FRACTION:.0%}_of_strong": STRONG_FRACTION * acc_s * n}
    models = ({"shipped": v_shipped} if v_shipped is not None else {}) | {"holdout_gsm8k_control": v_control}
    scored: dict[str, tuple[list[float], float, dict[str, Any]]] = {}
    for name, v in models.items():
        preds = run_verify(v.verify, rows, f"cascade {name}")
        check = contract_check(rows, preds, float(v.threshold))
        print_contract(f"cascade {name}", check)
        scored[name] = ([x.p_flawed for x in preds], float(v.threshold), check)
    scored["outcome_cv"] = (outcome_cv(rows, v_control), 0.5, {})
    out["outcome_cv"] = {
        "what": "p_wrong of the outcome verifier (smallfleet/verify/outcome.py), 5-fold cross-validation over "
                "questions: each fold's model is fitted on the other folds' solutions from all four GSM8K example "
                "models (6B/175B fine-tuned and verification) and scores this fold's 6B solutions; its step-score "
                "features come from the holdout='gsm8k' process verifier (no GSM8K-test question seen)",
        "escalate_rule": "p_wrong > t"}
    for name, (p, threshold, check) in scored.items():
        curves = cascade_curves(p, weak, strong)
        need = {t: {pol: share_to_reach(curves[pol], n, c) for pol in curves} for t, c in targets.items()}
        best = max(curves["verifier"], key=lambda pt: (pt["correct"], -pt["escalated"]))
        out["models"][name] = {
            "threshold": threshold, "contract": check,
            "auroc_p_flawed_weak_wrong": auroc([x for x, c in zip(p, weak) if not c], [x for x, c in zip(p, weak) if c]),
            "share_needed": need,
            "goal_met": need["match_strong"]["verifier"] is not None
                        and need["match_strong"]["verifier"] <= GOAL_CASCADE_SHARE_MAX,
            "best_verifier_point": {"threshold_gt": best["threshold_gt"], "share": best["escalated"] / n,
                                    "accuracy": best["correct"] / n},
            "at_own_threshold": own_threshold_point(p, weak, strong, threshold),
            "curves": {"verifier_columns": ["threshold_gt", "escalated", "correct"],
                       "verifier": [[pt["threshold_gt"], pt["escalated"], pt["correct"]] for pt in curves["verifier"]],
                       "random_columns": ["escalated", "expected correct"], "random": [[0, sum(weak)], [n, sum(strong)]],
                       "oracle_columns": ["escalated", "correct"], "oracle": oracle_breakpoints(curves["oracle"])},
            "_curves_full": curves}
    print(f"\n  weak (6B) accuracy {pct(acc_w)}, strong (175B) accuracy {pct(acc_s)}")
    print(f"{'share escalated needed':34}{'verifier':>10}{'random':>10}{'oracle':>10}   model")
    for name, m in out["models"].items():
        for t, d in m["share_needed"].items():
            label = f"to reach {t.replace('_', ' ')} ({pct(targets[t] / n)})"
            print(f"{label:34}" + "".join(f"{pct(d[pol]):>10}" for pol in ("verifier", "random", "oracle"))
                  + f"   {name}")
        au = m["auroc_p_flawed_weak_wrong"]
        print(f"  {name}: goal match strong with <= {GOAL_CASCADE_SHARE_MAX:.0%} escalated: {goal(m['goal_met'])}; "
              f"AUROC(p_flawed, weak wrong) {'—' if au is None else f'{au:.3f}'}; best verifier point "
              f"{pct(m['best_verifier_point']['accuracy'])} at {pct(m['best_verifier_point']['share'])} escalated; "
              f"at t = its threshold {m['threshold']:.3f}: {pct(m['at_own_threshold']['accuracy'])} at "
              f"{pct(m['at_own_threshold']['share'])} escalated")
    print_decile_table(out, n)
    plot_cascade(out, n, args.out.parent / "verifier_cascade.png")
    for m in out["models"].values():
        del m["_curves_full"]
    return out


def outcome_cv(rows: list[dict], v_control: Any, folds: int = 5) -> list[float]:
    """Cross-validated p_wrong for each cascade row (its 6B solution), folds over questions."""
    from smallfleet.verify.outcome import fit_outcome, outcome_dataset

    print("  outcome verifier: features of all 4 x 1319 example solutions, 5-fold CV over questions …")
    x, y, q, src = outcome_dataset(DATA, v_control.step_scores)
    weak_row = {int(qi): i for i, (qi, k) in enumerate(zip(q, src)) if k == "6b_finetuning"}
    p_all = np.zeros(len(y))
    for f in range(folds):
        test = q % folds == f
        p_all[test] = fit_outcome(x[~test], y[~test]).p_wrong_rows(x[test])
    return [float(p_all[weak_row[int(r["id"].rsplit("-", 1)[1])]]) for r in rows]


def own_threshold_point(p: Sequence[float], weak: Sequence[bool], strong: Sequence[bool], t: float) -> dict[str, float]:
    esc = [x > t for x in p]
    correct = sum(sc if e else wc for e, wc, sc in zip(esc, weak, strong))
    return {"threshold_gt": t, "share": sum(esc) / len(p), "accuracy": correct / len(p)}


def oracle_breakpoints(points: list[dict]) -> list[list[int]]:
    """The oracle curve is piecewise linear; keep its ends and the points where the slope changes."""
    keep = []
    for i, pt in enumerate(points):
        if i in (0, len(points) - 1) or (pt["correct"] - points[i - 1]["correct"]) != (points[i + 1]["correct"] - pt["correct"]):
            keep.append([pt["escalated"], pt["correct"]])
    return keep


def print_decile_table(out: dict[str, Any], n: int) -> None:
    cols = list(out["models"])
    print(f"\n{'escalated <=':>13}" + "".join(f"{'verifier ' + c[:8]:>20}" for c in cols) + f"{'random':>10}{'oracle':>10}")
    for dec in range(1, 11):
        share = dec / 10
        row = f"{share:>13.0%}"
        for c in cols:
            cur = out["models"][c]["_curves_full"]
            pts = [pt for pt in cur["verifier"] if pt["escalated"] <= share * n + 1e-9]
            pt = max(pts, key=lambda q: q["escalated"])
            row += f"{pct(pt['correct'] / n) + ' @' + pct(pt['escalated'] / n):>20}"
        cur = out["models"][cols[0]]["_curves_full"]
        k = int(share * n + 1e-9)
        row += f"{pct(cur['random'][k]['correct'] / n):>10}{pct(cur['oracle'][k]['correct'] / n):>10}"
        print(row)
    print("  (verifier column: accuracy @ actual share at the largest threshold step not above the row's share)")


def plot_cascade(out: dict[str, Any], n: int, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"  (no plot: {e}; pip install matplotlib)")
        out["plot"] = None
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {"shipped": dict(color="C0", lw=2, label="verifier (shipped artifact)"),
              "holdout_gsm8k_control": dict(color="C0", lw=1, ls="--", label="verifier (holdout=gsm8k model, control)"),
              "outcome_cv": dict(color="C4", lw=2, label="outcome verifier p_wrong (5-fold CV over questions)")}
    first = None
    for name, m in out["models"].items():
        cur = m["_curves_full"]
        first = first or cur
        xs = [pt["escalated"] / n for pt in cur["verifier"]]
        ys = [pt["correct"] / n for pt in cur["verifier"]]
        ax.plot(xs, ys, **styles.get(name, {"label": name}))
    if first is not None:
        ax.plot([pt["escalated"] / n for pt in first["random"]], [pt["correct"] / n for pt in first["random"]],
                color="C7", label="random escalation (expected)")
        ax.plot([pt["escalated"] / n for pt in first["oracle"]], [pt["correct"] / n for pt in first["oracle"]],
                color="C2", label="oracle (weak-wrong first)")
    ax.axhline(out["weak_accuracy"], color="C3", ls=":", label=f"weak 6B alone ({pct(out['weak_accuracy'])})")
    ax.axhline(out["strong_accuracy"], color="C1", ls=":", label=f"strong 175B alone ({pct(out['strong_accuracy'])})")
    ax.axvline(GOAL_CASCADE_SHARE_MAX, color="k", lw=0.5, ls="-.", label=f"goal: <= {GOAL_CASCADE_SHARE_MAX:.0%} escalated")
    ax.set_xlabel("share of questions escalated to the strong model")
    ax.set_ylabel("cascade accuracy")
    ax.set_title(f"GSM8K test cascade, n={n}: escalate when p_flawed (or p_wrong) > t")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    out["plot"] = str(path)
    print(f"  plot: {path}")


# ---------------------------------------------------------------- part 4: speed

def judge_subset(samples: list[dict], k: int, seed: int) -> list[int]:
    """Indices of a seeded subset: ceil(k/2) with label == -1, the rest with label != -1 (as available)."""
    rng = random.Random(seed)
    cor = [i for i, s in enumerate(samples) if s["label"] == -1]
    err = [i for i, s in enumerate(samples) if s["label"] != -1]
    n_cor = min(len(cor), (k + 1) // 2)
    n_err = min(len(err), k - n_cor)
    n_cor = min(len(cor), k - n_err)
    return sorted(rng.sample(cor, n_cor) + rng.sample(err, n_err))


def part_speed(v_timed: Any, timed_name: str, holdout_preds: list[Pred], judge_cls: Any | None,
               import_error: str | None, args: argparse.Namespace, samples: list[dict]) -> dict[str, Any]:
    print("\n== 4. Speed: ProcessVerifier vs LLM judge, ProcessBench GSM8K ==")
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    shortest = min(range(len(samples)), key=lambda i: sum(map(len, samples[i]["steps"])))
    v_timed.verify(samples[shortest]["problem"], samples[shortest]["steps"])  # warm-up
    preds = run_verify(v_timed.verify, samples, "speed verifier")
    ms = [p.ms for p in preds]
    res: dict[str, Any] = {"cpu_count": cores, "usable_cores": usable, "verifier": {
        "model": timed_name, "n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
        "mean_ms": statistics.fmean(ms), "goal_ms": GOAL_MS, "goal_met": percentile(ms, 50) < GOAL_MS}}
    print(f"  {usable} usable cores ({cores} reported); verifier ({timed_name}), {len(ms)} traces: "
          f"p50 {res['verifier']['p50_ms']:.2f} ms, p95 {res['verifier']['p95_ms']:.2f} ms "
          f"(goal < {GOAL_MS:.0f} ms per trace: {goal(res['verifier']['goal_met'])})")
    if args.skip_judge or judge_cls is None:
        res["judge"] = {"skipped": True, "why": "--skip-judge" if args.skip_judge else f"LLMJudge not importable: {import_error}"}
        print(f"  LLM judge skipped ({res['judge']['why']})")
        return res
    idx = judge_subset(samples, args.judge_n, args.seed)
    sub = [samples[i] for i in idx]
    outside = [i for i in range(len(samples)) if i not in set(idx)]
    warm = min(outside, key=lambda i: sum(map(len, samples[i]["steps"]))) if outside else shortest
    try:
        t0 = time.perf_counter()
        judge = judge_cls()
        t1 = time.perf_counter()
        judge.verify(samples[warm]["problem"], samples[warm]["steps"])
        t2 = time.perf_counter()
        jp = run_verify(judge.verify, sub, "LLM judge")
    except Exception as e:
        res["judge"] = {"available": False, "error": f"{type(e).__name__}: {e}"}
        print(f"  LLM judge FAILED: {type(e).__name__}: {e}")
        return res
    jms = [p.ms for p in jp]
    vms_sub = [preds[i].ms for i in idx]
    labels = [s["label"] for s in sub]
    j_m = pb_metrics(labels, [p.first_error_step for p in jp])
    v_m = pb_metrics(labels, [holdout_preds[i].first_error_step for i in idx])
    ratio = percentile(jms, 50) / percentile(vms_sub, 50)
    check = contract_check(sub, jp, getattr(judge, "threshold", None))
    print_contract("LLM judge", check)
    res["judge"] = {"available": True, "n": len(jp), "subset_ids": [s.get("id") for s in sub],
                    "n_label_minus1": sum(lab == -1 for lab in labels), "constructor_s": t1 - t0, "warmup_s": t2 - t1,
                    "p50_ms": percentile(jms, 50), "p95_ms": percentile(jms, 95), "mean_ms": statistics.fmean(jms),
                    "verifier_p50_ms_same_subset": percentile(vms_sub, 50),
                    "speedup_median": ratio, "speedup_median_vs_all_traces": percentile(jms, 50) / res["verifier"]["p50_ms"],
                    "goal_speedup": GOAL_SPEEDUP, "goal_met": ratio >= GOAL_SPEEDUP,
                    "judge_processbench": j_m, "verifier_holdout_gsm8k_processbench_same_subset": v_m,
                    "per_sample": [{"id": s.get("id"), "label": s["label"], "judge": p.first_error_step,
                                    "judge_p_flawed": p.p_flawed, "verifier": holdout_preds[i].first_error_step}
                                   for s, p, i in zip(sub, jp, idx)], "contract": check}
    print(f"  subset: {len(sub)} traces ({res['judge']['n_label_minus1']} with label -1), seed {args.seed}; judge "
          f"constructor {t1 - t0:.1f} s, warm-up call incl. any lazy model load {t2 - t1:.1f} s (neither counted)")
    print(f"\n{'':30}{'p50 ms':>10}{'p95 ms':>10}{'F1':>7}{'err acc':>9}{'cor acc':>9}")
    print(f"{'LLM judge':30}{percentile(jms, 50):>10.1f}{percentile(jms, 95):>10.1f}{j_m['f1']:>7.1f}"
          f"{j_m['acc_erroneous']:>9.1f}{j_m['acc_correct']:>9.1f}")
    print(f"{'verifier (same subset)':30}{percentile(vms_sub, 50):>10.2f}{percentile(vms_sub, 95):>10.2f}"
          f"{v_m['f1']:>7.1f}{v_m['acc_erroneous']:>9.1f}{v_m['acc_correct']:>9.1f}")
    print(f"  speed-up (judge p50 / verifier p50, same subset): {ratio:.0f}x (goal >= {GOAL_SPEEDUP:.0f}x: "
          f"{goal(ratio >= GOAL_SPEEDUP)}); timing uses the {timed_name}, F1 uses the holdout='gsm8k' model")
    return res


# ---------------------------------------------------------------- main

def to_json(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x.tolist() if isinstance(x, np.ndarray) else str(x)


def meta_line(meta: dict[str, Any]) -> str:
    """The numeric entries of a metadata dict (plus holdout/model) on one line."""
    return ", ".join(f"{k}={v}" for k, v in meta.items() if not isinstance(v, (dict, str)) or k in ("holdout", "model"))


def brief(meta: Any) -> Any:
    """Metadata without bulky arrays (weights etc. stay in the artifact, whose sha256 is recorded)."""
    if isinstance(meta, dict):
        return {k: brief(v) for k, v in meta.items()}
    if isinstance(meta, (list, tuple)) and len(meta) > 8:
        return f"<{len(meta)} items>"
    return meta


def dump_json(obj: Any) -> str:
    """Indented JSON with innermost lists of numbers on one line (the curves stay readable and small)."""
    text = json.dumps(obj, indent=1, default=to_json)
    return NUMLIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--retrain", action="store_true", help="retrain the held-out models even if cached")
    ap.add_argument("--judge-n", type=int, default=20, help="traces for the LLM judge (stratified, seeded)")
    ap.add_argument("--skip-judge", action="store_true", help="skip the LLM judge")
    ap.add_argument("--limit", type=int, default=None, help="cap samples per part (seeded sample) for quick runs")
    ap.add_argument("--seed", type=int, default=0, help="seed for --limit samples and the judge subset")
    ap.add_argument("--calc-annotations", choices=("strip", "keep"), default="strip",
                    help="GSM8K <<expr=value>> annotations in the cascade's weak solutions")
    ap.add_argument("--artifact-dir", type=Path, default=RESULTS, help="where held-out artifacts are cached")
    ap.add_argument("--labels", type=Path, default=None,
                    help="step labels from completions (bench/reasoning.py label): part 5 trains with them too")
    ap.add_argument("--label-weights", type=lambda v: [float(w) for w in v.split(",") if w.strip()], default=[1.0, 3.0, 10.0],
                    help="weights of a labelled step to try in part 5, comma-separated (default 1,3,10)")
    ap.add_argument("--out", type=Path, default=RESULTS / "verifier.json",
                    help="default bench/results/verifier.json; verifier_cascade.png goes beside it")
    args = ap.parse_args()
    t_start = time.perf_counter()
    try:
        from smallfleet.verify import ProcessVerifier, train_verifier
    except Exception as e:
        print(f"smallfleet.verify is NOT AVAILABLE ({type(e).__name__}: {e}); no numbers.", file=sys.stderr)
        return 2
    try:
        from smallfleet.verify import LLMJudge
    except Exception as e:
        LLMJudge, judge_import_error = None, f"{type(e).__name__}: {e}"
        print(f"LLMJudge NOT AVAILABLE ({judge_import_error}); part 4 runs without it", file=sys.stderr)
    else:
        judge_import_error = None

    data_all = {s: load_processbench(s) for s in SUBSETS}
    data = {s: take(rows, args.limit, args.seed) for s, rows in data_all.items()}
    print(f"data: {DATA}; ProcessBench " + ", ".join(f"{s} {len(data[s])}/{len(data_all[s])}" for s in SUBSETS)
          + (f" (--limit {args.limit}, seed {args.seed})" if args.limit else ""))

    pb, kept = part_processbench(ProcessVerifier, train_verifier, args, data)
    rwr = part_rwr(data, kept)
    if args.labels is not None and not args.labels.is_file():
        raise SystemExit(f"--labels {args.labels} does not exist: write it with `python bench/reasoning.py label`")
    step_labels = part_labels(ProcessVerifier, train_verifier, args, data, pb, rwr) if args.labels else None
    t0 = time.perf_counter()
    try:
        shipped, shipped_error = ProcessVerifier.load(), None
    except Exception as e:
        shipped, shipped_error = None, f"{type(e).__name__}: {e}"
        print(f"\n!! shipped artifact NOT AVAILABLE ({shipped_error}): the cascade runs with the holdout='gsm8k' model "
              "only and speed is timed on it")
    shipped_load_s = time.perf_counter() - t0
    cascade = part_cascade(shipped, kept["gsm8k"][0], args, data_all["gsm8k"])
    cascade["shipped_artifact_error"] = shipped_error
    timed, timed_name = (shipped, "shipped artifact") if shipped is not None else (kept["gsm8k"][0], "holdout='gsm8k' artifact")
    speed = part_speed(timed, timed_name, kept["gsm8k"][1], LLMJudge, judge_import_error, args, data["gsm8k"])
    speed["shipped_load_s"] = shipped_load_s if shipped is not None else None

    print("\n== summary vs goals ==")
    summary = {f"processbench_{s}_f1": (pb[s]["f1"], f">= {GOAL_F1[s]:.0f}", pb[s]["goal_met"]) for s in SUBSETS}
    for s in (*SUBSETS, "pooled"):
        summary[f"rwr_{s}_caught_at_false_flags"] = (
            f"{pct(rwr[s]['caught'])} / {pct(rwr[s]['false_flags'])}",
            f">= {GOAL_RWR_CAUGHT:.0%} / <= {GOAL_RWR_FALSE_MAX:.0%}", rwr[s]["goal_met"])
    for name, m in cascade["models"].items():
        summary[f"cascade_{name}_share_to_match_strong"] = (pct(m["share_needed"]["match_strong"]["verifier"]),
                                                            f"<= {GOAL_CASCADE_SHARE_MAX:.0%}", m["goal_met"])
    summary["verifier_p50_ms"] = (round(speed["verifier"]["p50_ms"], 2), f"< {GOAL_MS:.0f}", speed["verifier"]["goal_met"])
    if speed["judge"].get("available"):
        summary["speedup_vs_llm_judge"] = (round(speed["judge"]["speedup_median"]), f">= {GOAL_SPEEDUP:.0f}x",
                                           speed["judge"]["goal_met"])
    for k, (val, g, ok) in summary.items():
        v = f"{val:.1f}" if isinstance(val, float) else str(val)
        print(f"  {k:52}{v:>16}   goal {g:22}{goal(ok)}")

    out = {"date": now(), "wall_s": time.perf_counter() - t_start, "limit": args.limit, "seed": args.seed,
           "data": {str(p.relative_to(DATA)): sha256(p) for p in
                    [DATA / "processbench" / f"{s}.json" for s in SUBSETS]
                    + [DATA / "gsm8k" / "example_model_solutions.jsonl"]},
           "environment": environment(numpy=np.__version__, matplotlib=version("matplotlib"), smallfleet=version("smallfleet")),
           "goals": {"processbench_f1": GOAL_F1, "rwr_caught_min": GOAL_RWR_CAUGHT, "rwr_false_flags_max": GOAL_RWR_FALSE_MAX,
                     "cascade_share_to_match_strong_max": GOAL_CASCADE_SHARE_MAX, "speedup_min": GOAL_SPEEDUP,
                     "ms_per_trace_max": GOAL_MS},
           "summary": {k: {"value": val, "goal": g, "met": ok} for k, (val, g, ok) in summary.items()},
           "processbench": pb, "right_for_wrong_reasons": rwr, "cascade": cascade, "speed": speed,
           "step_labels": step_labels}
    print()
    write_json(args.out, out, text=dump_json(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
