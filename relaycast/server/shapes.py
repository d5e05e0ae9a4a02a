"""The APIs a client can call for a completion, and how each one's answer is shaped: chat completions, Anthropic's
Messages, OpenAI's Responses and legacy completions.

Every one of them runs the same way (`handlers.Handlers.complete`): its request becomes a `ChatRequest` (a chat
body, with the client's own body kept for a provider that speaks its API natively), the route runs it, and the
answer comes back in the client's API: as the provider sent it when the provider spoke that API, else translated
from chat completions (`relaycast.dialects`). A `Shape` knows one API's request, answer and error formats; a `Relay`
turns one stream's events into that API's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from relaycast import errors
from relaycast.dialects import messages as mdialect
from relaycast.dialects import responses as rdialect
from relaycast.dialects.messages_request import chat_body as messages_chat_body
from relaycast.dialects.responses_request import chat_body as responses_chat_body
from relaycast.providers.base import ChatResult
from relaycast.schema import ChatRequest, chat_request, completions_request
from relaycast.sse import DONE, encode, written_data

ANTHROPIC_HEADERS = (b"anthropic-beta",)  # client headers a native Anthropic provider gets as they are


class Relay(Protocol):
    """One stream's events, from what the provider sent (`dialect`) to what the client asked for."""

    def head(self) -> bytes: ...

    def chunk(self, data: bytes) -> bytes: ...

    def end(self) -> bytes: ...

    def fail(self, e: errors.RelaycastError, scrub: Callable[[bytes], bytes]) -> bytes: ...


class Shape(Protocol):
    endpoint: str  # the records' `endpoint`

    def parse(self, body: dict[str, Any], headers: dict[bytes, bytes]) -> ChatRequest: ...

    def error_body(self, e: errors.RelaycastError) -> bytes: ...

    def answer(self, req: ChatRequest, result: ChatResult, answer_id: str) -> bytes: ...

    def relay(self, req: ChatRequest, dialect: str, answer_id: str) -> Relay: ...


class Same:
    """A stream already in the client's API: forwarded as it is."""

    def head(self) -> bytes:
        return b""

    def chunk(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        return b""

    def fail(self, e: errors.RelaycastError, scrub: Callable[[bytes], bytes]) -> bytes:
        # The response started as 200: a mid-stream failure ends it with an error event, never [DONE].
        return encode(scrub(orjson.dumps(e.body())))


def chat_events(data: bytes) -> list[dict[str, Any]]:
    """The chat chunk objects in a run of `data: {...}\\n\\n` events (as the chat adapters yield them)."""
    out = []
    for block in data.split(b"\n\n"):
        if not block.startswith(b"data: "):
            continue
        payload = written_data(block)
        if payload == DONE:
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:  # what the provider's own check let through (a number past a double's range)
            raise errors.MalformedResponse("upstream sent a stream event that is not JSON") from None
        if isinstance(obj, dict):
            out.append(obj)
    return out


# --- chat completions -----------------------------------------------------------------------------


class ChatShape:
    endpoint = "chat.completions"

    def parse(self, body: dict[str, Any], headers: dict[bytes, bytes]) -> ChatRequest:
        return chat_request(body, headers)

    def error_body(self, e: errors.RelaycastError) -> bytes:
        return e.body_bytes()

    def answer(self, req: ChatRequest, result: ChatResult, answer_id: str) -> bytes:
        return result.body

    def relay(self, req: ChatRequest, dialect: str, answer_id: str) -> Relay:
        return Same()


class CompletionsShape(ChatShape):
    """Legacy completions: passed through to OpenAI-compatible providers only."""

    endpoint = "completions"

    def parse(self, body: dict[str, Any], headers: dict[bytes, bytes]) -> ChatRequest:
        return completions_request(body, headers)


# --- Anthropic Messages -----------------------------------------------------------------------------


class MessagesShape:
    endpoint = "messages"

    def parse(self, body: dict[str, Any], headers: dict[bytes, bytes]) -> ChatRequest:
        chat, untranslatable = messages_chat_body(body)
        req = chat_request(chat, headers)
        req.dialect, req.native, req.untranslatable = "messages", body, untranslatable
        req.native_headers = tuple(
            (name.decode(), headers[name].decode("latin-1")) for name in ANTHROPIC_HEADERS if name in headers
        )
        return req

    def error_body(self, e: errors.RelaycastError) -> bytes:
        return anthropic_error(e)

    def answer(self, req: ChatRequest, result: ChatResult, answer_id: str) -> bytes:
        if result.dialect == "messages":
            return result.body
        return orjson.dumps(mdialect.message(orjson.loads(result.body), "msg_" + answer_id, req.model))

    def relay(self, req: ChatRequest, dialect: str, answer_id: str) -> Relay:
        return NativeMessages() if dialect == "messages" else MessagesRelay("msg_" + answer_id, req.model)


def anthropic_status(e: errors.RelaycastError) -> int:
    """The status whose Anthropic error type fits `e`: an upstream's overload is Anthropic's own 529."""
    final = e.final if isinstance(e, errors.AllAttemptsFailed) else e
    return 529 if isinstance(final, errors.Overloaded) else e.status_code


def anthropic_error(e: errors.RelaycastError) -> bytes:
    return mdialect.error_body(anthropic_status(e), str(e.body()["error"]["message"]))


class NativeMessages(Same):
    def fail(self, e: errors.RelaycastError, scrub: Callable[[bytes], bytes]) -> bytes:
        err = orjson.loads(anthropic_error(e))
        return encode(scrub(orjson.dumps(err)), "error")


class MessagesRelay:
    def __init__(self, message_id: str, model: str) -> None:
        self._out = mdialect.MessagesStream(message_id, model)

    def head(self) -> bytes:
        return b""

    def chunk(self, data: bytes) -> bytes:
        return b"".join(self._out.feed(obj) for obj in chat_events(data))

    def end(self) -> bytes:
        return self._out.finish()

    def fail(self, e: errors.RelaycastError, scrub: Callable[[bytes], bytes]) -> bytes:
        message = str(e.body()["error"]["message"])
        return scrub(self._out.error(mdialect.error_type(anthropic_status(e)), message))


# --- OpenAI Responses ---------------------------------------------------------------------------------


class ResponsesShape:
    """`history` gives the chat messages of a stored response (`previous_response_id`), resolved beforehand."""

    endpoint = "responses"

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now

    def parse(self, body: dict[str, Any], headers: dict[bytes, bytes]) -> ChatRequest:
        return self.parse_with(body, headers, None)

    def parse_with(
        self, body: dict[str, Any], headers: dict[bytes, bytes], history: list[dict[str, Any]] | None
    ) -> ChatRequest:
        chat, untranslatable = responses_chat_body(body, history)
        req = chat_request(chat, headers)
        req.dialect, req.native, req.untranslatable = "responses", body, untranslatable
        # A conversation continued from relaycast's store is sent whole, translated, to every provider: a
        # provider's own store does not hold it.
        req.continued = history is not None
        return req

    def error_body(self, e: errors.RelaycastError) -> bytes:
        return e.body_bytes()

    def answer(self, req: ChatRequest, result: ChatResult, answer_id: str) -> bytes:
        if result.dialect == "responses":
            return result.body
        body = req.native or {}
        return orjson.dumps(rdialect.response(orjson.loads(result.body), body, "resp_" + answer_id, self._now()))

    def relay(self, req: ChatRequest, dialect: str, answer_id: str) -> Relay:
        if dialect == "responses":
            return NativeResponses()
        return ResponsesRelay(req.native or {}, "resp_" + answer_id, self._now())


class NativeResponses(Same):
    def fail(self, e: errors.RelaycastError, scrub: Callable[[bytes], bytes]) -> bytes:
        event = {"type": "error", "code": e.error_class, "message": str(e.body()["error"]["message"]), "param": None}
        return encode(scrub(orjson.dumps(event)), "error")


class ResponsesRelay:
    def __init__(self, body: dict[str, Any], response_id: str, created_at: int) -> None:
        self.out = rdialect.ResponsesStream(body, response_id, created_at)

    def head(self) -> bytes:
        return self.out.start()

    def chunk(self, data: bytes) -> bytes:
        return b"".join(self.out.feed(obj) for obj in chat_events(data))

    def end(self) -> bytes:
        return self.out.finish()

    def fail(self, e: errors.RelaycastError, scrub: Callable[[bytes], bytes]) -> bytes:
        return scrub(self.out.error(e.error_class, str(e.body()["error"]["message"])))
