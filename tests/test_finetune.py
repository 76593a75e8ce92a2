"""LoRA fine-tuning on CPU (a tiny run on SmolLM2-135M) and the adapter in the embedded backend."""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smallfleet.errors import ModelUnavailableError, NotAvailableError
from smallfleet.learn.finetune import finetune, llama_permute
from smallfleet.models.llamacpp import LlamaCppBackend, resolve_location
from tests.test_learn import workload


def test_q_and_k_rows_go_back_to_gguf_order() -> None:
    """transformers reorders a llama GGUF's q/k rows on load (its _reverse_permute_weights); the
    adapter's lora_b must be put back, or the adapter moves the wrong rows."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rng = np.random.default_rng(0)
    n_head, n_kv = 9, 3
    for heads, rows in ((n_head, 9 * 64), (n_kv, 3 * 64)):  # q, then k (fewer key-value heads)
        gguf_rows = rng.normal(size=(rows, 8))
        conv = LlamaTensorProcessor()
        hf_rows = conv._reverse_permute_weights(gguf_rows, n_head, heads)
        assert not np.allclose(hf_rows, gguf_rows)
        assert np.allclose(llama_permute(hf_rows, heads), gguf_rows)


def test_without_torch_it_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = builtins.__import__

    def no_torch(name: str, *a: Any, **kw: Any) -> Any:
        if name == "torch":
            raise ImportError("No module named 'torch'", name="torch")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(NotAvailableError, match="torch is not installed") as e:
        finetune(workload()[:2], tmp_path / "base.gguf", tmp_path / "a.gguf")
    assert "smallfleet[finetune]" in str(e.value)
    assert not (tmp_path / "a.gguf").exists()


@pytest.mark.model
def test_a_tiny_lora_run_on_cpu_loads_in_llama_cpp(tiny_config: Any, tmp_path: Path) -> None:
    import gguf

    spec = tiny_config.models["smollm2"]
    base = resolve_location(spec)
    steps = [t for t in workload() if t.id.startswith("w")][:6]
    res = finetune(steps, base, tmp_path / "a.gguf", steps=6, max_len=160, threads=2)
    assert res.arch == "llama" and res.examples == 6 and res.pairs == 30 * 7  # 30 layers, 7 projections each
    assert res.losses[-1] < res.losses[0]
    r = gguf.GGUFReader(str(res.adapter))
    assert r.fields["general.type"].contents() == "adapter" and r.fields["adapter.type"].contents() == "lora"
    names = {t.name for t in r.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.ffn_down.weight.lora_b" in names and len(names) == 2 * res.pairs
    assert not list(tmp_path.glob("*.tmp"))

    tuned = LlamaCppBackend(replace(spec, name="smollm2+w", lora=(str(res.adapter),)))
    out = asyncio.run(tuned.chat({"messages": steps[0].request["messages"], "max_tokens": 24}))
    assert out.tokens_out > 0
    asyncio.run(tuned.aclose())
    garbage = tmp_path / "bad.gguf"
    garbage.write_bytes(b"not a gguf file" * 20)
    with pytest.raises(ModelUnavailableError, match="LoRA adapter") as e:
        LlamaCppBackend(replace(spec, name="bad", lora=(str(garbage),))).load()
    assert "finetune" in str(e.value)
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        LlamaCppBackend(replace(spec, name="gone", lora=(str(tmp_path / "nope.gguf"),))).load()
