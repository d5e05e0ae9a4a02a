"""Gateway keys and the admin key. Secrets are held only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from relaycast.errors import Forbidden, StoreNotReady, Unauthorized
from relaycast.keys.policy import KeyPolicy
from relaycast.keys.registry import KeyRegistry


class Authenticator:
    def __init__(self, admin_key_sha256: str | None, registry: KeyRegistry) -> None:
        self.registry = registry
        self._admin = admin_key_sha256
        # The dashboard's session check: a logged-in page may call the admin API with its cookie alone (an
        # HttpOnly, SameSite=Strict cookie; cross-site requests are refused by the Origin check, and bodies must
        # be JSON, which no HTML form sends).
        self.session: Callable[[dict[bytes, bytes]], bool] | None = None

    @property
    def required(self) -> bool:
        return self.registry.required

    def client(self, headers: dict[bytes, bytes], now_ms: int | None = None) -> KeyPolicy | None:
        """The key presented and what it may do; None when the gateway has no keys at all (open)."""
        if not self.registry.required:
            return None
        token = _bearer(headers)
        policy = self.registry.lookup(hashlib.sha256(token).hexdigest()) if token is not None else None
        if policy is None and self.registry.unloaded:
            raise StoreNotReady(
                "The gateway's keys cannot be read from the store yet, so this request cannot be checked: try again "
                "shortly."
            )
        if token is None:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <relaycast key>'.")
        if policy is None:
            raise Unauthorized("Incorrect API key provided.")
        if policy.revoked_ms is not None:
            raise Unauthorized(f"The API key '{policy.name}' has been revoked.")
        if (
            policy.expires_ms is not None
            and (now_ms if now_ms is not None else time.time() * 1000) >= policy.expires_ms
        ):
            raise Unauthorized(f"The API key '{policy.name}' has expired.")
        return policy

    def admin(self, headers: dict[bytes, bytes]) -> None:
        if self._admin is None:
            raise Forbidden("The admin API is disabled: set 'admin_key' in the config.")
        if (
            self.session is not None
            and b"authorization" not in headers
            and b"x-api-key" not in headers
            and self.session(headers)
        ):
            return
        token = _bearer(headers)
        if token is None:
            raise Unauthorized("Missing admin key: send 'Authorization: Bearer <admin key>'.")
        if not hmac.compare_digest(hashlib.sha256(token).hexdigest(), self._admin):
            raise Unauthorized("Incorrect admin key provided.")


def _bearer(headers: dict[bytes, bytes]) -> bytes | None:
    v = headers.get(b"authorization")
    if not v:
        v = headers.get(b"x-api-key")
        return v.strip() or None if v else None
    scheme, _, token = v.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()
