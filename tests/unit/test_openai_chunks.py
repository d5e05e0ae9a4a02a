"""The plain-delta fast path of OpenAI streams (`providers.openai_chunks.learn_deltas`) against the full parse
(`OpenAIStream._inspect`): for every chunk it takes, it learns exactly what the full parse learns; every chunk it
leaves, it leaves untouched, for the full parse to learn from or to refuse; a run of chunks is taken up to the first
one it leaves, and a whole stream relayed through `OpenAIStream` learns what the full parse of each event learns."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import pytest

from relaycast import errors
from relaycast.providers.base import StreamState
from relaycast.providers.openai_chunks import learn_deltas
from relaycast.providers.openai_compat import OpenAIStream
from relaycast.sse import Event
from tests.unit.test_openai_stream_reads import Reads


def chunk(delta: Any = None, finish: Any = None, **top: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
    return orjson.dumps({**body, **top})


TAKEN = [
    chunk({"content": " brown"}, usage=None),
    chunk({"content": 'caf\u00e9 \u2603 \U0001f600 "quoted"\n\ttab \\ back'}),
    chunk({"content": ""}),
    chunk({"role": "assistant", "content": "hi", "refusal": None}),
    chunk({"content": "last"}, "stop"),
    chunk({}, "length"),
    chunk({"reasoning": "thinking"}),
    chunk({"reasoning_content": "thinking", "content": None}),
    chunk({"content": None}),
    chunk({"content": "x"}, error=None, obfuscation="abcd", system_fingerprint="fp", service_tier="default"),
    b'{"choices":[{"delta":{"content":"spaced"} ,"finish_reason" : null}] }',
]

LEFT = [
    chunk({"content": "x"}, usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}),
    orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
    orjson.dumps({"id": "c", "choices": []}),
    orjson.dumps({"id": "c"}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}]}),
    chunk({"content": [{"type": "text", "text": " parts"}]}),
    chunk({"content": 7}),
    chunk("not an object"),
    orjson.dumps({"id": "c", "choices": {"0": {"delta": {"content": "not a list"}}}}),
    orjson.dumps({"id": "c", "choices": ["not an object"]}),
    orjson.dumps({"id": "c", "choices": [{"index": 0, "text": "legacy completion"}]}),
    chunk({"content": "x"}, 1),
    chunk({"content": "x"}, error=None, usage={}),
    orjson.dumps({"error": {"message": "overloaded", "code": 529}}),
    chunk({"content": "x"}, error="busy"),
    b'{"choices":[{"delta":{"content":"cut',
    b"[1, 2]",
    b'{"choices":[{"delta":{"content":"x"}}]} trailing',
    b'{"choices":[{"delta":{"content":"bad \xff"}}]}',
    # what msgspec only skips in fields it does not read: invalid UTF-8, an encoded surrogate, nesting too deep
    b'{"model":"m\xff","choices":[{"delta":{"content":"x"},"finish_reason":null}]}',
    b'{"model":"\xed\xa0\x80","choices":[{"delta":{"content":"x"},"finish_reason":null}]}',
    b'{"x":' + b"[" * 5000 + b"]" * 5000 + b',"choices":[{"delta":{"content":"x"},"finish_reason":null}]}',
]


def full() -> OpenAIStream:
    """A stream past its first chunk, for its `_inspect` (the upstream answer is never read by it)."""
    s = OpenAIStream(cast(Any, None), "oai/m", client_usage=True, idle_s=60.0)
    s.state.response_id = "chatcmpl-1"
    return s


def learn_delta(state: StreamState, data: bytes) -> bool:
    """Whether `learn_deltas` takes `data` as a run of one event."""
    return learn_deltas(state, [Event(None, data)]) == 1


def learned(state: StreamState) -> tuple[Any, ...]:
    return (state.text, state.first_token_ns is not None, state.finish_reason, state.usage, state.tool_calls)


@pytest.mark.parametrize("data", TAKEN, ids=range(len(TAKEN)))
def test_a_plain_delta_is_learned_as_the_full_parse_learns_it(data: bytes) -> None:
    fast = StreamState(response_id="chatcmpl-1")
    assert learn_delta(fast, data) is True
    slow = full()
    assert slow._inspect(data) is True
    assert learned(fast) == learned(slow.state)


@pytest.mark.parametrize("data", LEFT, ids=range(len(LEFT)))
def test_every_other_event_is_left_untouched_for_the_full_parse(data: bytes) -> None:
    state = StreamState(response_id="chatcmpl-1")
    assert learn_delta(state, data) is False
    assert learned(state) == learned(StreamState())
    try:
        full()._inspect(data)  # learns from it, forwards it, or refuses it: whatever it does is the stream's
    except errors.ProviderError:
        pass


def test_text_and_the_first_token_accumulate_over_a_stream_of_deltas() -> None:
    state = StreamState(response_id="chatcmpl-1")
    for part in ("the", " quick", "", " fox"):
        assert learn_delta(state, chunk({"content": part}))
    first = state.first_token_ns
    assert learn_delta(state, chunk({}, "stop"))
    assert "".join(state.text) == "the quick fox" and state.finish_reason == "stop"
    assert first is not None and state.first_token_ns == first


def test_a_run_is_taken_up_to_the_first_event_left_and_from_where_it_is_asked() -> None:
    events = [Event(None, d) for d in (chunk({"content": "a"}), chunk({"content": "b"}), LEFT[0], TAKEN[0], b"[DONE]")]
    state = StreamState(response_id="chatcmpl-1")
    assert learn_deltas(state, events) == 2
    assert state.text == ["a", "b"] and state.usage is None
    assert learn_deltas(state, events, 2) == 2  # the usage chunk is the full parse's
    assert learn_deltas(state, events, 3) == 4  # [DONE] is the full parse's too
    assert state.text == ["a", "b", " brown"]
    assert learn_deltas(state, events, 5) == 5


EVENTS = [
    orjson.dumps({"id": "chatcmpl-9", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
    *TAKEN,
    b"",  # an empty event: taught nothing, and left out of what the client gets
    *LEFT[:2],
    chunk({"content": " after"}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}),
    chunk({"content": " end"}, "stop"),
    b"[DONE]",
]


@pytest.mark.parametrize("how", ["one read", "event by event", "in pieces"])
def test_a_stream_learns_what_the_full_parse_of_each_event_learns_and_forwards_every_event_but_the_empty_one(
    how: str,
) -> None:
    wire = b"".join(b"data: " + d + b"\n\n" for d in EVENTS)
    reads = {
        "one read": [wire],
        "event by event": [b"data: " + d + b"\n\n" for d in EVENTS],
        "in pieces": [wire[i : i + 97] for i in range(0, len(wire), 97)],
    }[how]
    stream = OpenAIStream(cast(Any, Reads(reads)), "oai/m", client_usage=True, idle_s=60.0)

    async def relay() -> bytes:
        return b"".join([c async for c in stream])

    out = asyncio.run(relay())
    assert out == b"".join(b"data: " + d + b"\n\n" for d in EVENTS if d)
    slow = OpenAIStream(cast(Any, None), "oai/m", client_usage=True, idle_s=60.0)
    for d in EVENTS[:-1]:
        if d:
            slow._inspect(d)
    assert stream.state.done
    fast, ref = stream.state, slow.state
    assert (fast.text, fast.finish_reason, fast.usage, fast.tool_calls, fast.response_id) == (
        ref.text,
        ref.finish_reason,
        ref.usage,
        ref.tool_calls,
        ref.response_id,
    )
    assert fast.first_token_ns is not None
