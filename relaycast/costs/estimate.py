"""Token estimates: for attempts the upstream never reported usage for (a stream cut before its usage chunk), and
for the reservations limits make before a request runs.

With `tiktoken` installed and its `o200k_base` file already in its cache (it is never downloaded from here: the
gateway must not reach the internet on a request's behalf), that tokenizer counts texts of up to
`TOKENIZER_MAX_CHARS` in all. Otherwise, and for anything larger, a heuristic at least as high as BPE tokenizers
on English text and code: a run of letters is one token per four letters (a partial four counted whole), digits
go in threes, each punctuation mark and each non-Latin character is a token, whitespace is free. Costs from either
are marked "estimated".

Every estimate runs on the event loop, so its time is bounded: the heuristic is a few byte-level passes in C (about
20 ms per MiB), and past `FULL_COUNT_CHARS` it counts 64 windows of `SAMPLE_WINDOW_CHARS` at random places, one in
each equal slice of the text, and scales up. That is coarse for a huge text but not biased low: its only use is
sizing a reservation, which the real usage replaces.

A prompt's texts are counted one by one and remembered (`MEMO_TEXTS` of them, by their hash and length, without
keeping the text): a conversation sends its earlier messages again with every turn, and an application its system
prompt with every request, and those are looked up rather than counted again (hashing is about 70 times cheaper
than counting). A text past `MEMO_MAX_CHARS` is sampled every time instead: the sample's cost does not grow with
the text, and its hash's would. Within one prompt, new texts go to the tokenizer while they stay within
`TOKENIZER_MAX_CHARS` in all, then to the heuristic one by one while its counting stays within `FULL_COUNT_CHARS`
(the first such text always does, sampled past it); the new texts past both shares are counted together, as one
text sampled within what is left of the heuristic's share (`MIN_SAMPLE_WINDOWS` windows at least), and not
remembered. So a prompt costs at most the tokenizer's share and about the heuristic's `FULL_COUNT_CHARS`, however
it is split.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from relaycast.records import content_text

PER_MESSAGE = 3  # OpenAI's chat format: tokens around each message
REPLY_PRIMING = 3
FULL_COUNT_CHARS = 64 * 1024  # counted whole up to this; sampled past it
SAMPLE_WINDOW_CHARS = 1024
MIN_SAMPLE_WINDOWS = 8  # a prompt's new texts past its share of counting are sampled with at least these
TOKENIZER_MAX_CHARS = 64 * 1024  # a BPE tokenizer on more than this costs milliseconds: the heuristic counts instead
MEMO_TEXTS = 4096  # texts whose count an estimator remembers, oldest out first (by hash and length: about 0.7 MB)
MEMO_MAX_CHARS = 4 * FULL_COUNT_CHARS  # longer texts are sampled every time: hashing them would cost more
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _classes() -> tuple[bytes, bytes]:
    """A byte translation to character classes: `a` ASCII letter, `0` digit, ` ` whitespace, `.` a token of its
    own (punctuation, or the first byte of a non-ASCII character); UTF-8 continuation bytes are deleted."""
    table = bytearray(256)
    for b in range(256):
        c = chr(b)
        if b >= 0x80:
            table[b] = ord(".")
        elif c.isalpha():
            table[b] = ord("a")
        elif c.isdigit():
            table[b] = ord("0")
        elif c.isspace():
            table[b] = ord(" ")
        else:
            table[b] = ord(".")
    return bytes(table), bytes(range(0x80, 0xC0))


_TABLE, _CONTINUATION = _classes()


def _count_whole(text: str) -> int:
    b = text.encode("utf-8", "surrogatepass").translate(_TABLE, _CONTINUATION)
    letter_runs = b.count(b" a") + b.count(b".a") + b.count(b"0a") + b.startswith(b"a")
    digit_runs = b.count(b" 0") + b.count(b".0") + b.count(b"a0") + b.startswith(b"0")
    # Per run, ceil(len / 4) <= (len + 3) / 4: the sum over runs is bounded by what the counts give.
    return (b.count(b"a") + 3 * letter_runs) // 4 + (b.count(b"0") + 2 * digit_runs) // 3 + b.count(b".")


def heuristic_tokens(text: str, budget: int = FULL_COUNT_CHARS) -> int:
    """The heuristic's count: of the whole text up to `budget` characters, else of `budget` characters sampled
    (windows of SAMPLE_WINDOW_CHARS, at least MIN_SAMPLE_WINDOWS of them: a text shorter than those is counted
    whole, so that every window lies within its own slice of the text), scaled up."""
    n = len(text)
    windows = max(MIN_SAMPLE_WINDOWS, budget // SAMPLE_WINDOW_CHARS)
    if n <= max(budget, windows * SAMPLE_WINDOW_CHARS):
        return _count_whole(text)
    # One window at a random place in each slice, wrapping around within the slice: every character of a slice
    # is equally likely to be counted, so no part of the text can be hidden from the estimate by where it sits.
    part = n // windows
    sampled = 0
    for i in range(windows):
        start, end = i * part, (i + 1) * part
        at = start + secrets.randbelow(part)
        window = text[at : min(at + SAMPLE_WINDOW_CHARS, end)]
        if len(window) < SAMPLE_WINDOW_CHARS:
            window += text[start : start + SAMPLE_WINDOW_CHARS - len(window)]
        sampled += _count_whole(window)
    return -(-sampled * n // (windows * SAMPLE_WINDOW_CHARS))


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
    """Counts with `counter` (a tokenizer; by default tiktoken when cached) up to TOKENIZER_MAX_CHARS of text per
    call, and with the bounded heuristic past that or without a tokenizer. A prompt's texts are remembered once
    counted (see the module's docstring)."""

    def __init__(self, counter: Callable[[str], int] | None = None, memo_texts: int = MEMO_TEXTS) -> None:
        self._tokenizer = counter or _cached_tiktoken()
        self.method = "tiktoken" if counter is None and self._tokenizer is not None else "heuristic"
        self._memo: dict[tuple[int, int], int] = {}  # (hash, length) of a text -> its tokens; oldest first
        self._memo_max = memo_texts

    def count(self, text: str) -> int:
        if self._tokenizer is not None and len(text) <= TOKENIZER_MAX_CHARS:
            return self._tokenizer(text)
        return heuristic_tokens(text)

    def _texts(self, texts: list[str]) -> int:
        memo, tokenizer = self._memo, self._tokenizer
        total = tokenized = counted = 0
        rest: list[str] = []
        for text in texts:
            size = len(text)
            key = (hash(text), size) if size <= MEMO_MAX_CHARS else None
            n = memo.get(key) if key is not None else None
            if n is not None:
                total += n
                continue
            if tokenizer is not None and tokenized + size <= TOKENIZER_MAX_CHARS:
                tokenized += size
                n = tokenizer(text)
            else:
                work = min(size, FULL_COUNT_CHARS)
                if counted and counted + work > FULL_COUNT_CHARS:
                    rest.append(text)
                    continue
                counted += work
                n = heuristic_tokens(text, FULL_COUNT_CHARS)
            total += n
            if key is not None and self._memo_max:
                if len(memo) >= self._memo_max:
                    del memo[next(iter(memo))]
                memo[key] = n
        if rest:
            # Whitespace between them keeps runs apart: one pass over the whole, however it is split, within what
            # is left of the heuristic's share.
            total += heuristic_tokens("\n".join(rest), FULL_COUNT_CHARS - counted)
        return total

    def prompt(self, messages: Iterable[dict[str, Any]]) -> int:
        texts = []
        n = REPLY_PRIMING
        for m in messages:
            texts.append(content_text(m.get("content")))
            n += PER_MESSAGE + (1 if m.get("name") else 0)
        return n + self._texts(texts)

    def embedding_input(self, inp: Any) -> int:
        """A string, an array of strings, an array of token ids or an array of token arrays (validated at the edge
        as one of these), counted without a Python step per element."""
        if isinstance(inp, str):
            return self.count(inp)
        if not isinstance(inp, list) or not inp:
            return 0
        if isinstance(inp[0], int):
            return len(inp)
        if isinstance(inp[0], list):
            return sum(map(len, inp))
        return self._texts(inp)
