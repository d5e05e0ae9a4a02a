"""Schemathesis on the document the gateway serves at /openapi.json, against a real gateway over the fake upstream.

Valid requests (positive mode) and requests the document calls invalid (negative mode), a bounded number of each
per operation: no 5xx of the gateway's own, every error in OpenAI's format and in the document, every invalid
request refused with a 4xx; /healthz answers within the bound throughout and memory stays bounded."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relaycast.server.openapi import DOCUMENT
from tests.conftest import GatewayProcess
from tests.fuzz.conftest import (
    EMBEDDING_MODELS,
    FUZZ_KEY,
    MODELS,
    Answer,
    HealthWatch,
    assert_acceptable,
    rss_kib,
)

SCHEMA = schemathesis.openapi.from_dict(orjson.loads(DOCUMENT))
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = {"POST /v1/chat/completions": 80, "POST /v1/embeddings": 40}  # per mode; the GETs have nothing to vary
# A deeper run by hand: RELAYCAST_FUZZ_SCALE=20 RELAYCAST_FUZZ_RANDOM=1 (new examples each run; CI's are fixed).
SCALE = int(os.environ.get("RELAYCAST_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("RELAYCAST_FUZZ_RANDOM") == "1"
OPERATIONS = [
    (op.method.upper(), op.path, mode)
    for op in (r.ok() for r in SCHEMA.get_all_operations())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or op.method.upper() == "POST"
]


def test_the_gateway_serves_this_document(fuzz_gateway: GatewayProcess) -> None:
    r = requests.get(fuzz_gateway.url + "/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == DOCUMENT
    assert r.json()["openapi"].startswith("3.1")


def _real_model(case: schemathesis.Case, name: str) -> None:
    """Point most generated requests at a configured model, so they reach the upstream rather than a 404. Only a
    name the document already calls valid is replaced: a negative case stays as invalid as it was generated."""
    body = case.body
    if not isinstance(body, dict):
        return
    model = body.get("model")
    if (
        isinstance(model, str)
        and 0 < len(model) <= 256
        and model.isascii()
        and model.isprintable()
        and " " not in model
    ):
        body["model"] = name


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS])
def test_fuzz(fuzz_gateway: GatewayProcess, health: HealthWatch, method: str, path: str, mode: GenerationMode) -> None:
    op = SCHEMA[path][method]
    label = f"{method} {path}"
    models = EMBEDDING_MODELS if path == "/v1/embeddings" else MODELS
    seen: dict[int, int] = {}
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES.get(label, 3) * SCALE,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode), model=st.sampled_from((*models, None)))
    def run(case: schemathesis.Case, model: str | None) -> None:
        if model is not None:
            _real_model(case, model)
        r = case.call(
            base_url=fuzz_gateway.url, session=session, headers={"Authorization": f"Bearer {FUZZ_KEY}"}, timeout=60
        )
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        what = f"{label} {mode.value}: {case.as_curl_command()[:2000]}"
        ctype = (r.headers.get("content-type") or [""])[0]
        assert_acceptable(Answer(r.status_code, ctype, r.content), what)
        case.validate_response(r, checks=CHECKS)

    pid = fuzz_gateway.proc.pid
    before = rss_kib(pid)
    with health.window() as w:
        run()
    after = rss_kib(pid)
    assert after - before < 128 * 1024, f"RSS grew from {before // 1024} to {after // 1024} MiB"
    w.assert_responsive()
    if mode is GenerationMode.NEGATIVE:
        assert set(seen) <= {400, 401, 404, 413, 415}, seen
    if mode is GenerationMode.POSITIVE and method == "POST":
        assert seen.get(200, 0) > 0, f"no valid request reached an upstream: {seen}"


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(DOCUMENT)
    return doc


def test_the_document_names_the_edge_limits() -> None:
    """The limits in the document are the gateway's own constants, not copies that can drift."""
    from relaycast import schema

    schemas = _document()["components"]["schemas"]
    assert schemas["ModelName"]["maxLength"] == schema.MAX_MODEL_NAME
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert chat["models"]["anyOf"][0]["maxItems"] == schema.MAX_FALLBACKS + 1
    assert set(schemas["Message"]["properties"]["role"]["enum"]) == schema.ROLES
    assert chat["user"]["anyOf"][0]["maxLength"] == schema.MAX_ID_LEN
