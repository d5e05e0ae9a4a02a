"""Anthropic's Messages API as a client dialect: pure translation to and from OpenAI chat completions, no I/O.

- `chat_body`: a client's `/v1/messages` (or `/v1/messages/count_tokens`) body -> an OpenAI chat body, plus the
  reason, if any, why an OpenAI-compatible target cannot serve it faithfully.
- `message`: an OpenAI `chat.completion` -> an Anthropic `message` object.
- `MessagesStream`: OpenAI `chat.completion.chunk` objects -> Anthropic SSE events.
- `error_type` / `error_body`: errors in Anthropic's format.

What does not survive the trip to chat: `thinking` and `redacted_thinking` blocks of assistant turns are dropped
(chat has no way to send them back), as are `cache_control` marks anywhere but on text (system and content
parts), a tool result's `is_error` flag, document citations and `service_tier`. Server tools, MCP servers,
containers, files by id, documents by URL and images inside tool results make a request untranslatable.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, TypeGuard

import orjson

from relaycast.errors import InvalidRequest
from relaycast.records import Usage

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Valid Anthropic content blocks that only Anthropic's own servers can act on.
SERVER_BLOCKS = frozenset(
    {
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "mcp_tool_use",
        "mcp_tool_result",
    }
)
TOOL_RESULT_MEDIA = frozenset({"image", "document", "search_result", "tool_reference", "browser_state"})
STOP_REASONS = MappingProxyType(
    {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "function_call": "tool_use",
        "content_filter": "refusal",
    }
)
ERROR_TYPES = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
)
EFFORTS = MappingProxyType({"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"})


# --- request ------------------------------------------------------------------------------------


class _Notes:
    """The first reason a request cannot be served faithfully through chat completions."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None

    def add(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


def chat_body(body: dict[str, Any], *, for_count: bool = False) -> tuple[dict[str, Any], str | None]:
    """Validate an Anthropic Messages request and map it to an OpenAI chat-completions body.
    Returns (chat_body, untranslatable): untranslatable is None, or a short reason why an OpenAI-compatible target
    cannot serve this request faithfully (e.g. a server tool such as web_search_20250305, a document by file id) —
    the gateway then skips such targets. Raises InvalidRequest for what is invalid for Anthropic itself.
    for_count=True: the body of /v1/messages/count_tokens (no max_tokens required, no stream)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    notes = _Notes()
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    out: dict[str, Any] = {"model": model}
    max_tokens = body.get("max_tokens")
    if not for_count or max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise InvalidRequest("'max_tokens' must be a positive integer", param="max_tokens")
        if not for_count:
            out["max_tokens"] = max_tokens
    messages = _system(body.get("system"))
    messages.extend(_messages(body.get("messages"), notes))
    out["messages"] = messages
    _sampling(body, out)
    _tools(body, out, notes)
    _reasoning(body, out)
    _output_format(body, out)
    _metadata(body.get("metadata"), out)
    for name in ("container", "mcp_servers"):
        if body.get(name) is not None:
            notes.add(f"'{name}' needs Anthropic's servers")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    if stream and not for_count:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, notes.reason


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text_part(text: str, block: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": text}
    if isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]
    return part


def _text_of(block: dict[str, Any], at: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"'{at}.text' must be a string", param=f"{at}.text")
    return text


def _system(system: Any) -> list[dict[str, Any]]:
    """`system` -> a first system message (or none): parts when a block carries cache_control, else a string."""
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not isinstance(system, list):
        raise InvalidRequest("'system' must be a string or an array of text blocks", param="system")
    parts = []
    for i, block in enumerate(system):
        at = f"system[{i}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise InvalidRequest(f"'{at}' must be a text block", param=at)
        parts.append(_text_part(_text_of(block, at), block))
    if not parts:
        return []
    if any("cache_control" in p for p in parts):
        return [{"role": "system", "content": parts}]
    return [{"role": "system", "content": "\n\n".join(p["text"] for p in parts)}]


def _messages(raw: Any, notes: _Notes) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest(f"'{at}' must be an object", param=at)
        role = m.get("role")
        content = m.get("content")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"'{at}.role' must be 'user' or 'assistant'", param=f"{at}.role")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise InvalidRequest(
                f"'{at}.content' must be a string or an array of content blocks", param=f"{at}.content"
            )
        elif role == "user":
            out.extend(_user_turn(content, at, notes))
        else:
            out.extend(_assistant_turn(content, at, notes))
    return out


def _block_kind(block: Any, at: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise InvalidRequest(f"'{at}' must be a content block with a 'type'", param=at)
    return kind


def _user_turn(blocks: list[Any], at: str, notes: _Notes) -> list[dict[str, Any]]:
    """A user turn: its tool results as `tool` messages first, then one user message with the rest."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        bat = f"{at}.content[{j}]"
        kind = _block_kind(block, bat)
        if kind == "tool_result":
            tools.append(_tool_result(block, bat, notes))
        elif kind == "text":
            parts.append(_text_part(_text_of(block, bat), block))
        elif kind == "image":
            part = _image(block, bat, notes)
            if part is not None:
                parts.append(part)
        elif kind == "document":
            parts.extend(_document(block, bat, notes))
        elif kind == "tool_use":
            raise InvalidRequest(f"'{bat}': tool_use blocks belong in assistant turns", param=bat)
        else:
            _other_block(kind, bat, notes)
    if parts or not tools:
        tools.append({"role": "user", "content": parts or ""})
    return tools


def _assistant_turn(blocks: list[Any], at: str, notes: _Notes) -> list[dict[str, Any]]:
    """An assistant turn: text as content (a string unless a part carries cache_control), tool_use as tool_calls."""
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        bat = f"{at}.content[{j}]"
        kind = _block_kind(block, bat)
        if kind == "text":
            parts.append(_text_part(_text_of(block, bat), block))
        elif kind == "tool_use":
            calls.append(_tool_call(block, bat))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # chat cannot send a model's earlier reasoning back
        elif kind in ("tool_result", "image", "document"):
            raise InvalidRequest(f"'{bat}': {kind} blocks belong in user turns", param=bat)
        else:
            _other_block(kind, bat, notes)
    if not parts and not calls:
        return []
    msg: dict[str, Any] = {"role": "assistant", "content": None}
    if any("cache_control" in p for p in parts):
        msg["content"] = parts
    elif parts:
        msg["content"] = "".join(p["text"] for p in parts)
    if calls:
        msg["tool_calls"] = calls
    return [msg]


def _other_block(kind: str, at: str, notes: _Notes) -> None:
    if kind not in SERVER_BLOCKS:
        raise InvalidRequest(f"'{at}' has an unknown content block type {kind!r}", param=f"{at}.type")
    notes.add(f"a {kind} content block needs Anthropic's servers")


def _tool_call(block: dict[str, Any], at: str) -> dict[str, Any]:
    call_id, name, args = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"'{at}.id' must be a non-empty string", param=f"{at}.id")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{at}.name' must be a non-empty string", param=f"{at}.name")
    if not isinstance(args, dict):
        raise InvalidRequest(f"'{at}.input' must be an object", param=f"{at}.input")
    arguments = orjson.dumps(args).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_result(block: dict[str, Any], at: str, notes: _Notes) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"'{at}.tool_use_id' must be a non-empty string", param=f"{at}.tool_use_id")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, item in enumerate(content):
            iat = f"{at}.content[{k}]"
            kind = _block_kind(item, iat)
            if kind == "text":
                texts.append(_text_of(item, iat))
            elif kind in TOOL_RESULT_MEDIA:
                notes.add(f"a tool result with a {kind} block cannot be sent as a chat tool message")
            else:
                raise InvalidRequest(f"'{iat}' has an unknown content block type {kind!r}", param=f"{iat}.type")
        text = "\n".join(texts)
    else:
        raise InvalidRequest(f"'{at}.content' must be a string or an array of blocks", param=f"{at}.content")
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _source(block: dict[str, Any], at: str) -> tuple[dict[str, Any], str]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if not isinstance(source, dict) or not isinstance(kind, str):
        raise InvalidRequest(f"'{at}.source' must be an object with a 'type'", param=f"{at}.source")
    return source, kind


def _source_str(source: dict[str, Any], name: str, at: str) -> str:
    v = source.get(name)
    if not isinstance(v, str) or not v:
        raise InvalidRequest(f"'{at}.source.{name}' must be a non-empty string", param=f"{at}.source.{name}")
    return v


def _image(block: dict[str, Any], at: str, notes: _Notes) -> dict[str, Any] | None:
    source, kind = _source(block, at)
    if kind == "base64":
        media_type = _source_str(source, "media_type", at)
        if media_type not in IMAGE_TYPES:
            expected = ", ".join(sorted(IMAGE_TYPES))
            raise InvalidRequest(f"'{at}.source.media_type' must be one of {expected}", param=f"{at}.source")
        url = f"data:{media_type};base64,{_source_str(source, 'data', at)}"
    elif kind == "url":
        url = _source_str(source, "url", at)
    elif kind == "file":
        notes.add("an image by file id needs Anthropic's Files API")
        return None
    else:
        raise InvalidRequest(f"'{at}.source.type' must be 'base64', 'url' or 'file'", param=f"{at}.source.type")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: dict[str, Any], at: str, notes: _Notes) -> list[dict[str, Any]]:
    source, kind = _source(block, at)
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            raise InvalidRequest(f"'{at}.source.media_type' must be 'application/pdf'", param=f"{at}.source")
        title = block.get("title")
        filename = title if isinstance(title, str) and title else "document.pdf"
        pdf = f"data:application/pdf;base64,{_source_str(source, 'data', at)}"
        return [{"type": "file", "file": {"filename": filename, "file_data": pdf}}]
    if kind == "text":
        data = source.get("data")
        if not isinstance(data, str):
            raise InvalidRequest(f"'{at}.source.data' must be a string", param=f"{at}.source.data")
        return [_text_part(data, block)]
    if kind == "content":
        return _content_source(source.get("content"), block, at, notes)
    if kind in ("url", "file"):
        notes.add(f"a document by {'URL' if kind == 'url' else 'file id'} cannot be sent to chat completions")
        return []
    raise InvalidRequest(
        f"'{at}.source.type' must be 'base64', 'text', 'content', 'url' or 'file'", param=f"{at}.source.type"
    )


def _content_source(content: Any, block: dict[str, Any], at: str, notes: _Notes) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text_part(content, block)]
    if not isinstance(content, list):
        cat = f"{at}.source.content"
        raise InvalidRequest(f"'{cat}' must be a string or an array of blocks", param=cat)
    parts = []
    for k, item in enumerate(content):
        iat = f"{at}.source.content[{k}]"
        kind = _block_kind(item, iat)
        if kind == "text":
            parts.append(_text_part(_text_of(item, iat), item))
        elif kind == "image":
            part = _image(item, iat, notes)
            if part is not None:
                parts.append(part)
        else:
            raise InvalidRequest(f"'{iat}' must be a text or image block", param=f"{iat}.type")
    return parts


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        v = body.get(name)
        if v is not None:
            if not _is_number(v):
                raise InvalidRequest(f"'{name}' must be a number", param=name)
            out[name] = v
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k) or top_k < 0:
            raise InvalidRequest("'top_k' must be a non-negative integer", param="top_k")
        out["top_k"] = top_k
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequest("'stop_sequences' must be an array of strings", param="stop_sequences")
        if stop:
            out["stop"] = stop


def _tools(body: dict[str, Any], out: dict[str, Any], notes: _Notes) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array", param="tools")
        functions = [f for i, t in enumerate(tools) if (f := _tool(t, f"tools[{i}]", notes)) is not None]
        if functions:
            out["tools"] = functions
    choice = body.get("tool_choice")
    if choice is None:
        return
    mapped, parallel = _tool_choice(choice)
    if "tools" in out:  # OpenAI rejects tool_choice and parallel_tool_calls without tools
        out["tool_choice"] = mapped
        if not parallel:
            out["parallel_tool_calls"] = False


def _tool(tool: Any, at: str, notes: _Notes) -> dict[str, Any] | None:
    if not isinstance(tool, dict):
        raise InvalidRequest(f"'{at}' must be an object", param=at)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        if not isinstance(kind, str):
            raise InvalidRequest(f"'{at}.type' must be a string", param=f"{at}.type")
        notes.add(f"server tool {kind!r} needs Anthropic's servers")
        return None
    name, schema, description = tool.get("name"), tool.get("input_schema"), tool.get("description")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{at}.name' must be a non-empty string", param=f"{at}.name")
    if not isinstance(schema, dict):
        raise InvalidRequest(f"'{at}.input_schema' must be a JSON Schema object", param=f"{at}.input_schema")
    fn: dict[str, Any] = {"name": name}
    if description is not None:
        if not isinstance(description, str):
            raise InvalidRequest(f"'{at}.description' must be a string", param=f"{at}.description")
        fn["description"] = description
    fn["parameters"] = schema
    if isinstance(tool.get("strict"), bool):
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> tuple[str | dict[str, Any], bool]:
    """Anthropic's tool_choice -> (OpenAI's tool_choice, whether parallel tool calls stay allowed)."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    mapped: str | dict[str, Any]
    if kind == "auto":
        mapped = "auto"
    elif kind == "any":
        mapped = "required"
    elif kind == "none":
        mapped = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("'tool_choice.name' must be a non-empty string", param="tool_choice.name")
        mapped = {"type": "function", "function": {"name": name}}
    else:
        raise InvalidRequest("'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'", param="tool_choice.type")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        param = "tool_choice.disable_parallel_tool_use"
        raise InvalidRequest(f"'{param}' must be a boolean", param=param)
    return mapped, not disable


def _reasoning(body: dict[str, Any], out: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if not isinstance(kind, str):
            raise InvalidRequest("'thinking' must be an object with a 'type'", param="thinking")
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not _is_int(budget) or budget < 1:
                param = "thinking.budget_tokens"
                raise InvalidRequest(f"'{param}' must be a positive integer", param=param)
            out["reasoning_effort"] = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
        # disabled, adaptive and types added later: the target's default
    effort = _output_config(body).get("effort")
    if effort is not None:
        if effort not in EFFORTS:
            expected = ", ".join(EFFORTS)
            raise InvalidRequest(f"'output_config.effort' must be one of {expected}", param="output_config.effort")
        out["reasoning_effort"] = EFFORTS[effort]


def _output_config(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("output_config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InvalidRequest("'output_config' must be an object", param="output_config")
    return config


def _output_format(body: dict[str, Any], out: dict[str, Any]) -> None:
    """`output_format` (or `output_config.format`) json_schema -> a strict json_schema response_format."""
    param, fmt = "output_format", body.get("output_format")
    if fmt is None:
        param, fmt = "output_config.format", _output_config(body).get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise InvalidRequest(f"'{param}' must be {{'type': 'json_schema', 'schema': ...}}", param=param)
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(f"'{param}.schema' must be a JSON Schema object", param=f"{param}.schema")
    out["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def _metadata(metadata: Any, out: dict[str, Any]) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object", param="metadata")
    user = metadata.get("user_id")
    if user is not None:
        if not isinstance(user, str):
            raise InvalidRequest("'metadata.user_id' must be a string", param="metadata.user_id")
        if user:
            out["user"] = user


# --- response -----------------------------------------------------------------------------------


def stop_reason(finish_reason: str | None) -> str:
    """OpenAI finish_reason -> Anthropic stop_reason: stop->end_turn, length->max_tokens,
    tool_calls/function_call->tool_use, content_filter->refusal, None (and anything else)->end_turn."""
    return STOP_REASONS.get(finish_reason or "stop", "end_turn")


def anthropic_usage(usage: Usage | None, input_tokens: int = 0) -> dict[str, Any]:
    """`Usage` (OpenAI's meaning) -> Anthropic's counts, whose input_tokens leave out cache reads and writes.
    Without a usage: `input_tokens` as given, nothing else. The cache writes by TTL (`cache_creation`) and the web
    searches (`server_tool_use`) when there are some, and the service tier when the upstream named one."""
    if usage is None:
        return {
            "input_tokens": input_tokens,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    out: dict[str, Any] = {
        "input_tokens": max(0, uncached),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }
    if usage.cache_write_1h_tokens:
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        }
    if usage.web_searches:
        out["server_tool_use"] = {"web_search_requests": usage.web_searches}
    if usage.service_tier is not None:
        out["service_tier"] = usage.service_tier
    return out


def _usage_of(raw: Any, service_tier: Any = None) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Usage.from_openai(raw, service_tier)
    except (TypeError, ValueError, AttributeError):
        return None  # an upstream's odd usage object is not worth failing the answer for


def _reasoning_text(msg: dict[str, Any]) -> str:
    for name in ("reasoning_content", "reasoning"):
        v = msg.get(name)
        if isinstance(v, str) and v:
            return v
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with parts
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tool_id(call_id: Any, message_id: str, index: int) -> str:
    return call_id if isinstance(call_id, str) and call_id else f"toolu_{message_id}_{index}"


def message(chat: dict[str, Any], message_id: str, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion object (choices[0]) -> an Anthropic `message` object (id=message_id, model=model)."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    content: list[dict[str, Any]] = []
    if reasoning := _reasoning_text(msg):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := _content_text(msg.get("content")):
        content.append({"type": "text", "text": text})
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = msg.get("tool_calls")
    for k, call in enumerate(calls if isinstance(calls, list) else []):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            name = fn.get("name") if isinstance(fn.get("name"), str) else ""
            call_id = _tool_id(call.get("id"), message_id, k)
            content.append({"type": "tool_use", "id": call_id, "name": name, "input": _tool_input(fn.get("arguments"))})
    legacy = msg.get("function_call")
    if not isinstance(calls, list) and isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        args = _tool_input(legacy.get("arguments"))
        content.append({"type": "tool_use", "id": _tool_id(None, message_id, 0), "name": legacy["name"], "input": args})
    finish = choice.get("finish_reason")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish if isinstance(finish, str) else None),
        "stop_sequence": None,
        "usage": anthropic_usage(_usage_of(chat.get("usage"), chat.get("service_tier"))),
    }


# --- stream -------------------------------------------------------------------------------------


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesStream:
    """OpenAI chat.completion.chunk objects in, Anthropic SSE events out (bytes: `event: X\ndata: {json}\n\n`).

    Only choice 0 is read. Blocks open as their kind changes (thinking, text, one per tool call) and close when
    the next opens; OpenAI tool call deltas are matched to their block by `index`. A late delta of a tool call
    whose block was already closed (calls streamed interleaved) is still sent to that block's index.
    `message_delta` (stop reason, usage) waits for `finish()`: finish_reason and usage come in the last chunks.
    """

    def __init__(self, message_id: str, model: str, input_tokens: int = 0) -> None:
        self.message_id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._tier: Any = None  # the chunks' service_tier
        self._started = False
        self._ended = False
        self._blocks = 0  # blocks opened so far: the next block's index
        self._open: str | None = None  # the open block's kind: "text", "thinking" or "tool_use"
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> block index

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """One chat chunk in; the Anthropic events it makes out (the first call also emits message_start)."""
        if self._ended:
            return b""
        out = [self._start()]
        if self._tier is None:
            self._tier = chunk.get("service_tier")
        usage = _usage_of(chunk.get("usage"), chunk.get("service_tier") or self._tier)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.append(self._choice(choice))
        return b"".join(out)

    def finish(self) -> bytes:
        """Close the open block; message_delta (stop_reason, usage); message_stop."""
        if self._ended:
            return b""
        out = [self._start(), self._close()]
        self._ended = True
        usage = anthropic_usage(self.usage, self.input_tokens)
        delta = {"stop_reason": stop_reason(self.finish_reason), "stop_sequence": None}
        out.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, error_type: str, message: str) -> bytes:
        """An `error` event (after whatever was sent); never message_stop. The stream is over after it."""
        if self._ended:
            return b""
        self._ended = True
        return _event("error", {"type": "error", "error": {"type": error_type, "message": message}})

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        msg: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return _event("message_start", {"type": "message_start", "message": msg})

    def _choice(self, choice: dict[str, Any]) -> bytes:
        out = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if reasoning := _reasoning_text(delta):
                out.append(self._delta("thinking", {"type": "thinking_delta", "thinking": reasoning}))
            for name in ("content", "refusal"):
                text = delta.get(name)
                if isinstance(text, str) and text:
                    out.append(self._delta("text", {"type": "text_delta", "text": text}))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out.append(self._tool_delta(call))
            legacy = delta.get("function_call")
            if isinstance(legacy, dict):
                out.append(self._tool_delta({"index": 0, "function": legacy}))
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self.finish_reason = finish
        return b"".join(out)

    def _delta(self, kind: str, delta: dict[str, Any]) -> bytes:
        opened = b""
        if self._open != kind:
            block: dict[str, Any] = {"type": kind, kind: ""}
            if kind == "thinking":
                block["signature"] = ""
            opened = self._open_block(kind, block)
        return opened + self._block_delta(self._blocks - 1, delta)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        k = call.get("index", 0)
        k = k if _is_int(k) else 0
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        opened = b""
        index = self._tools.get(k)
        if index is None:
            name = fn.get("name") if isinstance(fn.get("name"), str) else ""
            call_id = _tool_id(call.get("id"), self.message_id, len(self._tools))
            block: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            opened = self._open_block("tool_use", block)
            index = self._tools[k] = self._blocks - 1
        args = fn.get("arguments")
        if not isinstance(args, str) or not args:
            return opened
        return opened + self._block_delta(index, {"type": "input_json_delta", "partial_json": args})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        closed = self._close()
        self._open = kind
        index = self._blocks
        self._blocks += 1
        return closed + _event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})


# --- errors -------------------------------------------------------------------------------------


def error_type(status: int) -> str:
    """HTTP status -> Anthropic error type: 400 invalid_request_error, 401 authentication_error, 402 billing_error,
    403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error,
    504 timeout_error, 529 overloaded_error; other 5xx api_error; other 4xx invalid_request_error."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str, request_id: str | None = None) -> bytes:
    """Anthropic's error body: {"type":"error","error":{"type":...,"message":...},"request_id":...}."""
    body = {"type": "error", "error": {"type": error_type(status), "message": message}, "request_id": request_id}
    return orjson.dumps(body)
