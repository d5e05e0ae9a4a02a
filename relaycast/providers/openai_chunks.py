"""The usual OpenAI stream chunk, learned from without a dict.

Nearly every event of a chat completions stream is a plain delta: one choice with some text (or reasoning) and no
finish reason, usage or error. Decoded by msgspec into the few fields the gateway reads, such a chunk costs about a
third of parsing it into dicts and reading those. The fields it skips are checked for JSON syntax only, so the
bytes are first checked to be UTF-8 (what the full parse refuses most often in a server's odd chunk); a number
past a double's range in a skipped field is not refused here, and the readers of the forwarded stream
(`server.shapes.chat_events`) refuse it as a malformed answer. Anything else (the first chunk, a usage, error or
tool-call chunk, a shape these types do not describe, a chunk that is not JSON, nested too deep) is left to the
full parse, which decides what it is and how it fails. The plain deltas that follow one another in a read (a fast
upstream's whole answer, or a backlog) are learned from in one loop, without a call per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from relaycast.providers.base import StreamState
from relaycast.sse import DONE, Event


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: Any = None
    reasoning: Any = None
    reasoning_content: Any = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: Any = None
    error: Any = None


_decode = msgspec.json.Decoder(_Chunk).decode


def learn_deltas(state: StreamState, events: Sequence[Event], i: int = 0) -> int:
    """Learn from the plain delta chunks of `events` from `events[i]` on (each one's text, or that it reasons, and
    its finish reason), in one loop, up to the first event that is not one; return that event's index
    (`len(events)` when every one was). That event, and every one after it, is left as it was, having taught
    nothing."""
    text = state.text
    n = len(events)
    while i < n:
        data = events[i].data
        if data == DONE:
            return i
        if not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError:
                return i
        try:
            chunk = _decode(data)
        except (msgspec.MsgspecError, RecursionError):  # not JSON, another shape, too deep: the full parse says which
            return i
        choices = chunk.choices
        if chunk.error is not None or chunk.usage is not None or not choices:
            return i
        c0 = choices[0]
        delta = c0.delta
        if delta is None or delta.tool_calls is not None:
            return i
        if delta.content:
            if state.first_token_ns is None:
                state.saw_token()
            text.append(delta.content)
        elif delta.reasoning or delta.reasoning_content:
            state.saw_token()
        if c0.finish_reason:
            state.finish_reason = c0.finish_reason
        i += 1
    return i
