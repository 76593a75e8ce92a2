"""``POST /v1/embeddings`` on the embedder that ships with smallfleet (all-MiniLM-L6-v2, int8 ONNX, 384
dimensions), in OpenAI's request and response shapes.

Bounded like every request: at most ``MAX_INPUTS`` texts of at most ``MAX_CHARS`` characters each; the
model reads the first 256 tokens of each (``usage`` counts what it read). Token-array inputs and
``dimensions`` other than 384 are refused with a 400 that says why.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from ..errors import InvalidRequestError, NotFoundError
from ..retrieval.embed import DIM

MODEL = "all-MiniLM-L6-v2"
ALIASES = frozenset({MODEL, "sentence-transformers/all-MiniLM-L6-v2", "minilm"})
MAX_INPUTS = 256
MAX_CHARS = 32_000  # per text; the model reads 256 tokens (~1,000 characters), the rest only costs tokenizing


def parse(body: Any) -> tuple[list[str], str]:
    """The texts to embed and the encoding ("float" or "base64"), or a 4xx that says what is wrong."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object with 'model' and 'input'.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required.", param="model", hint=f"use {MODEL!r}")
    if model not in ALIASES:
        raise NotFoundError(f"no embedding model {model[:100]!r} here; this gateway embeds with {MODEL!r} ({DIM} dimensions).",
                            param="model", hint=f"send model={MODEL!r}")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise InvalidRequestError("'input' must be a string or a non-empty array of strings.", param="input")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequestError(f"'input' holds {len(texts)} texts; at most {MAX_INPUTS} per request.", param="input",
                                  hint="split the texts over several requests")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidRequestError(f"input[{i}] is not a string; token arrays are not supported here.", param="input",
                                      hint="send the text itself")
        if len(t) > MAX_CHARS:
            raise InvalidRequestError(f"input[{i}] is {len(t)} characters; at most {MAX_CHARS}.", param="input",
                                      hint="split it into passages (the model reads 256 tokens of each)")
    enc = body.get("encoding_format", "float")
    if enc not in ("float", "base64"):
        raise InvalidRequestError("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and dims != DIM:
        raise InvalidRequestError(f"{MODEL} has {DIM} dimensions; 'dimensions' cannot change that.", param="dimensions")
    return texts, enc


def response(vectors: np.ndarray, tokens: int, encoding: str) -> dict[str, Any]:
    data = []
    for i, v in enumerate(vectors):
        emb: Any = (base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii") if encoding == "base64"
                    else [float(x) for x in v])
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": MODEL, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
