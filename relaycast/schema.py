"""OpenAI-compatible request models. Requests are parsed and validated once, here, at the edge.

Parameters relaycast does not interpret (tools, response_format, seed, logprobs, n, stop, ...) are kept in
`body` and pass through unchanged to OpenAI-compatible upstreams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson

from relaycast.asgi import BodyTooLarge, Receive, read_body
from relaycast.errors import InvalidRequest, PayloadTooLarge
from relaycast.records import Attribution

# OpenRouter request extensions: read by the gateway, not sent to upstreams that do not know them.
OPENROUTER_EXTENSIONS = ("models", "provider", "session_id", "trace", "route", "transforms", "plugins", "usage")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_ID_LEN = 256
MAX_MODEL_NAME = 256  # characters; visible ASCII only (names become metric labels, headers and log fields)
MAX_DEPTH = 64  # nesting of arrays and objects in a request body (JSON schemas of tools included)
MAX_FALLBACKS = 8  # OpenRouter `models` entries after the first: each one is planned and may be tried
MAX_TOKENS = 2**31 - 1  # max_tokens / max_completion_tokens: a 32-bit integer, which every upstream and Redis takes
MAX_N = 128  # choices per request, as OpenAI allows
MAX_SEEN_TRACE = 32  # `trace` entries a refused request's record keeps (scalars only, strings cut to 200)


@dataclass(frozen=True, slots=True)
class ProviderPrefs:
    """OpenRouter's `provider` request object."""

    order: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    only: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    sort: str | None = None  # "price" | "throughput" | "latency"
    max_prompt_price: float | None = None  # USD per million tokens
    max_completion_price: float | None = None


NO_PREFS = ProviderPrefs()  # a request without a `provider` object (nearly all): one instance, immutable


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]  # the client's JSON, as sent
    model: str
    fallbacks: tuple[str, ...]  # OpenRouter `models`: tried in order after `model`
    stream: bool
    include_usage: bool  # the client asked for the usage chunk (stream_options.include_usage)
    messages: list[dict[str, Any]]
    attribution: Attribution
    prefs: ProviderPrefs = NO_PREFS
    # The API the client called: "chat" (chat completions), "messages" (Anthropic), "responses" (OpenAI Responses)
    # or "completions" (legacy). `body` is always a chat-completions body (translated for the others), except for
    # "completions", whose body is the client's own. `native` is the client's body as sent, for a provider that
    # speaks that API itself; `untranslatable` says why a provider reached through translation cannot serve it
    # faithfully (a server tool, a file by id, ...): such a target is skipped as `not_supported`.
    dialect: str = "chat"
    native: dict[str, Any] | None = None
    native_headers: tuple[tuple[str, str], ...] = ()  # client headers a native provider gets (anthropic-beta)
    untranslatable: str | None = None
    continued: bool = False  # continues a conversation from relaycast's store: translated for every provider
    usage_include: bool = False  # OpenRouter's `usage: {include: true}`: the answer's usage carries its cost
    # The client's request headers by lower-case name: a provider passes on those its `forward_headers` lists.
    client_headers: Mapping[bytes, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class EmbeddingsRequest:
    body: dict[str, Any]
    model: str
    attribution: Attribution


async def read_json(receive: Receive, limit: int) -> dict[str, Any]:
    """A request body of at most `limit` bytes (PayloadTooLarge past it), loaded as a JSON object (`load_json`)."""
    try:
        raw = await read_body(receive, limit)
    except BodyTooLarge:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.") from None
    return load_json(raw)


def load_json(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {_kind(body)}")
    # Fewer opening brackets than the limit (strings included) cannot nest past it: most bodies skip the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(body, MAX_DEPTH):
        raise InvalidRequest(f"request body is nested deeper than {MAX_DEPTH} levels")
    return body


def _too_deep(body: dict[str, Any], limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit`, level by level (linear in the containers; stops at the
    first level with none). The body is re-encoded for the upstream and stored, and encoders refuse deep nesting."""
    level: list[Any] = [body]
    for _ in range(limit - 1):  # the containers at depth 2, 3, ... limit
        level = [
            v
            for node in level
            for v in (node.values() if type(node) is dict else node)
            if type(v) is dict or type(v) is list
        ]
        if not level:
            return False
    return any(
        type(v) is dict or type(v) is list for node in level for v in (node.values() if type(node) is dict else node)
    )


def parse_chat(raw: bytes, headers: dict[bytes, bytes]) -> ChatRequest:
    return chat_request(load_json(raw), headers)


def chat_request(body: dict[str, Any], headers: dict[bytes, bytes]) -> ChatRequest:
    """A chat request from its loaded body (`load_json`); InvalidRequest when it is not one."""
    model, fallbacks = _model_and_fallbacks(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("'messages' is required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for i, m in enumerate(messages):
        _check_message(m, i)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest(f"'stream' must be a boolean, got {_kind(stream)}", param="stream")
    include_usage = False
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        iu = so.get("include_usage", False)
        if not isinstance(iu, bool):
            raise InvalidRequest(
                "'stream_options.include_usage' must be a boolean", param="stream_options.include_usage"
            )
        include_usage = iu
    for name, most in (("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS), ("n", MAX_N)):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InvalidRequest(f"'{name}' must be a positive integer, got {_kind(v)}", param=name)
        if v is not None and v > most:
            raise InvalidRequest(f"'{name}' must be at most {most}, got {v}", param=name)
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InvalidRequest(f"'{name}' must be a number, got {_kind(v)}", param=name)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    usage = body.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise InvalidRequest("'usage' must be an object", param="usage")
    req = ChatRequest(
        body=body,
        model=model,
        fallbacks=fallbacks,
        stream=stream,
        include_usage=include_usage,
        messages=messages,
        attribution=attribution(body, headers),
        prefs=provider_prefs(body.get("provider")),
        usage_include=bool(usage and usage.get("include") is True),
        client_headers=headers,
    )
    if req.usage_include:
        req.include_usage = True  # OpenRouter sends the usage chunk to a client that asked for usage this way
    return req


def completions_request(body: dict[str, Any], headers: dict[bytes, bytes]) -> ChatRequest:
    """A legacy completions request (`prompt`, not `messages`): passed through as sent, so only its model, stream
    flag, output cap and attribution are read; its prompt counts as one user message for estimates."""
    model, fallbacks = _model_and_fallbacks(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("'prompt' is required", param="prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        text = "\n".join(prompt)
    elif isinstance(prompt, str):
        text = prompt
    else:
        raise InvalidRequest("'prompt' must be a string or an array of strings", param="prompt")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidRequest(f"'stream' must be a boolean, got {_kind(stream)}", param="stream")
    v = body.get("max_tokens")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_TOKENS):
        raise InvalidRequest("'max_tokens' must be a positive integer", param="max_tokens")
    so = body.get("stream_options")
    return ChatRequest(
        body=body,
        model=model,
        fallbacks=fallbacks,
        stream=stream,
        include_usage=isinstance(so, dict) and so.get("include_usage") is True,
        messages=[{"role": "user", "content": text}],
        attribution=attribution(body, headers),
        prefs=provider_prefs(body.get("provider")),
        dialect="completions",
        native=body,
        untranslatable="legacy completions go to OpenAI-compatible providers only",
        client_headers=headers,
    )


def parse_embeddings(raw: bytes, headers: dict[bytes, bytes]) -> EmbeddingsRequest:
    return embeddings_request(load_json(raw), headers)


def embeddings_request(body: dict[str, Any], headers: dict[bytes, bytes]) -> EmbeddingsRequest:
    """An embeddings request from its loaded body (`load_json`); InvalidRequest when it is not one."""
    model, _ = _model_and_fallbacks(body)
    inp = body.get("input")
    if inp is None:
        raise InvalidRequest("'input' is required", param="input")
    ok = isinstance(inp, str) or (
        isinstance(inp, list)
        and inp
        and (
            all(isinstance(x, str) for x in inp)
            or all(isinstance(x, int) for x in inp)
            or all(isinstance(x, list) for x in inp)
        )
    )
    if not ok:
        raise InvalidRequest(
            "'input' must be a string, an array of strings, or an array of token arrays", param="input"
        )
    return EmbeddingsRequest(body=body, model=model, attribution=attribution(body, headers))


def attribution(body: dict[str, Any], headers: dict[bytes, bytes]) -> Attribution:
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", param="user")
    user = user or _header(headers, b"x-relaycast-user")
    session = body.get("session_id")
    if session is not None and not isinstance(session, str):
        raise InvalidRequest("'session_id' must be a string", param="session_id")
    session = session or _header(headers, b"x-session-id")
    trace = body.get("trace")
    if trace is not None and not isinstance(trace, dict):
        raise InvalidRequest("'trace' must be an object", param="trace")
    feature = _header(headers, b"x-relaycast-feature") or _header(headers, b"x-title")
    for name, v in (("user", user), ("session_id", session)):
        if v is not None and len(v) > MAX_ID_LEN:
            raise InvalidRequest(f"'{name}' is longer than {MAX_ID_LEN} characters", param=name)
    return Attribution(
        user=user,
        session_id=session,
        feature=feature,
        app_url=_header(headers, b"http-referer"),
        trace=trace,
        tags=_tags(headers.get(b"x-relaycast-tags")),
    )


@dataclass(frozen=True, slots=True)
class Seen:
    """What a refused request said about itself: the record of a refusal keeps this much."""

    model: str = ""
    stream: bool = False
    attribution: Attribution = Attribution()


def seen(body: dict[str, Any] | None, headers: dict[bytes, bytes]) -> Seen:
    """The model, stream flag and attribution of a request that is refused, read leniently (never raises: what is
    invalid is left out) from its loaded body, when there is one, and its headers. Every value is bounded, however
    large the request: a model name only when valid, ids cut to 256 characters, tags as the header allows, and
    at most 32 scalar `trace` entries (strings cut to 200 characters)."""
    b = body or {}
    model = b.get("model")
    if model is None:
        models = b.get("models")
        model = models[0] if isinstance(models, list) and models else None
    try:
        tags = _tags(headers.get(b"x-relaycast-tags"))
    except InvalidRequest:
        tags = ()
    return Seen(
        model=model if isinstance(model, str) and _is_model_name(model) else "",
        stream=b.get("stream") is True,
        attribution=Attribution(
            user=_short(b.get("user")) or _header(headers, b"x-relaycast-user"),
            session_id=_short(b.get("session_id")) or _header(headers, b"x-session-id"),
            feature=_header(headers, b"x-relaycast-feature") or _header(headers, b"x-title"),
            app_url=_header(headers, b"http-referer"),
            trace=_seen_trace(b.get("trace")),
            tags=tags,
        ),
    )


def _short(v: Any) -> str | None:
    return v[:MAX_ID_LEN] if isinstance(v, str) and v else None


def _seen_trace(v: Any) -> dict[str, Any] | None:
    if not isinstance(v, dict):
        return None
    out: dict[str, Any] = {}
    for k, x in islice(v.items(), MAX_SEEN_TRACE):
        if isinstance(x, str):
            out[str(k)[:100]] = x[:200]
        elif isinstance(x, bool | int | float):
            out[str(k)[:100]] = x
    return out or None


MAX_TAGS = 20


def _tags(raw: bytes | None) -> tuple[tuple[str, str], ...]:
    """`X-Relaycast-Tags: team=search, env=prod` (a bare word is a tag with an empty value)."""
    if not raw:
        return ()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidRequest("X-Relaycast-Tags must be UTF-8 text") from None
    out: dict[str, str] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not key:
            continue
        if len(key) > 100 or len(value) > 200:
            raise InvalidRequest("X-Relaycast-Tags: a key is at most 100 characters and a value at most 200")
        out[key] = value
    if len(out) > MAX_TAGS:
        raise InvalidRequest(f"X-Relaycast-Tags: at most {MAX_TAGS} tags")
    return tuple(out.items())


def provider_prefs(raw: Any) -> ProviderPrefs:
    """OpenRouter's `provider` object: order, allow_fallbacks, only, ignore, sort, max_price."""
    if raw is None:
        return NO_PREFS
    if not isinstance(raw, dict):
        raise InvalidRequest("'provider' must be an object", param="provider")

    def names(key: str) -> tuple[str, ...]:
        v = raw.get(key)
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise InvalidRequest(f"'provider.{key}' must be an array of provider names", param=f"provider.{key}")
        return tuple(v)

    allow = raw.get("allow_fallbacks", True)
    if not isinstance(allow, bool):
        raise InvalidRequest("'provider.allow_fallbacks' must be a boolean", param="provider.allow_fallbacks")
    sort = raw.get("sort")
    if isinstance(sort, dict):  # the newer object form: {"by": "price", ...}
        sort = sort.get("by")
    if sort is not None and sort not in ("price", "throughput", "latency"):
        raise InvalidRequest("'provider.sort' must be one of price, throughput, latency", param="provider.sort")
    max_price = raw.get("max_price") or {}
    if not isinstance(max_price, dict):
        raise InvalidRequest("'provider.max_price' must be an object", param="provider.max_price")
    caps = []
    for k in ("prompt", "completion"):
        v = max_price.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise InvalidRequest(
                f"'provider.max_price.{k}' must be a price in USD per million tokens", param=f"provider.max_price.{k}"
            )
        caps.append(None if v is None else float(v))
    return ProviderPrefs(
        order=names("order"),
        allow_fallbacks=allow,
        only=names("only"),
        ignore=names("ignore"),
        sort=sort,
        max_prompt_price=caps[0],
        max_completion_price=caps[1],
    )


def upstream_body(req: ChatRequest, model: str, *, keep_openrouter: bool) -> dict[str, Any]:
    """The client's body with the target's model and without extensions the upstream would reject."""
    body = dict(req.body)
    body["model"] = model
    for k in OPENROUTER_EXTENSIONS:
        if k in body and not (keep_openrouter and k in ("session_id", "trace", "usage")):
            del body[k]
    if keep_openrouter and req.attribution.session_id and "session_id" not in body:
        body["session_id"] = req.attribution.session_id
    return body


def _model_and_fallbacks(body: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    model = body.get("model")
    models = body.get("models")
    if models is not None:
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise InvalidRequest("'models' must be an array of model names", param="models")
        if len(models) > MAX_FALLBACKS + 1:
            raise InvalidRequest(f"'models' may name at most {MAX_FALLBACKS + 1} models", param="models")
        for i, m in enumerate(models):
            _check_model_name(m, f"models[{i}]")
    if model is None:
        if not models:
            raise InvalidRequest("'model' is required", param="model")
        model, models = models[0], models[1:]
    if not isinstance(model, str) or not model:
        raise InvalidRequest(f"'model' must be a non-empty string, got {_kind(model)}", param="model")
    _check_model_name(model, "model")
    fallbacks = tuple(dict.fromkeys(m for m in (models or ()) if m != model))
    if len(fallbacks) > MAX_FALLBACKS:
        raise InvalidRequest(f"'models' may name at most {MAX_FALLBACKS} fallbacks besides 'model'", param="models")
    return model, fallbacks


def _is_model_name(name: str) -> bool:
    return 0 < len(name) <= MAX_MODEL_NAME and name.isascii() and name.isprintable() and " " not in name


def _check_model_name(name: str, at: str) -> None:
    if not _is_model_name(name):
        raise InvalidRequest(
            f"'{at}' must be a model name of at most {MAX_MODEL_NAME} visible ASCII characters", param=at
        )


def _check_message(m: Any, i: int) -> None:
    at = f"messages[{i}]"
    if not isinstance(m, dict):
        raise InvalidRequest(f"'{at}' must be an object, got {_kind(m)}", param=at)
    role = m.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"'{at}.role' must be one of {', '.join(sorted(ROLES))}, got {_kind(role)}", param=f"{at}.role"
        )
    content = m.get("content")
    if content is None:
        if role == "assistant" and (m.get("tool_calls") or m.get("function_call")):
            return
        if role == "assistant" and "content" in m:
            return
        raise InvalidRequest(f"'{at}.content' is required", param=f"{at}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"'{at}.content' must be a string or an array of parts", param=f"{at}.content")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"'{at}.content[{j}]' must be an object with a 'type'", param=f"{at}.content[{j}]")


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    v = headers.get(name)
    if not v:
        return None
    return v.decode("utf-8", "replace")[:MAX_ID_LEN]


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(v), type(v).__name__
    )
