"""The redactor: a secret is masked in whatever encoding it leaves in (JSON once or twice, ASCII-only JSON, a log
line, a URL), masking keeps an encoded text valid (and OTLP's framing, by keeping its length), and the config
registers what is a secret: credential headers by name whatever their length, URL passwords and query tokens."""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import quote, quote_plus

import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from relaycast.config import parse
from relaycast.log import EventLog
from relaycast.monitors.notify import slack_body
from relaycast.redact import MASK, Redactor, header_secrets, secret_name, url_secrets

NASTY = [
    'pk"quoted\\back-5Qz',  # a quote and a backslash: both escaped by JSON
    "line1\nline2\ttab-0123",  # control characters
    "ctl\x01\x1fchars-0123",  # escaped as \u0001 by every JSON encoder
    "dåsh-ünïcødé-€-0123",  # non-ASCII: kept by orjson, \u00e5 with ensure_ascii
    "slash/and+plus&amp=%41",  # what URLs and some JSON encoders escape
    "ends-with-backslash\\",
]


def encodings(secret: str) -> dict[str, str]:
    """`secret` inside a message, as each way out writes it."""
    doc = {"error": {"message": f"the upstream said: {secret} (twice: {secret})"}}
    once = orjson.dumps(doc).decode()
    return {
        "orjson": once,
        "json ascii": json.dumps(doc),
        "json ascii upper-case hex": re.sub(
            r"\\u[0-9a-f]{4}", lambda m: m.group(0).upper().replace("U", "u"), json.dumps(doc)
        ),
        "twice": orjson.dumps({"error": {"message": once}}).decode(),
        "ascii inside orjson": orjson.dumps({"body": json.dumps(doc)}).decode(),
        "percent": "https://x.example/cb?token=" + quote(secret, safe=""),
        "percent plus": "https://x.example/cb?token=" + quote_plus(secret),
    }


def leaks(secret: str) -> list[str]:
    once = [json.dumps(secret)[1:-1], orjson.dumps(secret).decode()[1:-1]]
    return [secret, *once, *(orjson.dumps(x).decode()[1:-1] for x in once), quote(secret, safe=""), quote_plus(secret)]


@pytest.mark.parametrize("secret", NASTY)
def test_a_secret_is_masked_in_every_encoding_it_leaves_in(secret: str) -> None:
    r = Redactor([secret])
    for how, text in encodings(secret).items():
        scrubbed = r.scrub(text)
        known = r.scrub_known(text.encode())
        assert len(known) == len(text.encode()), f"{how}: scrub_known keeps the length (OTLP framing)"
        for out in (scrubbed, known.decode()):
            for leak in leaks(secret):
                assert leak not in out, f"{how}: {leak!r} left in {out!r}"
        if how not in ("percent", "percent plus"):
            json.loads(scrubbed)  # still one valid JSON document
            json.loads(known)
            assert MASK in scrubbed


@pytest.mark.parametrize("secret", NASTY)
def test_a_secret_in_a_log_line_is_masked(secret: str, caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog(Redactor([secret]), "relaycast.test.redact")
    with caplog.at_level(logging.INFO, logger="relaycast.test.redact"):
        log.info("upstream_said", message=f"bad key {secret} given", raw=secret)
    (line,) = [r.getMessage() for r in caplog.records]
    for leak in (secret, secret.replace("\n", "\\n"), secret.replace("\n", "\\n").replace('"', '\\"')):
        assert leak not in line
    assert line.count(MASK) == 2


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(st.characters(blacklist_characters="*", blacklist_categories=("Cs",)), min_size=4, max_size=16),
    before=st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    after=st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)
@example(secret="nice-key", before="\n", after="")
@example(secret="abc\\", before="", after='"x')
@example(secret="e9abcd", before="caf\u00e9", after="")  # begins inside the \\u00e9 of ASCII-only JSON
@example(secret="0000", before="\U00018fb0", after="")  # begins inside the low half of a surrogate pair
@example(secret="abcd", before="", after="\U00018fb0")  # ends next to the high half
def test_masking_keeps_json_valid_and_the_secret_gone(secret: str, before: str, after: str) -> None:
    assume(secret not in MASK)
    r = Redactor([secret])
    doc = {"m": before + secret + after, "n": [secret]}
    for encoded in (orjson.dumps(doc), json.dumps(doc).encode()):  # non-ASCII kept, and as \uXXXX
        known = r.scrub_known(encoded)
        assert len(known) == len(encoded)
        for out in (orjson.loads(known), orjson.loads(r.scrub_bytes(encoded))):
            assert secret not in out["m"] and secret not in out["n"][0]


def test_short_values_are_never_masked() -> None:
    r = Redactor(["abc", "1", ""])
    assert r.scrub("abc 1 x") == "abc 1 x"


def test_credential_headers_are_secrets_by_name_whatever_their_length() -> None:
    for name in ("Authorization", "proxy-authorization", "api-key", "x-api-key", "Cookie", "set-cookie",
                 "x-auth-token", "dd-api-key", "X-Client-Secret", "x-session"):  # fmt: skip
        assert secret_name(name), name
    for name in ("x-team", "anthropic-version", "content-type", "http-referer", "x-title"):
        assert not secret_name(name), name
    assert header_secrets("authorization", "Basic dXNlcg") == ("Basic dXNlcg", "dXNlcg")
    assert header_secrets("cookie", "sid=abcdef123456; theme=dark") == ("sid=abcdef123456; theme=dark", "abcdef123456")
    assert header_secrets("x-team", "payments") == ()


def test_url_passwords_and_query_tokens_are_secrets() -> None:
    assert url_secrets("redis://:p%40ss-w0rd@127.0.0.1:6379/0") == ("p%40ss-w0rd",)
    assert url_secrets("https://u:pw1234@hooks.example/x?token=t0k3n&page=2&sig=abc%2Fdef") == (
        "pw1234",
        "t0k3n",
        "abc/def",
    )
    assert url_secrets("https://hooks.example/x?page=2") == ()
    assert url_secrets("http://[::1") == ()  # unparseable: nothing, and no error


CONFIG = """
redis_url: redis://:p%40ss-w0rd@127.0.0.1:6379/0
providers:
  - name: openai
    api_key: sk-test-0000000000
    headers: {x-api-key: ab12, cookie: "sid=abcdef123456; theme=dark", x-team: ml-platform-team}
  - name: azure
    kind: openai_compatible
    base_url: https://az.example/v1?api-key=az-query-key
broadcast:
  destinations:
    - {name: otel, kind: otlp, endpoint: "https://otel.example/v1/traces",
       headers: {authorization: "Basic qwerty", x-honeycomb-team: hc-0123456789, x-env: prod}}
    - {name: hook, kind: webhook, url: "https://hooks.example/in?token=hook-tok3n", secret: whsec-abc}
monitors:
  notify:
    - {name: ops, kind: webhook, url: "https://ops:n0tify-pw@ops.example/hook?access_token=ops-t0ken"}
  rules: []
"""


def test_the_config_registers_every_credential_it_holds() -> None:
    r = Redactor(parse(CONFIG, env={}).secrets())
    masked = [
        "ab12",  # a provider credential header of 4 characters
        "sid=abcdef123456; theme=dark",
        "abcdef123456",  # one cookie's value, alone
        "az-query-key",  # a key in a base_url's query
        "Basic qwerty",
        "qwerty",  # the credential after the scheme
        "hc-0123456789",  # an OTLP header of 8+ characters, whatever its name
        "hook-tok3n",
        "n0tify-pw",
        "ops-t0ken",
        "p%40ss-w0rd",  # a URL password as written
        "p@ss-w0rd",  # ... and decoded
    ]
    for value in masked:
        assert r.scrub(f"<{value}>") == f"<{MASK}>", value
    for value in ("dark", "ml-platform-team", "prod", "theme"):
        assert r.scrub(f"<{value}>") == f"<{value}>", f"{value} is not a secret"


def test_slack_text_cannot_mention_link_or_break_out_of_code() -> None:
    event = {
        "event": "alert",
        "rule": "spend`<!here>",
        "scope": "user=<!channel>",
        "message": "spend by <https://evil.example|click> & co grew",
        "details": {"top_contributors": [{"dimension": "user", "value": "<@U123>`x", "growth_usd": 2.5}]},
    }
    text = slack_body(event)["text"]
    for raw in ("<!here>", "<!channel>", "<https://evil.example|click>", "<@U123>", "& co"):
        assert raw not in text
    assert "&lt;!channel&gt;" in text and "&amp; co" in text
    assert "`spend'&lt;!here&gt;`" in text and "`&lt;@U123&gt;'x`" in text


def test_slack_text_is_scrubbed_before_it_is_escaped() -> None:
    secret = "a<b>&c-0123"
    event = {"event": "alert", "rule": "r", "scope": None, "message": f"leaked {secret}", "details": {}}
    text = slack_body(event, Redactor([secret]).scrub)["text"]
    assert "a&lt;b&gt;&amp;c-0123" not in text and MASK in text
