"""Anthropic's Messages API (`POST /v1/messages`, inbound): its request -> an OpenAI chat-completions body. Pure, no
I/O. The answer's way back (message, stream, errors) is `dialects.messages`.

`chat_body` validates a client's `/v1/messages` (or `/v1/messages/count_tokens`) body and maps it, saying why an
OpenAI-compatible target cannot serve it faithfully when that is so. What does not survive the trip to chat:
`thinking` and `redacted_thinking` blocks of assistant turns are dropped (chat has no way to send them back), as
are `cache_control` marks anywhere but on text (system and content parts), a tool result's `is_error` flag,
document citations and `service_tier`. Server tools, MCP servers, containers, files by id, documents by URL and
images inside tool results make a request untranslatable.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, TypeGuard

import orjson

from relaycast.errors import InvalidRequest

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
        if not is_int(max_tokens) or max_tokens < 1:
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


def is_int(v: Any) -> TypeGuard[int]:
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
        if not is_int(top_k) or top_k < 0:
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
            if not is_int(budget) or budget < 1:
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
