"""The OpenAPI 3.1 document of the public API, served at `GET /openapi.json`.

It describes what the gateway checks, no more: a body the document calls invalid gets a 4xx, and the limits are
the edge's own constants (relaycast/schema.py), so the two cannot drift apart. Parameters relaycast passes through
unchecked (`tools`, `tool_choice`, `response_format`, `stop`, ...) are allowed and left to the upstream. The
document depends on no config: it is built once, at import, and served as the same bytes to every caller.
"""

from __future__ import annotations

from typing import Any

import orjson

from relaycast import errors
from relaycast.asgi import Request, send_bytes
from relaycast.schema import MAX_DEPTH, MAX_FALLBACKS, MAX_ID_LEN, MAX_MODEL_NAME, MAX_N, MAX_TOKENS, ROLES
from relaycast.version import __version__

JSON_INT_MAX = 2**64 - 1  # larger integers are read as floats, which are not integers here
_ERROR = {"$ref": "#/components/schemas/Error"}

# Each status the gateway answers with, the error classes behind it (relaycast/errors.py), and when.
_STATUSES: dict[str, tuple[str, tuple[type[errors.RelaycastError], ...]]] = {
    "400": (
        "The request is invalid (a field's type or limit, a body nested too deep, invalid JSON or UTF-8), or the "
        "upstream refused it (content policy, context length, bad request), or no target can do it.",
        (
            errors.InvalidRequest,
            errors.NotSupported,
            errors.ContentPolicy,
            errors.ContextLength,
            errors.UpstreamBadRequest,
        ),
    ),
    "401": ("The gateway has keys and none, an unknown, a revoked or an expired one was sent.", (errors.Unauthorized,)),
    "403": (
        "The key may not use this model, a budget applies to a model nothing prices, or the Host or Origin header "
        "names a host the gateway does not serve (`server.allowed_hosts`).",
        (errors.Forbidden,),
    ),
    "404": (
        "No such model, alias or provider; or the upstream does not know the model.",
        (errors.ModelNotFound, errors.UpstreamNotFound),
    ),
    "413": ("The body is larger than `server.max_body_bytes`.", (errors.PayloadTooLarge,)),
    "415": ("The body is not `application/json`.", (errors.UnsupportedMediaType,)),
    "429": (
        "A key, user or feature limit or budget (with Retry-After), or every target is rate limited.",
        (errors.LimitExceeded, errors.TokenLimitExceeded, errors.BudgetExceeded, errors.RateLimited),
    ),
    "500": ("An unexpected failure in the gateway.", (errors.RelaycastError,)),
    "502": (
        "Every target failed: an upstream 5xx, a refused provider key, a failed connection, a cut or malformed answer.",
        (errors.Upstream5xx, errors.UpstreamAuth, errors.ConnectionFailed, errors.StreamCut, errors.MalformedResponse),
    ),
    "503": (
        "No target is available (open circuits or provider preferences), the limiter is unreachable and set to "
        "fail closed, an upstream is overloaded, or the gateway is starting or stopping.",
        (errors.NoRoute, errors.LimiterUnavailable, errors.Overloaded, errors.NotReady),
    ),
    "504": ("The request's deadline passed before an upstream answered.", (errors.Timeout,)),
}
_CALL_STATUSES = ("400", "401", "403", "404", "413", "415", "429", "500", "502", "503", "504")


def _falsy() -> list[Any]:
    """The JSON values Python reads as false: where the gateway tests a value's truth, these count as absent."""
    return [None, False, 0, "", [], {}]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _error_response(status: str) -> dict[str, Any]:
    description, classes = _STATUSES[status]
    codes = sorted({c.error_class for c in classes})
    return {
        "description": f"{description} Error classes (`error.code`): {', '.join(codes)}.",
        "headers": {"x-relaycast-error-class": {"$ref": "#/components/headers/ErrorClass"}},
        "content": {"application/json": {"schema": _ERROR}},
    }


def _schemas() -> dict[str, Any]:
    model_name = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_MODEL_NAME,
        "pattern": "^[!-~]+$",
        "description": f"`provider/model`, an alias, or a bare model name of one provider: at most "
        f"{MAX_MODEL_NAME} visible ASCII characters, no spaces.",
        "examples": ["openai/gpt-4o-mini", "fast"],
    }
    truthy = {"not": {"enum": _falsy()}}
    content_part = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "examples": ["text", "image_url"]}},
    }
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": sorted(ROLES)},
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ContentPart"}},
                    {"type": "null"},
                ]
            },
        },
        "if": {"required": ["role"], "properties": {"role": {"const": "assistant"}}},
        # An assistant turn may leave out its content when it calls tools.
        "then": {
            "anyOf": [
                {"required": ["content"]},
                {"required": ["tool_calls"], "properties": {"tool_calls": truthy}},
                {"required": ["function_call"], "properties": {"function_call": truthy}},
            ]
        },
        "else": {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
    }
    # `model`, or else a non-empty `models` whose first entry is the model.
    model_or_models = [
        {"required": ["model"], "properties": {"model": {"type": "string"}}},
        {"required": ["models"], "properties": {"models": {"type": "array", "minItems": 1}}},
    ]
    models = _nullable(
        {
            "type": "array",
            "maxItems": MAX_FALLBACKS + 1,
            "items": {"$ref": "#/components/schemas/ModelName"},
            "description": f"OpenRouter's fallbacks, tried in order after `model` (or instead of it when `model` is "
            f"absent): at most {MAX_FALLBACKS} besides the model.",
        }
    )
    id_string = _nullable({"type": "string", "maxLength": MAX_ID_LEN})
    attribution = {
        "user": {**id_string, "description": "The end user, for attribution and per-user limits."},
        "session_id": {**id_string, "description": "The session, for attribution (or header `x-session-id`)."},
        "trace": {
            **_nullable({"type": "object"}),
            "description": "Trace metadata: trace_id, trace_name, span_name, generation_name, parent_span_id, tags.",
        },
    }
    positive = {"type": "integer", "minimum": 1}
    names = _nullable({"type": "array", "items": {"type": "string"}})
    price = _nullable({"type": "number", "minimum": 0})
    sorts = ["price", "throughput", "latency"]
    provider = {
        "type": "object",
        "description": "OpenRouter's provider preferences.",
        "properties": {
            "order": names,
            "only": names,
            "ignore": names,
            "allow_fallbacks": {"type": "boolean"},
            "sort": {
                "anyOf": [
                    {"type": "null"},
                    {"enum": sorts},
                    {"type": "object", "properties": {"by": {"enum": [*sorts, None]}}},
                ]
            },
            "max_price": {
                "description": "USD per million tokens; a value that reads as false is no cap.",
                "anyOf": [
                    {"type": "object", "properties": {"prompt": price, "completion": price}},
                    {"enum": _falsy()},
                ],
            },
        },
    }
    chat = {
        "type": "object",
        "description": f"OpenAI's chat completion request with OpenRouter's extensions. Other fields pass to the "
        f"upstream unchanged. Arrays and objects nest at most {MAX_DEPTH} levels deep.",
        "required": ["messages"],
        "anyOf": model_or_models,
        "properties": {
            "model": {"anyOf": [{"$ref": "#/components/schemas/ModelName"}, {"type": "null"}]},
            "models": models,
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": _nullable(
                {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            ),
            "max_tokens": _nullable({**positive, "maximum": MAX_TOKENS}),
            "max_completion_tokens": _nullable({**positive, "maximum": MAX_TOKENS}),
            "n": _nullable({**positive, "maximum": MAX_N}),
            "temperature": {"type": ["number", "null"]},
            "top_p": {"type": ["number", "null"]},
            "presence_penalty": {"type": ["number", "null"]},
            "frequency_penalty": {"type": ["number", "null"]},
            "tools": {
                **_nullable({"type": "array"}),
                "description": "Function tools, passed to the upstream (mapped for Anthropic), which checks them.",
            },
            "provider": _nullable(provider),
            **attribution,
        },
    }
    token_ints = {"anyOf": [{"type": "integer", "minimum": -(2**63), "maximum": JSON_INT_MAX}, {"type": "boolean"}]}
    embeddings = {
        "type": "object",
        "description": "OpenAI's embeddings request. Other fields pass to the upstream unchanged.",
        "required": ["input"],
        "anyOf": model_or_models,
        "properties": {
            "model": {"anyOf": [{"$ref": "#/components/schemas/ModelName"}, {"type": "null"}]},
            "models": models,
            "input": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    {"type": "array", "minItems": 1, "items": token_ints},
                    {"type": "array", "minItems": 1, "items": {"type": "array"}},
                ]
            },
            **attribution,
        },
    }
    return {
        "ModelName": model_name,
        "ContentPart": content_part,
        "Message": message,
        "ChatCompletionRequest": chat,
        "EmbeddingsRequest": embeddings,
        "ChatCompletion": {
            "type": "object",
            "required": ["choices"],
            "properties": {
                "id": {"type": ["string", "null"]},
                "object": {"type": "string"},
                "model": {"type": "string"},
                "choices": {"type": "array", "items": {"type": "object"}},
                "usage": {"type": ["object", "null"]},
            },
        },
        "Embeddings": {
            "type": "object",
            "required": ["data"],
            "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": {"type": "object"}}},
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "object", "owned_by"],
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Error": {
            "type": "object",
            "description": "OpenAI's error format; `code` is relaycast's error class.",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "additionalProperties": False,
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": "string"},
                    },
                }
            },
        },
    }


def _attribution_headers() -> list[dict[str, Any]]:
    described = (
        ("x-request-id", "A request id to correlate with (letters, digits, `-_.:`, at most 128 characters)."),
        ("x-relaycast-user", "The end user, when the body names none."),
        ("x-relaycast-feature", "The feature, for attribution and per-feature limits (wins over X-Title)."),
        ("x-relaycast-tags", "`team=search, env=prod`: at most 20 tags, keys of at most 100 and values of 200."),
        ("x-session-id", "The session, when the body names none."),
        ("X-Title", "The feature (OpenRouter's header)."),
        ("HTTP-Referer", "The calling application (OpenRouter's header)."),
    )
    return [
        {"name": n, "in": "header", "required": False, "description": d, "schema": {"type": "string"}}
        for n, d in described
    ]


def _call(summary: str, request: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "parameters": _attribution_headers(),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}},
        },
        "responses": {"200": ok, **{s: _error_response(s) for s in _CALL_STATUSES}},
    }


def _served_headers() -> dict[str, Any]:
    return {
        "x-relaycast-target": {"description": "The `provider/model` that answered.", "schema": {"type": "string"}},
        "x-relaycast-attempts": {"description": "Attempts made.", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    }


def build() -> dict[str, Any]:
    """The document, as a dict."""
    chat_ok = {
        "description": "The completion; with `stream: true`, server-sent events ending with `data: [DONE]` (or an "
        "error event when the stream fails after it started).",
        "headers": _served_headers(),
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
            "text/event-stream": {
                "schema": {
                    "description": "One event: `data` is a chat.completion.chunk, an error object, or `[DONE]`.",
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "string"}},
                }
            },
        },
    }
    embeddings_ok = {
        "description": "The embeddings.",
        "headers": _served_headers(),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Embeddings"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relaycast",
            "version": __version__,
            "description": "An OpenAI-compatible LLM gateway. Every error is a JSON body in OpenAI's format.",
        },
        "paths": {
            "/v1/chat/completions": {"post": _call("Create a chat completion", "ChatCompletionRequest", chat_ok)},
            "/v1/embeddings": {"post": _call("Create embeddings", "EmbeddingsRequest", embeddings_ok)},
            "/v1/models": {
                "get": {
                    "summary": "Every alias and every configured provider/model",
                    "security": [{"bearer": []}, {"apiKey": []}, {}],
                    "responses": {
                        "200": {
                            "description": "The models.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}},
                        },
                        "401": _error_response("401"),
                        "403": _error_response("403"),
                        "503": _error_response("503"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The gateway is serving.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"const": "ok"}},
                                    }
                                }
                            },
                        },
                        "503": _error_response("503"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}},
                        "403": _error_response("403"),
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "headers": {
                "ErrorClass": {"description": "relaycast's error class (`error.code`).", "schema": {"type": "string"}}
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A gateway key, when the gateway has keys (without keys it is open).",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


DOCUMENT = orjson.dumps(build())


async def serve(r: Request) -> None:
    """`GET /openapi.json`: no key needed; the document names no model, key or upstream of this gateway."""
    await send_bytes(r.send, 200, DOCUMENT, r.id_headers)


__all__ = ["DOCUMENT", "build", "serve"]
