"""OpenAI's Responses API wire format (`POST /v1/responses`), as the real API sends it: the response object and
its stream of typed events (`event:` line, `sequence_number` on each).

The answer follows the behaviour as chat completions do: `tokens` words of output text (or JSON for a
`text.format` of json_schema / json_object), a `function_call` item calling the first function tool with
{"query":"fox"} for `tool_call`, and usage with `cached` / `cache_write` / `reasoning` / `cost`. A
`max_output_tokens` below the answer's length cuts it: status "incomplete", reason max_output_tokens.
`web_search=N` puts N `web_search_call` items before the answer's item (the Responses API reports searches that
way, not in usage); `service_tier` is the response's; one-hour cache writes are in usage under Anthropic's
`cache_creation`, as relaycast's own Responses answers carry them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from relaycast.fake import json_schema, openai_wire
from relaycast.fake.behaviour import Behaviour


@dataclass(frozen=True, slots=True)
class Answer:
    """What one response says: its text pieces or its function call, and its token counts."""

    rid: str
    model: str
    body: dict[str, Any]
    pieces: tuple[str, ...]
    call: dict[str, Any] | None
    usage: dict[str, Any]
    incomplete: bool
    searches: int = 0  # web_search_call items before the answer's item
    tier: str = "default"


def prompt_tokens(body: dict[str, Any]) -> int:
    """A rough count, as chat's: `input` (a string or items) plus `instructions`."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    n = openai_wire.count_prompt_tokens(items)
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        n += len(instructions) // 4
    return n


def answer(rid: str, model: str, b: Behaviour, body: dict[str, Any]) -> Answer:
    """The answer to a request. Raises json_schema.SchemaError for a text.format schema it cannot answer."""
    call = _function_call(body) if b.tool_call else None
    pieces: list[str] = []
    if call is None:
        fmt = body.get("text", {}).get("format") if isinstance(body.get("text"), dict) else None
        structured = json_schema.format_text(fmt, b.tokens)
        pieces = openai_wire.tokens(b.tokens) if structured is None else json_schema.pieces(structured)
    limit = body.get("max_output_tokens")
    incomplete = isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(pieces)
    if incomplete:
        pieces = pieces[:limit]
    output = b.tokens if call else len(pieces)
    prompt = b.prompt_tokens if b.prompt_tokens is not None else prompt_tokens(body)
    usage = _usage(b, prompt, output)
    return Answer(
        rid, model, body, tuple(pieces), call, usage, incomplete, max(0, b.web_search), b.service_tier or "default"
    )


def _usage(b: Behaviour, prompt: int, output: int) -> dict[str, Any]:
    u: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": b.cached, "cache_write_tokens": b.cache_writes},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": b.reasoning},
        "total_tokens": prompt + output,
    }
    if b.cache_write_1h:
        u["cache_creation"] = {
            "ephemeral_5m_input_tokens": b.cache_write,
            "ephemeral_1h_input_tokens": b.cache_write_1h,
        }
    if b.cost is not None:
        u["cost"] = b.cost
    return u


def _function_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    for t in tools:
        if isinstance(t, dict) and t.get("type") == "function":
            return {"name": str(t.get("name", "tool")), "arguments": orjson.dumps({"query": "fox"}).decode()}
    return None


def response_object(a: Answer, *, done: bool = True) -> dict[str, Any]:
    """The response object: final (`done`) or as in response.created (in progress, no output, no usage)."""
    body = a.body
    status = ("incomplete" if a.incomplete else "completed") if done else "in_progress"
    text_cfg = body["text"] if isinstance(body.get("text"), dict) else {}
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    return {
        "id": a.rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if done and not a.incomplete else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and a.incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": a.model,
        "output": [*(_search(a, i, done=True) for i in range(a.searches)), _item(a, a.searches, done=True)]
        if done
        else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": a.tier,
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": text_cfg.get("format") or {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": a.usage if done else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _item(a: Answer, index: int, *, done: bool) -> dict[str, Any]:
    """The output item (a message or a function call), finished or as just added."""
    status = ("incomplete" if a.incomplete else "completed") if done else "in_progress"
    if a.call is not None:
        return {
            "id": f"fc_{a.rid[5:]}{index}",
            "type": "function_call",
            "status": status,
            "arguments": a.call["arguments"] if done else "",
            "call_id": f"call_{a.rid[5:]}{index}",
            "name": a.call["name"],
        }
    content = [_part("".join(a.pieces))] if done else []
    return {
        "id": f"msg_{a.rid[5:]}{index}",
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _search(a: Answer, index: int, *, done: bool) -> dict[str, Any]:
    """A `web_search_call` output item, finished or as just added."""
    action = {"type": "search", "query": "fox", "sources": [{"type": "url", "url": "https://example.com/fox"}]}
    return {
        "id": f"ws_{a.rid[5:]}{index}",
        "type": "web_search_call",
        "status": "completed" if done else "in_progress",
        "action": action if done else {"type": "search", "query": "fox"},
    }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def events(a: Answer) -> list[bytes]:
    """The SSE events of a streamed response, in the real API's order, numbered from 0."""
    seq = _Sequence()
    pending = response_object(a, done=False)
    out = [seq.event("response.created", response=pending), seq.event("response.in_progress", response=pending)]
    for i in range(a.searches):
        search = {"item_id": _search(a, i, done=True)["id"], "output_index": i}
        out.append(seq.event("response.output_item.added", output_index=i, item=_search(a, i, done=False)))
        for stage in ("in_progress", "searching", "completed"):
            out.append(seq.event(f"response.web_search_call.{stage}", **search))
        out.append(seq.event("response.output_item.done", output_index=i, item=_search(a, i, done=True)))
    n = a.searches
    item = _item(a, n, done=True)
    at = {"item_id": item["id"], "output_index": n}
    out.append(seq.event("response.output_item.added", output_index=n, item=_item(a, n, done=False)))
    if a.call is not None:
        args = a.call["arguments"]
        for d in (args[: len(args) // 2], args[len(args) // 2 :]):
            out.append(seq.event("response.function_call_arguments.delta", **at, delta=d))
        out.append(seq.event("response.function_call_arguments.done", **at, arguments=args))
    else:
        text = "".join(a.pieces)
        out.append(seq.event("response.content_part.added", **at, content_index=0, part=_part("")))
        out.extend(
            seq.event("response.output_text.delta", **at, content_index=0, delta=p, logprobs=[]) for p in a.pieces
        )
        out.append(seq.event("response.output_text.done", **at, content_index=0, text=text, logprobs=[]))
        out.append(seq.event("response.content_part.done", **at, content_index=0, part=_part(text)))
    out.append(seq.event("response.output_item.done", output_index=n, item=item))
    final = "response.incomplete" if a.incomplete else "response.completed"
    out.append(seq.event(final, response=response_object(a)))
    return out


class _Sequence:
    """Numbers one stream's events."""

    def __init__(self) -> None:
        self.n = 0

    def event(self, kind: str, **data: Any) -> bytes:
        payload = orjson.dumps({"type": kind, **data, "sequence_number": self.n})
        self.n += 1
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"
