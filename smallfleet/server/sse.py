"""Server-sent events: how a finished (verified) answer is cut into deltas and framed, for both the
chat-completions stream and the Responses event stream."""

from __future__ import annotations

import re
from typing import Any

import orjson

_WORDS = re.compile(r"\s*\S+\s*|\s+")


def word_pieces(text: str) -> list[str]:
    """Word-sized pieces (at least 24 characters where the words allow) that concatenate back to ``text``
    exactly: clients that render incrementally behave as with a live stream."""
    pieces: list[str] = []
    for word in _WORDS.findall(text):
        if pieces and len(pieces[-1]) < 24:
            pieces[-1] += word
        else:
            pieces.append(word)
    return pieces


def event(obj: dict[str, Any]) -> bytes:
    """A named event (the Responses API: ``event: TYPE`` then the data line)."""
    kind: str = obj["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
