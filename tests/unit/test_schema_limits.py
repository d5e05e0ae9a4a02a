"""The edge's bounds on a request body: nesting depth, model names, fallbacks."""

from __future__ import annotations

import orjson
import pytest

from relaycast.errors import InvalidRequest
from relaycast.schema import MAX_DEPTH, parse_chat

MESSAGES = [{"role": "user", "content": "x"}]


def body_nested(depth: int) -> dict[str, object]:
    """A chat body whose arrays and objects nest `depth` deep, the body itself being the first level."""
    v: object = []  # level depth
    for i in range(depth - 3):  # levels depth-1 .. 3
        v = {"k": v} if i % 2 else [v]
    return {"model": "p/m", "messages": MESSAGES, "trace": {"x": v}}  # levels 1 and 2


def test_a_body_nested_exactly_to_the_limit_is_accepted_and_one_level_more_is_refused() -> None:
    assert parse_chat(orjson.dumps(body_nested(MAX_DEPTH)), {}).model == "p/m"
    with pytest.raises(InvalidRequest, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_chat(orjson.dumps(body_nested(MAX_DEPTH + 1)), {})


@pytest.mark.parametrize(
    "name", ["p/" + "m" * 254, "openrouter/meta-llama/llama-3.1-8b:free", "p/m@error=429,retry_after=1"]
)
def test_model_names_people_use_are_accepted(name: str) -> None:
    assert parse_chat(orjson.dumps({"model": name, "messages": MESSAGES}), {}).model == name


@pytest.mark.parametrize("name", ["p/" + "m" * 255, "p/m\n", "p/m x", "p/mödel", "p/m\x00"])
def test_model_names_that_would_become_labels_headers_or_log_lines_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="visible ASCII"):
        parse_chat(orjson.dumps({"model": name, "messages": MESSAGES}), {})


def test_repeated_fallbacks_count_once() -> None:
    req = parse_chat(orjson.dumps({"model": "p/a", "models": ["p/a", "p/b", "p/b", "p/c"], "messages": MESSAGES}), {})
    assert req.fallbacks == ("p/b", "p/c")
