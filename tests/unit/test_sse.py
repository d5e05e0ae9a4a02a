"""SSE framing: whatever way the bytes are split across reads, the same events come out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast.sse import EventSplitter, encode

payload = st.binary(min_size=1, max_size=60).filter(
    lambda b: b"\n" not in b and b"\r" not in b and not b.startswith(b" ")
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(payload, min_size=1, max_size=12),
    st.lists(st.integers(min_value=1, max_value=40), max_size=30),
    st.sampled_from([b"\n", b"\r\n"]),
)
def test_events_round_trip_through_any_split_of_the_byte_stream(
    datas: list[bytes], cuts: list[int], newline: bytes
) -> None:
    stream = b"".join(encode(d) for d in datas).replace(b"\n", newline)
    splitter = EventSplitter()
    got = []
    pos = 0
    for c in cuts:
        got += splitter.feed(stream[pos : pos + c])
        pos += c
    got += splitter.feed(stream[pos:])
    assert [e.data for e in got] == datas
    assert splitter.pending() == b""


def test_comments_named_events_and_multiline_data() -> None:
    s = EventSplitter()
    evs = s.feed(b': keep-alive\n\nevent: message_start\ndata: {"a":\ndata: 1}\n\ndata: [DONE]\n\n')
    assert [(e.event, e.data) for e in evs] == [("message_start", b'{"a":\n1}'), (None, b"[DONE]")]


def test_multiline_data_is_encoded_as_several_data_lines() -> None:
    assert encode(b"a\nb", event="x") == b"event: x\ndata: a\ndata: b\n\n"


def test_an_unfinished_event_past_the_limit_is_refused_however_it_is_split() -> None:
    s = EventSplitter(max_event_bytes=64 * 1024)
    line = b"data: " + b"x" * 1000
    try:
        for _ in range(100):
            s.feed(line)
    except ValueError as e:
        assert "larger than 65536 bytes" in str(e)
    else:
        raise AssertionError("a 100 KB event without an end was accepted")


def test_an_event_that_ends_across_two_reads_is_found() -> None:
    s = EventSplitter()
    assert s.feed(b"data: a\n") == []
    assert [e.data for e in s.feed(b"\ndata: b\r")] == [b"a"]
    assert [e.data for e in s.feed(b"\n\r\n")] == [b"b"]
    assert s.pending() == b""


def reference_events(stream: bytes) -> list[tuple[str | None, bytes]]:
    """The SSE rules written out plainly, line by line (no fast path): what the splitter must agree with."""
    out = []
    for block in stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n")[:-1]:
        event, data = None, []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            name, sep, value = line.partition(b":")
            value = value[1:] if sep and value.startswith(b" ") else value
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace")
        if data or event is not None:
            out.append((event, b"\n".join(data)))
    return out


line_value = st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b)
sse_line = st.one_of(
    st.builds(lambda v: b"data: " + v, line_value),
    st.builds(lambda v: b"data:" + v, line_value),
    st.builds(lambda v: b"event: " + v, line_value),
    st.builds(lambda v: b": " + v, line_value),  # a comment
    st.builds(lambda v: b"id: " + v, line_value),
    st.just(b"data"),
)
sse_block = st.lists(sse_line, min_size=1, max_size=4).map(b"\n".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(sse_block, max_size=10), st.lists(st.integers(min_value=1, max_value=30), max_size=20))
def test_every_shape_of_event_reads_as_the_plain_rules_say_however_it_is_split(
    blocks: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(b + b"\n\n" for b in blocks)
    s = EventSplitter()
    got, pos = [], 0
    for c in [*cuts, len(stream)]:
        got += s.feed(stream[pos : pos + c])
        pos += c
    assert [(e.event, e.data) for e in got] == reference_events(stream)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_an_anthropic_text_delta_is_the_same_chunk_as_the_general_encoding(text: str) -> None:
    from relaycast.providers.anthropic import StreamTranslator

    tr = StreamTranslator("claude-x", False, "anthropic/claude-x", 1_700_000_000)
    assert tr._text(text) == tr._chunk({"content": text})


data_block = st.builds(lambda v: b"data: " + v, line_value)
odd_block = st.one_of(sse_block, st.just(b""), st.builds(lambda v: b"data: " + v + b"\n", line_value))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(data_block, data_block, data_block, odd_block), min_size=1, max_size=12), st.booleans())
def test_a_read_of_whole_one_line_events_and_odd_ones_among_them_reads_as_the_plain_rules_say(
    blocks: list[bytes], crlf: bool
) -> None:
    """A whole read of `data: ` lines is split at once (the fast path); a comment, a named or multi-line event, an
    empty block or a stray line break among them must not change what comes out."""
    stream = b"".join(b + b"\n\n" for b in blocks)
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    splitter = EventSplitter()
    events = splitter.feed(stream)
    assert [(e.event, e.data) for e in events] == reference_events(stream)
    # `whole`, when set, is exactly its events written as one-line `data: ` events (a caller forwards it as it is)
    if splitter.whole is not None:
        assert splitter.whole == b"".join(b"data: " + e.data + b"\n\n" for e in events)
        assert all(e.event is None for e in events)
    if all(b.startswith(b"data: ") and b"\n" not in b for b in blocks):
        assert splitter.whole is not None  # every read of whole one-line events takes the fast path
