"""OpenRouter's usage fields on a stream (`server.openrouter.usage_chunk`): only the usage chunk is rewritten (its
cost and provider added); every other byte of the read, `"usage":null` chunks included, is passed on as it came."""

from __future__ import annotations

import orjson
import pytest

from relaycast import errors
from relaycast.server.openrouter import usage_chunk
from relaycast.server.shapes import chat_events


def event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def delta(text: str, usage: object = None) -> dict:
    return {"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}], "usage": usage}


USAGE = {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}


def test_only_the_usage_chunk_is_rewritten_wherever_it_is_in_the_read() -> None:
    before = [event(delta("a")), event(delta("b"))]
    spaced = b'data: {"id": "c", "choices": [], "usage": null}\n\n'  # parsed (not the compact null), left alone
    usage = event({"id": "c", "choices": [], "usage": USAGE})
    after = [event(delta("c")), b"data: [DONE]\n\n"]
    for read in (b"".join([*before, spaced, usage, *after]), b"".join([usage, *after]), usage):
        out = usage_chunk(read, "openai", 1_500_000)
        start = read.index(usage)
        assert out[:start] == read[:start]  # untouched up to the usage chunk
        assert out.endswith(read[start + len(usage) :])  # and after it
        chunk = [c for c in chat_events(out) if isinstance(c.get("usage"), dict)][0]
        assert chunk["provider"] == "openai" and chunk["usage"]["cost"] == 1.5e-06
        assert chunk["usage"]["total_tokens"] == 50


def test_a_read_without_a_usage_object_is_returned_as_it_came() -> None:
    read = b"".join([event(delta("a")), event(delta("b")), event({"id": "c", "choices": [], "usage": None})])
    assert usage_chunk(read, "openai", 1) is read
    # a usage object on a chunk that still has choices is not the usage chunk
    with_choices = event(delta("x", USAGE))
    assert usage_chunk(with_choices, "openai", 1) == with_choices


def test_an_event_the_readers_cannot_parse_is_a_malformed_answer_not_a_crash() -> None:
    """A number past a double's range in a field the provider's fast path skips reaches the relays' parse: refused as
    the upstream's malformed answer (an orderly error event for the client), never an exception of another kind."""
    bad = b'data: {"id":"c","created":1e400,"choices":[],"usage":{"prompt_tokens":1}}\n\n'
    with pytest.raises(errors.MalformedResponse):
        chat_events(bad)
    with pytest.raises(errors.MalformedResponse):
        usage_chunk(bad, "openai", 1)
