"""Round trip: pseudonymise → let the local LLM rewrite the text → restore. What leaks, what is lost?

For documents of the PII data set's test split (template_id % 3 != 0):
- leaked: gold PII values still verbatim in the pseudonymised text (the detector missed them, so a
  remote model would have seen them), counted per gold entity;
- lost: placeholders given to the model whose original value is missing from the restored rewrite
  (the model dropped or garbled them beyond repair);
- repaired: mangled placeholders the restorer fixed; unknown: placeholders the model invented.

    python bench/pii_roundtrip.py [--n 40] [--model package:qwen2.5-coder-0.5b]

Prints a table and writes bench/results/pii_roundtrip.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import replace

from _common import RESULTS, SHARED_DATA, parser, write_json

from smallfleet.config import load_config
from smallfleet.models.llamacpp import LlamaCppBackend
from smallfleet.privacy import PLACEHOLDER, Detector, Pseudonymizer

DATA = SHARED_DATA / "pii" / "presidio_synth_dataset_v2.json"
PROMPT = ("Rewrite the following text so it sounds friendly and professional. Keep every placeholder such as "
          "<PERSON_1> exactly as written.\n\nText:\n{text}")


async def run(n: int, model: str) -> dict:
    docs = [d for d in json.loads(DATA.read_text()) if d["template_id"] % 3 != 0][:n]
    cfg = load_config(env={})
    llm = LlamaCppBackend(replace(cfg.tier_model("small"), location=model))
    llm.load()
    det = Detector()
    gold_total, leaked, lost, given = 0, Counter(), Counter(), 0
    repaired = unknown = 0
    rows = []
    for i, d in enumerate(docs):
        pz = Pseudonymizer(det)
        red = pz.redact(d["full_text"])
        for s in d["spans"]:
            gold_total += 1
            if s["entity_value"].strip() and s["entity_value"] in red.text:
                leaked[s["entity_type"]] += 1
        res = await llm.chat({"messages": [{"role": "user", "content": PROMPT.format(text=red.text)}], "max_tokens": 200})
        back = pz.restore(res.content)
        placeholders = set(PLACEHOLDER.findall(red.text))
        missing = []
        for kind, num in placeholders:
            ph = f"<{kind}_{num}>"
            value = pz.vault.value(ph) or ""
            given += 1
            if value not in back.text:
                lost[kind] += 1
                missing.append(ph)
        repaired += len(back.mangled)
        unknown += len(back.unknown)
        rows.append({"i": i, "placeholders": len(placeholders), "lost": missing, "mangled": back.mangled,
                     "unknown": back.unknown})
        print(f"{i + 1}/{len(docs)} placeholders={len(placeholders)} lost={len(missing)}", file=sys.stderr)
    return {"docs": len(docs), "gold_entities": gold_total, "leaked": dict(leaked), "leaked_total": sum(leaked.values()),
            "placeholders_given": given, "lost": dict(lost), "lost_total": sum(lost.values()),
            "mangled_repaired": repaired, "unknown_placeholders": unknown, "rows": rows}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=40, help="test-split documents, in file order (default 40)")
    ap.add_argument("--model", default="package:qwen2.5-coder-0.5b", help="the rewriting model's location (default: the packaged 0.5B)")
    ap.add_argument("--out", default=str(RESULTS / "pii_roundtrip.json"), help="default bench/results/pii_roundtrip.json")
    a = ap.parse_args()
    t0 = time.time()
    r = asyncio.run(run(a.n, a.model))
    r.update(model=a.model, wall_s=round(time.time() - t0), split="test")
    print(f"\n{r['docs']} documents, {r['gold_entities']} gold entities, model {a.model}")
    print(f"leaked (gold value still in the pseudonymised text): {r['leaked_total']} "
          f"({r['leaked_total'] / max(r['gold_entities'], 1):.1%}) {r['leaked']}")
    print(f"lost (placeholder value missing after restore): {r['lost_total']} of {r['placeholders_given']} "
          f"({r['lost_total'] / max(r['placeholders_given'], 1):.1%}) {r['lost']}")
    print(f"mangled placeholders repaired: {r['mangled_repaired']}; unknown placeholders left: {r['unknown_placeholders']}")
    write_json(a.out, r)


if __name__ == "__main__":
    main()
