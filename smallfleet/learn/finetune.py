"""Specialise (S5) by training: a LoRA adapter for the small model, on one cluster's accepted answers, on CPU.

1. The small model's weights come from its own GGUF file (transformers dequantizes it to float32),
   the tokenizer and chat template too: no model hub.
2. A LoRA adapter (peft; attention and MLP projections) learns the accepted answers, the loss on the
   answer's tokens only; the prompt is the step's conversation as the local models read it (tool calls
   written as JSON text, tool results as text).
3. The adapter is written as a llama.cpp GGUF LoRA adapter (``general.type = adapter``, ``adapter.type =
   lora``, ``adapter.lora.alpha``, tensors ``blk.N.attn_q.weight.lora_a``/``.lora_b``), which the
   embedded backend loads with the base GGUF (``[models.NAME] lora = [PATH]``).

For llama-architecture models transformers reorders the rows of the q and k projections when it reads
a GGUF file (rotary embedding layout); their ``lora_b`` matrices are put back in GGUF order here. An
adapter written without that still loads, and with MLP layers adapted it can even look right, so the
test checks the q/k rows directly.

Needs the ``finetune`` extra (torch, transformers, peft, gguf); without it a clear "not available".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..capture.trace import Trace
from ..errors import InvalidRequestError, NotAvailableError
from .export import _call_text, _plain
from .surrogate import Surrogates

INSTALL_HINT = "pip install 'smallfleet[finetune]' (torch, transformers, peft, gguf); a CPU build of torch is enough"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class FinetuneResult:
    adapter: Path
    examples: int
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    arch: str = ""
    pairs: int = 0  # adapted weight matrices


def _modules() -> tuple[Any, Any, Any, Any]:
    try:
        import gguf
        import peft
        import torch
        import transformers
    except ImportError as e:
        raise NotAvailableError(f"fine-tuning is not available: {e.name} is not installed.", hint=INSTALL_HINT) from None
    return torch, transformers, peft, gguf


def training_texts(t: Trace) -> tuple[list[dict[str, Any]], str]:
    """The conversation as the local models read it, and the accepted answer as they would write it;
    placeholders as invented values of their type (a live local model reads values, see .surrogate)."""
    sur = Surrogates(t.request, t.final)
    msgs = _plain(sur.fill(t.request.get("messages") or []))
    final = sur.fill(t.final)
    answer = _call_text(final) if final.get("tool_calls") else str(final.get("content") or "")
    return msgs, answer


def _rows(tok: Any, traces: Sequence[Trace], max_len: int) -> list[tuple[list[int], list[int]]]:
    rows = []
    for t in traces:
        msgs, answer = training_texts(t)
        tools = t.request.get("tools") or None
        try:
            prompt = tok.apply_chat_template(msgs, tools=tools, add_generation_prompt=True, tokenize=False)
        except Exception:  # a template without tool support: the tools are in the structure anyway
            prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(answer + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
        if len(a_ids) >= max_len:
            continue
        p_ids = p_ids[-(max_len - len(a_ids)):]  # a long history loses its start, never the answer
        rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    return rows


def llama_permute(w: Any, n_head: int) -> Any:
    """Rows of a q/k projection from transformers' rotary layout back to GGUF's."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_adapter(model: Any, gguf: Any, arch: str, n_layers: int, n_head: int, n_head_kv: int, alpha: float, path: Path) -> int:
    """The peft model's LoRA weights as a llama.cpp GGUF adapter; returns the number of matrices adapted."""
    import numpy as np

    arch_id = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]
    names = gguf.get_tensor_name_map(arch_id, n_layers)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    sd = model.state_dict()
    n = 0
    for key, a in sd.items():
        if ".lora_A." not in key:
            continue
        b = sd[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        name = names.get_name(module)
        if name is None:
            raise InvalidRequestError(f"no GGUF tensor name for {module} in a {arch} model.")
        a_np = a.detach().float().numpy()  # [rank, n_in]; the writer stores dimensions reversed, as ggml wants
        b_np = b.detach().float().numpy()  # [n_out, rank]
        if arch == "llama" and module.endswith("q_proj"):
            b_np = llama_permute(b_np, n_head)
        elif arch == "llama" and module.endswith("k_proj"):
            b_np = llama_permute(b_np, n_head_kv)
        w.add_tensor(f"{name}.weight.lora_a", np.ascontiguousarray(a_np, dtype=np.float16))
        w.add_tensor(f"{name}.weight.lora_b", np.ascontiguousarray(b_np, dtype=np.float16))
        n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)  # a half-written adapter never sits at the final path
    return n


def finetune(traces: Sequence[Trace], base: Path, out: Path, *, steps: int = 60, rank: int = 8, alpha: float = 16.0,
             lr: float = 2e-3, batch: int = 2, max_len: int = 768, threads: int = 0, seed: int = 0,
             progress: Callable[[int, float], None] | None = None) -> FinetuneResult:
    """Train a LoRA adapter for the GGUF model ``base`` on ``traces`` and write it to ``out``."""
    torch, transformers, peft, gguf = _modules()
    if not traces:
        raise InvalidRequestError("no steps to learn from.", hint="pick a cluster with accepted steps (`smallfleet learn clusters`)")
    base = Path(base)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.monotonic()
    arch = str(gguf.GGUFReader(str(base)).fields["general.architecture"].contents())
    tok = transformers.AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(base.parent, gguf_file=base.name, dtype=torch.float32)
    rows = _rows(tok, traces, max_len)
    if not rows:
        raise InvalidRequestError(f"every accepted answer is longer than {max_len} tokens.", hint="raise --max-len")
    cfg = model.config
    pm = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(TARGETS),
                                                    bias="none", task_type="CAUSAL_LM"))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    pm.train()
    losses = []
    for step in range(steps):
        pick = [rows[i] for i in torch.randint(len(rows), (min(batch, len(rows)),), generator=gen).tolist()]
        width = max(len(x) for x, _ in pick)
        ids = torch.full((len(pick), width), pad)
        labels = torch.full((len(pick), width), -100)
        mask = torch.zeros((len(pick), width), dtype=torch.long)
        for i, (x, y) in enumerate(pick):
            ids[i, :len(x)] = torch.tensor(x)
            labels[i, :len(y)] = torch.tensor(y)
            mask[i, :len(x)] = 1
        loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.item()))
        if progress is not None:
            progress(step + 1, losses[-1])
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs = write_adapter(pm, gguf, arch, cfg.num_hidden_layers, cfg.num_attention_heads,
                         getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, alpha, out)
    return FinetuneResult(adapter=out, examples=len(rows), steps=steps, losses=losses, seconds=time.monotonic() - t0,
                          arch=arch, pairs=pairs)
