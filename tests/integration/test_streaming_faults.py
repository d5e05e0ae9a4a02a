"""Streams that break after bytes reached the client end with an error event, never a clean [DONE];
a client that goes away cancels the upstream at once."""

from __future__ import annotations

import socket
import time
import urllib.request

import openai
import orjson
import pytest

from tests.conftest import ADMIN_KEY, Fake, GatewayProcess

MSGS = [{"role": "user", "content": "hello"}]


def _raw_stream(gateway: GatewayProcess, model: str) -> list[bytes]:
    """POST a streaming request with a plain socket; return the SSE data payloads received."""
    body = orjson.dumps({"model": model, "messages": MSGS, "stream": True})
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    return [ln[6:] for ln in rest.split(b"\n") if ln.startswith(b"data: ")]


@pytest.mark.parametrize(
    ("behaviour", "error_class"),
    [("cut_after=4", "stream_cut"), ("malformed_after=3", "malformed"), ("stall_after=3", "timeout")],
)
def test_a_stream_broken_after_its_first_bytes_ends_with_an_error_event_not_done(
    gateway: GatewayProcess, behaviour: str, error_class: str
) -> None:
    events = _raw_stream(gateway, f"fakeai/gpt-4o-mini@tokens=10,tps=200,{behaviour}")
    assert b"[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == error_class
    assert len(events) >= 2, "the chunks before the fault were forwarded"


def test_the_openai_sdk_raises_on_a_mid_stream_error_event(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(
            model="fakeai/gpt-4o-mini@tokens=10,cut_after=4", messages=MSGS, stream=True
        ):
            got.append(chunk)
    assert got, "chunks before the cut reached the client"
    assert "stream" in str(e.value.message)


def test_a_client_that_disconnects_mid_stream_cancels_the_upstream_stream(gateway: GatewayProcess, fake: Fake) -> None:
    body = orjson.dumps({"model": "fakeai/gpt-4o-mini@tokens=400,tps=40", "messages": MSGS, "stream": True})
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    got = b""
    while b"data: " not in got:
        part = s.recv(65536)
        assert part, "the gateway closed the stream early"
        got += part
    deadline = time.monotonic() + 5
    while fake.stats()["active_streams"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.stats()["active_streams"] == 1, "the upstream stream is running (10 s of tokens)"
    s.close()
    deadline = time.monotonic() + 3
    while fake.stats()["active_streams"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.stats()["active_streams"] == 0, "the upstream stream ended within 3 s of the client leaving"


def _cancelled(gateway: GatewayProcess) -> int:
    req = urllib.request.Request(gateway.url + "/admin/stats", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(orjson.loads(r.read())["by_status"].get("499", 0))


@pytest.mark.parametrize("prompt_bytes", [10, 300_000], ids=["small body", "body larger than the read buffer"])
def test_a_client_that_disconnects_during_a_non_streaming_request_stops_the_wait_at_once(
    gateway: GatewayProcess, prompt_bytes: int
) -> None:
    before = _cancelled(gateway)
    msgs = [{"role": "user", "content": "x" * prompt_bytes}]
    body = orjson.dumps({"model": "fakeai/gpt-4o-mini@latency_ms=8000", "messages": msgs})
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        time.sleep(0.3)
    left = time.monotonic()
    # Recorded as cancelled (499) once the gateway stops waiting: long before the upstream's 8 s answer.
    while _cancelled(gateway) == before and time.monotonic() - left < 5:
        time.sleep(0.05)
    assert _cancelled(gateway) == before + 1, "the request whose client left was ended and recorded as cancelled"
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    assert client.chat.completions.create(model="fakeai/gpt-4o-mini", messages=MSGS).choices
