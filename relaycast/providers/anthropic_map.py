"""Anthropic Messages API <-> OpenAI chat completions: pure mapping, no I/O.

- `request_body`: the client's OpenAI chat body -> an Anthropic `/v1/messages` body.
- `chat_result`: an Anthropic `message` object -> an OpenAI `chat.completion` (as a `ChatResult`).
- `usage_of` / `openai_usage`: Anthropic usage -> `Usage` -> OpenAI's usage object.

Anthropic counts `input_tokens` *without* cached tokens; `Usage.prompt_tokens` (OpenAI's meaning) includes them.
Thinking blocks become `reasoning_content`, as DeepSeek and vLLM name it.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

import orjson

from relaycast import errors
from relaycast.providers.base import ChatResult, tool_calls_of
from relaycast.records import Usage

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often leave it out
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
FINISH_REASONS = MappingProxyType(
    {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "pause_turn": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    }
)
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[^,;]*)*),(.*)", re.S)


# --- request ------------------------------------------------------------------------------------


def request_body(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """Map an OpenAI chat body to Anthropic's. Raises InvalidRequest / NotSupported for what cannot be mapped."""
    n = body.get("n")
    if n not in (None, 1):
        raise errors.NotSupported("Anthropic returns one choice per request; 'n' must be 1", param="n")
    system, messages = _messages(body.get("messages"))
    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body), "messages": messages}
    if system:
        out["system"] = system
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if isinstance(body.get("top_k"), int):
        out["top_k"] = body["top_k"]
    stop = _stop(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"), bool(tools))
    answer_tool = _answer_tool(body.get("response_format"))
    if answer_tool is not None:
        if tools:
            raise errors.NotSupported(
                "'response_format' together with 'tools' cannot be mapped to Anthropic", param="response_format"
            )
        tools, choice = [answer_tool], {"type": "tool", "name": ANSWER_TOOL}
    if tools:
        out["tools"] = tools
    if choice:
        out["tool_choice"] = choice
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if isinstance(body.get("thinking"), dict):  # Anthropic's own parameter, passed through when a client sends it
        out["thinking"] = body["thinking"]
    if stream:
        out["stream"] = True
    return out


def _messages(raw: Any) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise errors.InvalidRequest("'messages' must be a non-empty array", param="messages")
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            raise errors.InvalidRequest(f"'{at}' must be an object", param=at)
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_blocks(m.get("content"), at, TEXT))
            continue
        if role == "user":
            if m.get("content") is None:
                raise errors.InvalidRequest(f"'{at}.content' is required", param=f"{at}.content")
            blocks = _blocks(m["content"], at, WITH_MEDIA)
        elif role == "assistant":
            blocks = _assistant_blocks(m, at)
        elif role == "tool":
            blocks, role = [_tool_result(m, at)], "user"
        else:
            raise errors.NotSupported(f"'{at}.role' {role!r} cannot be sent to Anthropic", param=f"{at}.role")
        if not blocks:
            continue
        if out and out[-1]["role"] == role:  # Anthropic requires user and assistant turns to alternate
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if not out:
        raise errors.InvalidRequest("Anthropic needs a non-empty user or assistant message", param="messages")
    for m in out:
        if m["role"] == "user":  # tool results must open the turn that answers a tool_use
            m["content"].sort(key=lambda b: b["type"] != "tool_result")
        m["content"] = _compact(m["content"])
    return _system(system), out


def _system(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not blocks:
        return None
    if any("cache_control" in b for b in blocks):
        return blocks  # keep the client's cache breakpoints
    return "\n\n".join(b["text"] for b in blocks)


def _compact(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(blocks) == 1 and blocks[0]["type"] == "text" and "cache_control" not in blocks[0]:
        text: str = blocks[0]["text"]
        return text
    return blocks


def _text(text: str, part: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


TEXT, WITH_REFUSAL, WITH_MEDIA = ("text",), ("text", "refusal"), ("text", "image_url", "file")


def _blocks(content: Any, at: str, allow: tuple[str, ...]) -> list[dict[str, Any]]:
    """Content (a string or OpenAI parts) as Anthropic blocks; empty text is dropped, as Anthropic rejects it."""
    if isinstance(content, str) or content is None:
        return [_text(content)] if content else []
    if not isinstance(content, list):
        raise errors.InvalidRequest(f"'{at}.content' must be a string or an array of parts", param=f"{at}.content")
    blocks = []
    for j, p in enumerate(content):
        pat = f"{at}.content[{j}]"
        kind = p.get("type") if isinstance(p, dict) else None
        if kind not in allow:
            if kind in ("text", "refusal", "image_url", "file"):
                raise errors.InvalidRequest(f"'{pat}': a {kind} part does not fit in this message", param=pat)
            raise errors.NotSupported(f"'{pat}' has type {kind!r}, which cannot be sent to Anthropic", param=pat)
        if kind == "image_url":
            blocks.append(_image(p, pat))
        elif kind == "file":
            blocks.append(_document(p, pat))
        elif not isinstance(p.get(kind), str):
            raise errors.InvalidRequest(f"'{pat}' needs a string '{kind}'", param=pat)
        elif p[kind]:
            blocks.append(_text(p[kind], p))
    return blocks


def _image(part: dict[str, Any], at: str) -> dict[str, Any]:
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, dict) else iu
    if not isinstance(url, str) or not url:
        raise errors.InvalidRequest(f"'{at}.image_url.url' must be a URL", param=f"{at}.image_url")
    if url.startswith("data:"):
        media_type, data = _data_url(url, at + ".image_url.url")
        if media_type not in IMAGE_TYPES:
            raise errors.InvalidRequest(
                f"'{at}' is {media_type}; Anthropic accepts {', '.join(sorted(IMAGE_TYPES))}", param=f"{at}.image_url"
            )
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise errors.InvalidRequest(f"'{at}.image_url.url' must be an http(s) or data: URL", param=f"{at}.image_url")
    block: dict[str, Any] = {"type": "image", "source": source}
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _document(part: dict[str, Any], at: str) -> dict[str, Any]:
    f = part.get("file")
    data_url = f.get("file_data") if isinstance(f, dict) else None
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise errors.NotSupported(f"'{at}': only inline PDFs (file.file_data as a data: URL) go to Anthropic", param=at)
    media_type, data = _data_url(data_url, at + ".file.file_data")
    if media_type != "application/pdf":
        raise errors.NotSupported(f"'{at}' is {media_type}; Anthropic accepts PDF documents", param=at)
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _data_url(url: str, at: str) -> tuple[str, str]:
    m = _DATA_URL.fullmatch(url)
    if not m or "base64" not in m.group(2).split(";"):
        raise errors.InvalidRequest(f"'{at}' must be a base64 data: URL (data:<type>;base64,...)", param=at)
    return m.group(1).lower(), m.group(3)


def _assistant_blocks(m: dict[str, Any], at: str) -> list[dict[str, Any]]:
    if m.get("function_call") is not None:
        raise errors.NotSupported(f"'{at}.function_call' is legacy; send 'tool_calls'", param=f"{at}.function_call")
    blocks = _blocks(m.get("content"), at, WITH_REFUSAL)
    calls = m.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise errors.InvalidRequest(f"'{at}.tool_calls' must be an array", param=f"{at}.tool_calls")
    for k, tc in enumerate(calls):
        tat = f"{at}.tool_calls[{k}]"
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise errors.InvalidRequest(f"'{tat}' needs a function with a name", param=tat)
        if not isinstance(tc.get("id"), str) or not tc["id"]:
            raise errors.InvalidRequest(f"'{tat}.id' must be a non-empty string", param=f"{tat}.id")
        args, aat = fn.get("arguments"), f"{tat}.function.arguments"
        if args is None or args == "":
            args = {}
        elif isinstance(args, str):
            try:
                args = orjson.loads(args)
            except orjson.JSONDecodeError:
                raise errors.InvalidRequest(f"'{aat}' is not valid JSON", param=aat) from None
        if not isinstance(args, dict):
            raise errors.InvalidRequest(f"'{aat}' must be a JSON object", param=aat)
        blocks.append({"type": "tool_use", "id": tc["id"], "name": fn["name"], "input": args})
    return blocks


def _tool_result(m: dict[str, Any], at: str) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise errors.InvalidRequest(f"'{at}.tool_call_id' must be a non-empty string", param=f"{at}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = m.get("content")
    if isinstance(content, str) and content:
        block["content"] = content
    elif parts := _blocks(content, at, WITH_MEDIA):
        block["content"] = parts
    return block


def _max_tokens(body: dict[str, Any]) -> int:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    v = body.get(name)
    if v is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise errors.InvalidRequest(f"'{name}' must be a positive integer", param=name)
    return v


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise errors.InvalidRequest("'stop' must be a string or an array of strings", param="stop")


# `response_format` on Anthropic: a structured answer is asked for as the input of one forced tool, whose input
# comes back as the answer's text (`chat_result`, `StreamTranslator`). Anthropic validates the input against the
# schema, and every Claude model can do it.
ANSWER_TOOL = "relaycast_structured_answer"


def _answer_tool(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
        description = "Give your answer as a JSON object."
    elif kind == "json_schema":
        js = fmt.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        if not isinstance(schema, dict):
            raise errors.InvalidRequest(
                "'response_format.json_schema.schema' must be a JSON Schema object", param="response_format"
            )
        description = str(js.get("description") or "Give your answer as JSON matching this schema.")
    else:
        raise errors.InvalidRequest(
            "'response_format.type' must be text, json_object or json_schema", param="response_format"
        )
    return {"name": ANSWER_TOOL, "description": description, "input_schema": schema}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise errors.InvalidRequest("'tools' must be an array", param="tools")
    out = []
    for i, t in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise errors.NotSupported(f"'{at}': only function tools can be sent to Anthropic", param=at)
        fn = t.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise errors.InvalidRequest(f"'{at}.function.name' must be a non-empty string", param=f"{at}.function.name")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            pat = f"{at}.function.parameters"
            raise errors.InvalidRequest(f"'{pat}' must be a JSON Schema object", param=pat)
        tool: dict[str, Any] = {"name": fn["name"], "input_schema": params or {"type": "object", "properties": {}}}
        if isinstance(fn.get("description"), str):
            tool["description"] = fn["description"]
        if isinstance(t.get("cache_control"), dict):
            tool["cache_control"] = t["cache_control"]
        out.append(tool)
    return out


def _tool_choice(choice: Any, parallel: Any, has_tools: bool) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        tc: dict[str, Any] | None = {"type": "auto"} if choice else None
    elif choice == "required":
        tc = {"type": "any"}
    elif choice == "none":
        tc = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise errors.InvalidRequest("'tool_choice.function.name' must be a non-empty string", param="tool_choice")
        tc = {"type": "tool", "name": name}
    else:
        raise errors.InvalidRequest(
            "'tool_choice' must be 'auto', 'required', 'none' or {'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    if not has_tools:
        return None  # Anthropic rejects a tool_choice without tools; without tools there is nothing to choose
    if parallel is False:
        tc = tc or {"type": "auto"}
        if tc["type"] != "none":
            tc["disable_parallel_tool_use"] = True
    return tc


# --- response -----------------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def usage_of(u: dict[str, Any]) -> Usage:
    """Anthropic's usage object as `Usage`: every count Anthropic prices apart. `cache_creation` splits the cache
    writes by TTL (the 1h part is `cache_write_1h_tokens`, both are `cache_write_tokens`);
    `server_tool_use.web_search_requests` counts the searches billed per search; `service_tier` names the tier
    (standard, priority, batch)."""
    read = _int(u.get("cache_read_input_tokens"))
    write = _int(u.get("cache_creation_input_tokens"))
    by_ttl = u.get("cache_creation")
    write_1h = 0
    if isinstance(by_ttl, dict):
        write_1h = _int(by_ttl.get("ephemeral_1h_input_tokens"))
        write = max(write, write_1h + _int(by_ttl.get("ephemeral_5m_input_tokens")))
    tools = u.get("server_tool_use")
    tier = u.get("service_tier")
    return Usage(
        prompt_tokens=_int(u.get("input_tokens")) + read + write,
        completion_tokens=_int(u.get("output_tokens")),
        cached_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
        web_searches=_int(tools.get("web_search_requests")) if isinstance(tools, dict) else 0,
        service_tier=tier[:64] if isinstance(tier, str) and tier else None,
    )


def openai_usage(u: Usage) -> dict[str, Any]:
    """`Usage` as OpenAI's usage object. What OpenAI's has no field for travels under Anthropic's own names, only
    when there is some: `cache_creation` (the cache writes by TTL) and `server_tool_use` (web searches);
    `Usage.from_openai` reads them back. The service tier is the answer's top-level field, not usage's."""
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens},
    }
    if u.input_audio_tokens:
        out["prompt_tokens_details"]["audio_tokens"] = u.input_audio_tokens
    if u.reasoning_tokens or u.output_audio_tokens:
        cd = out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
        if u.output_audio_tokens:
            cd["audio_tokens"] = u.output_audio_tokens
    out.update(u.anthropic_extras())
    return out


def chat_result(msg: Any, model: str, created: int, target: str) -> ChatResult:
    """An Anthropic `message` object as an OpenAI `chat.completion`."""
    if not isinstance(msg, dict) or msg.get("type") != "message" or not isinstance(msg.get("content"), list):
        raise errors.MalformedResponse("upstream response is not an Anthropic message", target=target)
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use" and block.get("name") == ANSWER_TOOL:
            texts.append(_json(block.get("input") or {}))  # a structured answer (`response_format`)
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": _json(block.get("input") or {})},
                }
            )
    text = "".join(texts) if texts or not calls else None
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    finish = finish_reason(msg.get("stop_reason"))
    if finish == "tool_calls" and not calls:
        finish = "stop"  # the structured answer's forced tool
    raw_usage = msg.get("usage")
    usage = usage_of(raw_usage) if isinstance(raw_usage, dict) else None
    body: dict[str, Any] = {
        "id": msg.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model") or model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
        if usage.service_tier is not None:
            body["service_tier"] = usage.service_tier
    rid, answered = msg.get("id"), msg.get("model")
    return ChatResult(
        body=orjson.dumps(body),
        usage=usage,
        finish_reason=finish,
        output_text=text,
        tool_calls=tool_calls_of(calls),
        response_model=answered if isinstance(answered, str) else None,
        response_id=rid if isinstance(rid, str) else None,
    )


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0
