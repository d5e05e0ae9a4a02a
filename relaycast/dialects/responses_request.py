"""OpenAI's Responses API (`POST /v1/responses`, inbound): its request -> a chat-completions body. Pure, no I/O.

`chat_body` validates a Responses request and maps it, saying why a chat-completions target cannot serve it
faithfully when that is so (a built-in tool, a file by id, an item reference). Never sent to chat: `store` and
`previous_response_id` (the caller's), `include`, `truncation`, `metadata`, `prompt_cache_key`, `service_tier`,
`text.verbosity`, `max_tool_calls`. A function tool's `strict` is copied only when the client set it (the Responses
API's default, true, would make chat reject non-strict schemas). The answer's way back is `dialects.responses`.
"""

from __future__ import annotations

from typing import Any

from relaycast import errors

MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
TOOL_CHOICES = frozenset({"auto", "none", "required"})


class _Reasons:
    """The first reason a chat target cannot serve the request faithfully."""

    __slots__ = ("first",)

    def __init__(self) -> None:
        self.first: str | None = None

    def add(self, reason: str) -> None:
        if self.first is None:
            self.first = reason


def chat_body(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], str | None]:
    """Validate a Responses request and map it to an OpenAI chat-completions body.

    `history` (chat messages of the conversation so far, from `previous_response_id`) goes after the instructions'
    system message and before the new input. Returns (chat_body, untranslatable): the latter is None or a short
    reason why a chat target cannot serve the request faithfully. Raises InvalidRequest / NotSupported."""
    if not isinstance(body, dict):
        raise errors.InvalidRequest("request body must be a JSON object")
    if body.get("background") is True:
        raise errors.NotSupported("background responses are not supported; omit 'background'", param="background")
    if body.get("conversation") is not None:
        raise errors.NotSupported(
            "'conversation' is not supported; use 'previous_response_id' or send the input", param="conversation"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise errors.InvalidRequest("'model' is required and must be a non-empty string", param="model")
    reasons = _Reasons()
    if body.get("prompt") is not None:
        reasons.add("stored prompt templates ('prompt') need the Responses API")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise errors.InvalidRequest("'instructions' must be a string", param="instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    if history:
        messages.extend(history)
    messages.extend(_input_messages(body.get("input"), reasons))
    if not messages and reasons.first is None:
        raise errors.InvalidRequest("'input' is required", param="input")
    out: dict[str, Any] = {"model": model, "messages": messages}
    _copy_params(body, out)
    tools = _tools(body.get("tools"), reasons)
    if tools:
        out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"), reasons)
    if choice is not None:
        out["tool_choice"] = choice
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    return out, reasons.first


def _copy_params(body: dict[str, Any], out: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        v = body.get(name)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise errors.InvalidRequest(f"'{name}' must be a number", param=name)
            out[name] = v
    mot = body.get("max_output_tokens")
    if mot is not None:
        if isinstance(mot, bool) or not isinstance(mot, int) or mot < 1:
            raise errors.InvalidRequest("'max_output_tokens' must be a positive integer", param="max_output_tokens")
        out["max_tokens"] = mot
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None:
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20:
            raise errors.InvalidRequest("'top_logprobs' must be an integer from 0 to 20", param="top_logprobs")
        out["logprobs"] = True
        out["top_logprobs"] = top_logprobs
    for name in ("user", "safety_identifier"):
        v = body.get(name)
        if v is not None and not isinstance(v, str):
            raise errors.InvalidRequest(f"'{name}' must be a string", param=name)
    user = body.get("user") or body.get("safety_identifier")
    if user:
        out["user"] = user
    ptc = body.get("parallel_tool_calls")
    if ptc is not None:
        if not isinstance(ptc, bool):
            raise errors.InvalidRequest("'parallel_tool_calls' must be a boolean", param="parallel_tool_calls")
        out["parallel_tool_calls"] = ptc
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise errors.InvalidRequest("'reasoning' must be an object", param="reasoning")
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str):
                raise errors.InvalidRequest("'reasoning.effort' must be a string", param="reasoning.effort")
            out["reasoning_effort"] = effort
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise errors.InvalidRequest("'stream' must be a boolean", param="stream")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}


def _input_messages(raw: Any, reasons: _Reasons) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise errors.InvalidRequest("'input' must be a string or an array of input items", param="input")
    out: list[dict[str, Any]] = []
    calls_into: dict[str, Any] | None = None  # the assistant message that function_call items join
    for i, item in enumerate(raw):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise errors.InvalidRequest(f"'{at}' must be an object", param=at)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if not isinstance(kind, str):
            raise errors.InvalidRequest(f"'{at}.type' must be a string", param=f"{at}.type")
        if kind == "message":
            msg = _message(item, at, reasons)
            out.append(msg)
            calls_into = msg if msg["role"] == "assistant" else None
        elif kind == "function_call":
            call = _function_call(item, at)
            if calls_into is None:
                calls_into = {"role": "assistant", "content": None}
                out.append(calls_into)
            calls_into.setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            out.append(_function_call_output(item, at, reasons))
            calls_into = None
        elif kind == "reasoning":
            continue  # chat has no place for a previous turn's reasoning; it does not end a run of calls
        elif kind == "item_reference":
            reasons.add("input items by reference ('item_reference') need the Responses API")
        else:
            reasons.add(f"'{kind}' input items need the Responses API")
    return out


def _message(item: dict[str, Any], at: str, reasons: _Reasons) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in MESSAGE_ROLES:
        raise errors.InvalidRequest(
            f"'{at}.role' must be one of assistant, developer, system, user", param=f"{at}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise errors.InvalidRequest(f"'{at}.content' must be a string or an array of parts", param=f"{at}.content")
    parts = [_part(p, f"{at}.content[{j}]", reasons) for j, p in enumerate(content)]
    kept = [p for p in parts if p is not None]
    only_text = all(p["type"] == "text" for p in kept)
    if role == "assistant" or (role in ("system", "developer") and only_text):
        if not only_text:
            reasons.add("assistant messages with images or files cannot be sent to chat")
        return {"role": role, "content": "".join(p.get("text", "") for p in kept)}
    return {"role": role, "content": kept}


def _part(p: Any, at: str, reasons: _Reasons) -> dict[str, Any] | None:
    """A Responses content part as a chat part; None when it is left out (the reason is recorded)."""
    if not isinstance(p, dict) or not isinstance(p.get("type"), str):
        raise errors.InvalidRequest(f"'{at}' must be an object with a 'type'", param=at)
    kind = p["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": _str(p, "text", at)}
    if kind == "refusal":
        return {"type": "text", "text": _str(p, "refusal", at)}
    if kind == "input_image":
        url = p.get("image_url")
        if isinstance(url, str) and url:
            detail = p.get("detail")
            return {
                "type": "image_url",
                "image_url": {"url": url, "detail": detail if isinstance(detail, str) else "auto"},
            }
        if p.get("file_id") is not None:
            reasons.add("images by 'file_id' need the Responses API")
            return None
        raise errors.InvalidRequest(f"'{at}' needs an 'image_url' or a 'file_id'", param=at)
    if kind == "input_file":
        data = p.get("file_data")
        if isinstance(data, str) and data:
            file: dict[str, Any] = {"file_data": data}
            if isinstance(p.get("filename"), str):
                file["filename"] = p["filename"]
            return {"type": "file", "file": file}
        if p.get("file_id") is not None or p.get("file_url") is not None:
            reasons.add("files by 'file_id' or 'file_url' need the Responses API")
            return None
        raise errors.InvalidRequest(f"'{at}' needs 'file_data', a 'file_id' or a 'file_url'", param=at)
    if kind == "input_audio" and isinstance(p.get("input_audio"), dict):
        return {"type": "input_audio", "input_audio": p["input_audio"]}
    reasons.add(f"'{kind}' content parts need the Responses API")
    return None


def _function_call(item: dict[str, Any], at: str) -> dict[str, Any]:
    call_id = _str(item, "call_id", at)
    name = _str(item, "name", at)
    arguments = _str(item, "arguments", at)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _function_call_output(item: dict[str, Any], at: str, reasons: _Reasons) -> dict[str, Any]:
    call_id = _str(item, "call_id", at)
    output = item.get("output")
    if isinstance(output, str):
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if not isinstance(output, list):
        raise errors.InvalidRequest(f"'{at}.output' must be a string or an array of parts", param=f"{at}.output")
    texts: list[str] = []
    for j, p in enumerate(output):
        part = _part(p, f"{at}.output[{j}]", reasons)
        if part is None:
            continue
        if part["type"] != "text":
            reasons.add("function call outputs with images or files cannot be sent to chat")
            continue
        texts.append(part["text"])
    return {"role": "tool", "tool_call_id": call_id, "content": "".join(texts)}


def _tools(raw: Any, reasons: _Reasons) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise errors.InvalidRequest("'tools' must be an array", param="tools")
    out: list[dict[str, Any]] = []
    for i, t in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("type"), str):
            raise errors.InvalidRequest(f"'{at}' must be an object with a 'type'", param=at)
        if t["type"] != "function":
            reasons.add(f"the built-in tool '{t['type']}' needs the Responses API")
            continue
        fn: dict[str, Any] = {"name": _str(t, "name", at)}
        description = t.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise errors.InvalidRequest(f"'{at}.description' must be a string", param=f"{at}.description")
            fn["description"] = description
        parameters = t.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise errors.InvalidRequest(f"'{at}.parameters' must be an object", param=f"{at}.parameters")
            fn["parameters"] = parameters
        strict = t.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise errors.InvalidRequest(f"'{at}.strict' must be a boolean", param=f"{at}.strict")
            fn["strict"] = strict
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(raw: Any, reasons: _Reasons) -> Any:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in TOOL_CHOICES:
            raise errors.InvalidRequest("'tool_choice' must be auto, none, required or an object", param="tool_choice")
        return raw
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise errors.InvalidRequest("'tool_choice' must be a string or an object with a 'type'", param="tool_choice")
    if raw["type"] == "function":
        return {"type": "function", "function": {"name": _str(raw, "name", "tool_choice")}}
    reasons.add(f"tool_choice '{raw['type']}' needs the Responses API")
    return None


def _response_format(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise errors.InvalidRequest("'text' must be an object", param="text")
    fmt = raw.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise errors.InvalidRequest("'text.format' must be an object with a 'type'", param="text.format")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise errors.InvalidRequest(
            "'text.format.type' must be text, json_object or json_schema", param="text.format.type"
        )
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise errors.InvalidRequest("'text.format.schema' must be an object", param="text.format.schema")
    js: dict[str, Any] = {"name": _str(fmt, "name", "text.format"), "schema": schema}
    if fmt.get("strict") is not None:
        if not isinstance(fmt["strict"], bool):
            raise errors.InvalidRequest("'text.format.strict' must be a boolean", param="text.format.strict")
        js["strict"] = fmt["strict"]
    if fmt.get("description") is not None:
        if not isinstance(fmt["description"], str):
            raise errors.InvalidRequest("'text.format.description' must be a string", param="text.format.description")
        js["description"] = fmt["description"]
    return {"type": "json_schema", "json_schema": js}


def _str(obj: dict[str, Any], key: str, at: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise errors.InvalidRequest(f"'{at}.{key}' must be a string", param=f"{at}.{key}")
    return v
