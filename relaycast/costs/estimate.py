"""Token estimates for attempts the upstream never reported usage for (a stream cut before its usage chunk).

With `tiktoken` installed and its `o200k_base` file already in its cache (it is never downloaded from here: the
gateway must not reach the internet on a request's behalf), that tokenizer counts. Otherwise a fast heuristic
close to BPE tokenizers on English text and code: a word is one token per four letters, digits go in threes,
each punctuation mark and each non-Latin character is a token. Costs from either are marked "estimated".
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from relaycast.records import content_text

PER_MESSAGE = 3  # OpenAI's chat format: tokens around each message
REPLY_PRIMING = 3
_PIECES = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def heuristic_tokens(text: str) -> int:
    n = 0
    for m in _PIECES.finditer(text):
        piece = m.group()
        c = piece[0]
        if c.isalpha() and c.isascii():
            n += (len(piece) + 3) // 4
        elif c.isdigit():
            n += (len(piece) + 2) // 3
        else:
            n += 1
    return n


def _cached_tiktoken() -> Callable[[str], int] | None:
    try:
        import tiktoken  # type: ignore[import-not-found,unused-ignore]  # optional, untyped
    except ImportError:
        return None
    cache = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    if not os.path.exists(os.path.join(cache, hashlib.sha1(_O200K_URL.encode()).hexdigest())):
        return None
    try:
        enc = tiktoken.get_encoding("o200k_base")
    except Exception:  # noqa: BLE001 - a damaged cache: fall back to the heuristic
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


class TokenEstimator:
    def __init__(self, counter: Callable[[str], int] | None = None) -> None:
        self.count: Callable[[str], int] = counter or _cached_tiktoken() or heuristic_tokens
        self.method = "tiktoken" if counter is None and self.count is not heuristic_tokens else "heuristic"

    def prompt(self, messages: Iterable[dict[str, Any]]) -> int:
        n = REPLY_PRIMING
        for m in messages:
            n += PER_MESSAGE + self.count(content_text(m.get("content")))
            if m.get("name"):
                n += 1
        return n

    def embedding_input(self, inp: Any) -> int:
        if isinstance(inp, str):
            return self.count(inp)
        if isinstance(inp, list):
            return sum(self.embedding_input(x) if not isinstance(x, int) else 1 for x in inp)
        return 0
