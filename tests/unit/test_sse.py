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
