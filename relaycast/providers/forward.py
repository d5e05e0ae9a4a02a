"""Client headers a provider passes on: `forward_headers:` in a provider's config, checked once at load, and the
pick made for each request.

Only the names listed are sent, and only to that provider. A list holds at most MAX_NAMES names; each value a
client sends for one of them is at most MAX_VALUE bytes (a longer one is refused with a 400, not cut). Names that
would let a client change how the request is framed or routed (hop-by-hop headers, Host, Content-Length, ...) or
carry a credential (Authorization, X-Api-Key, Cookie, anything `redact.secret_name` calls one) are refused when
the config loads: the client's gateway key must never reach an upstream, and the provider's key is the gateway's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from relaycast import errors
from relaycast.config_reader import ConfigError, Reader
from relaycast.redact import secret_name

MAX_NAMES = 16
MAX_VALUE = 1024  # bytes of one forwarded value
MAX_NAME = 64
# Hop-by-hop headers (RFC 9110 7.6.1; and any `proxy-*`) and those that frame, encode or address the request the
# gateway makes itself.
REFUSED = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "accept",
        "accept-encoding",
        "expect",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110 5.1)

Forward = tuple[tuple[bytes, str], ...]  # (the name as the client's header map holds it, the name sent)


def parse_forward_headers(r: Reader, raw: Any, at: str) -> tuple[str, ...]:
    """`forward_headers:` as lower-case names, refusing what must not be forwarded with a message that says why."""
    if raw is None:
        return ()
    items = r.sequence(raw, at)
    if len(items) > MAX_NAMES:
        raise ConfigError(at, f"lists {len(items)} headers; at most {MAX_NAMES} may be forwarded")
    out: list[str] = []
    for j, item in enumerate(items):
        where = f"{at}[{j}]"
        name = r.string(item, where).strip().lower()
        if not name or len(name) > MAX_NAME or not _TOKEN.fullmatch(name):
            raise ConfigError(where, f"'{name[:MAX_NAME]}' is not a header name (at most {MAX_NAME} characters)")
        if name in REFUSED or name.startswith("proxy-"):
            raise ConfigError(
                where,
                f"'{name}' cannot be forwarded: the gateway sets it itself for each upstream request "
                "(hop-by-hop, framing or addressing header)",
            )
        if secret_name(name):
            raise ConfigError(
                where,
                f"'{name}' cannot be forwarded: it is a credential header, and a client's credentials must not "
                "reach an upstream (set the provider's own key with api_key or headers)",
            )
        if name in out:
            raise ConfigError(where, f"'{name}' is listed twice")
        out.append(name)
    return tuple(out)


def forward_table(names: tuple[str, ...]) -> Forward:
    """The names as `merged` looks them up, computed once per provider."""
    return tuple((n.encode("latin-1"), n) for n in names)


def check(forward: Forward, client: Mapping[bytes, bytes]) -> None:
    """Refuse a request whose value for a header some provider forwards is too long, before any attempt: whether
    it is refused must not depend on which of a route's targets the request reaches. `forward`: every provider's
    names (`forward_table` of their union)."""
    for key, name in forward:
        value = client.get(key)
        if value is not None and len(value) > MAX_VALUE:
            raise errors.InvalidRequest(
                f"Header '{name}' is {len(value)} bytes; the gateway forwards at most {MAX_VALUE} bytes of it.",
                param=name,
            )


def merged(headers: dict[str, str], forward: Forward, client: Mapping[bytes, bytes]) -> dict[str, str]:
    """`headers` with the listed headers the client sent, as the upstream gets them (`headers` itself when the
    client sent none of them). Their sizes were checked once for the request (`check`), before any attempt."""
    extra = {name: value.decode("latin-1") for key, name in forward if (value := client.get(key)) is not None}
    return {**headers, **extra} if extra else headers
