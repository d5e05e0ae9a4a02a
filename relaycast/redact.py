"""The one place secrets are scrubbed before text leaves the process (responses, logs, records, exports).

Known secrets (provider keys, credential headers, URL passwords and tokens from the config) are replaced exactly;
anything shaped like a provider key or a bearer token is masked by pattern, so a key echoed back by an upstream is
caught too.

Scrubbing often runs on text that is already encoded (a JSON body, a log line, a URL), where a secret holding `"`,
`\\`, a control character, non-ASCII or `%` no longer appears as itself. So each secret is registered in every form
an encoder relaycast or an upstream uses would give it: JSON-escaped (non-ASCII kept, or as `\\uXXXX` in either
case), JSON-escaped twice (a raw upstream body inside relaycast's own JSON), as a log line escapes it, and
percent-encoded; a percent-encoded secret (a URL password) is registered decoded too.

Which config values are secrets is decided here as well: headers by name (`secret_name`, `header_secrets`) and
URLs by their password and credential-named query parameters (`url_secrets`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import AnyStr
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

MASK = "[REDACTED]"
MIN_LENGTH = 4  # shorter values are never masked: they would hide ordinary words and numbers
MIN_PART_LENGTH = 8  # a part of a credential header (one cookie's value) is registered alone from this length
# Shapes of secrets masked wherever they appear, each found by a literal first (a substring search runs at memory
# speed, where a regex tried at every position of a multi-MiB prompt costs about 30 ms per MiB, holding the GIL).
_SHAPES = (
    ("sk-", re.compile(r"sk-(?:ant-|proj-|or-v1-)?[A-Za-z0-9_\-]{8,}"), 0),  # OpenAI / Anthropic / OpenRouter keys
    ("gsk_", re.compile(r"gsk_[A-Za-z0-9]{16,}"), 0),  # Groq
    ("earer ", re.compile(r"(?<=[Bb])earer ([A-Za-z0-9._\-+/=]{8,})"), 1),  # bearer tokens (the token only)
)
# Header and query-parameter names whose values are credentials, whatever their length.
_SECRET_NAME = re.compile(r"auth|key|token|secret|passw|pwd|cookie|session|signature|credential|^sig$", re.IGNORECASE)
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-f]{4})")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def secret_name(name: str) -> bool:
    """Is a header or query parameter with this name a credential? (authorization, proxy-authorization,
    api-key, x-api-key, dd-api-key, x-auth-token, cookie, set-cookie, anything naming a key, token, secret,
    password, session or signature.)"""
    return _SECRET_NAME.search(name) is not None


def header_secrets(name: str, value: str) -> tuple[str, ...]:
    """The secrets a credential header holds: its whole value, the credential after an auth scheme
    (`Bearer abc` -> `abc`) and each cookie's value. Nothing for a header whose name is not a credential's."""
    if not secret_name(name) or not value:
        return ()
    out = [value]
    scheme, sep, credential = value.strip().partition(" ")
    if sep and scheme.isalpha() and credential.strip():
        out.append(credential.strip())
    if "cookie" in name.lower():
        for part in value.split(";"):
            _, eq, v = part.partition("=")
            if eq and len(v.strip()) >= MIN_PART_LENGTH:
                out.append(v.strip())
    return tuple(out)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The secrets a URL holds: its password (as written, so percent-encoded) and the values of its
    credential-named query parameters (`?token=`, `?api-key=`, `?sig=`)."""
    if not url:
        return ()
    try:
        u = urlsplit(url)
        password = u.password
    except ValueError:
        return ()
    out = [password] if password else []
    out.extend(v for k, v in parse_qsl(u.query, keep_blank_values=False) if secret_name(k))
    return tuple(out)


def encoded_forms(secret: str) -> set[str]:
    """`secret` as every encoder on its way out may have written it (see the module's docstring)."""
    plain = {secret}
    if "%" in secret:
        plain.add(unquote(secret))
    forms = set(plain)
    for s in plain:
        j = json.dumps(s, ensure_ascii=False)[1:-1]
        ja = json.dumps(s)[1:-1]
        forms.update((j, ja, _UNICODE_ESCAPE.sub(lambda m: "\\u" + m.group(1).upper(), ja)))
        forms.update(json.dumps(x, ensure_ascii=False)[1:-1] for x in (j, ja))
        if "/" in s:
            forms.add(j.replace("/", "\\/"))
        log = s.replace("\r", "\\r").replace("\n", "\\n")
        forms.update((log, log.replace('"', '\\"')))
        for p in (quote(s, safe=""), quote(s), quote_plus(s, safe="")):
            forms.update((p, _PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), p)))
    return forms


class Redactor:
    __slots__ = ("_exact", "_exact_bytes")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._exact: tuple[str, ...] = ()
        self._exact_bytes: tuple[bytes, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these too from now on (a destination saved from the dashboard brings its own keys). Secrets are
        only ever added: one that was in use may still be in a queued payload."""
        forms: set[str] = set(self._exact)
        for s in secrets:
            if s and len(s) >= MIN_LENGTH:
                forms.update(f for f in encoded_forms(s) if len(f) >= MIN_LENGTH)
        if len(forms) == len(self._exact):
            return
        # Longest first, so a secret (or form) containing another is replaced whole.
        self._exact = tuple(sorted(forms, key=len, reverse=True))
        self._exact_bytes = tuple(dict.fromkeys(f.encode() for f in self._exact))

    def scrub(self, text: str) -> str:
        for s in self._exact:
            if s in text:
                parts: list[str] = []
                start = 0
                for i, j in _spans(text, s, "\\", "u"):
                    parts.extend((text[start:i], MASK))
                    start = j
                text = "".join((*parts, text[start:]))
        return _mask_shapes(text)

    def scrub_known(self, data: bytes) -> bytes:
        """Mask the known secrets only, for exported payloads: a fast substring search, and a mask of the same
        length, so length-framed encodings (OTLP protobuf) stay valid."""
        for b in self._exact_bytes:
            if b in data:
                masked = bytearray(data)
                for i, j in _spans(data, b, b"\\", b"u"):
                    masked[i:j] = b"*" * (j - i)
                data = bytes(masked)
        return data

    def scrub_bytes(self, data: bytes) -> bytes:
        return self.scrub(data.decode("utf-8", "replace")).encode()


def _mask_shapes(text: str) -> str:
    """Mask every key- or token-shaped run (`_SHAPES`), in time linear in the text."""
    spans: list[tuple[int, int]] = []
    for literal, shape, group in _SHAPES:
        pos = 0
        while (i := text.find(literal, pos)) != -1:
            m = shape.match(text, i)
            if m is None:
                pos = i + 1
                continue
            spans.append(m.span(group))
            pos = m.start(group) if group else m.end()  # a token may end in the next "bearer "
    if not spans:
        return text
    spans.sort()
    parts: list[str] = []
    start = 0
    for i, j in spans:
        if j <= start:
            continue
        parts.extend((text[start : max(i, start)], MASK))
        start = j
    parts.append(text[start:])
    return "".join(parts)


def _spans(text: AnyStr, form: AnyStr, backslash: AnyStr, u: AnyStr) -> list[tuple[int, int]]:
    """Where `form` occurs in `text`, each span widened so a mask never leaves part of an escape sequence behind
    (the `n` of a `\\n` or the digits of a `\\u00e9` beginning the match, a `\\uXXXX` cut by its end, a last
    backslash escaping what follows): an encoded text stays valid once masked."""

    def escapes(p: int) -> bool:  # is text[p] a backslash that begins an escape?
        k = p
        while k > 0 and text[k - 1 : k] == backslash:
            k -= 1
        return text[p : p + 1] == backslash and (p - k) % 2 == 0

    def surrogate(p: int) -> int:  # the \uXXXX escape at p: 1 a high surrogate, 2 a low one, 0 neither
        if not escapes(p) or text[p + 1 : p + 2] != u:
            return 0
        try:
            v = int(text[p + 2 : p + 6], 16)
        except ValueError:
            return 0
        return 1 if 0xD800 <= v <= 0xDBFF else 2 if 0xDC00 <= v <= 0xDFFF else 0

    spans = []
    n, pos = len(text), 0
    while (i := text.find(form, pos)) != -1:
        j = i + len(form)
        for p in range(i - 1, max(-1, i - 6), -1):  # an escape the match begins inside of
            if escapes(p) and (p == i - 1 or text[p + 1 : p + 2] == u):
                i = p
                break
        for p in range(max(i, j - 6), j):  # an escape the match ends inside of
            if escapes(p):
                j = max(j, min(n, p + (6 if text[p + 1 : p + 2] == u else 2)))
        if i >= 6 and surrogate(i) == 2 and surrogate(i - 6) == 1:  # never half of a \ud83d\ude00 pair
            i -= 6
        if j - 6 >= i and surrogate(j - 6) == 1 and surrogate(j) == 2:
            j += 6
        spans.append((i, j))
        pos = j
    return spans


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def proxy_secrets() -> tuple[str, ...]:
    """The credentials of an egress proxy the environment names (destinations and notifiers go through it)."""
    return tuple(s for name in PROXY_VARIABLES for s in url_secrets(os.environ.get(name)))
