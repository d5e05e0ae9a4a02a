"""Gateway keys and the admin key. Secrets are held only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac

from relaycast.config import Config
from relaycast.errors import Forbidden, Unauthorized


class Authenticator:
    def __init__(self, config: Config) -> None:
        self._keys = {k.sha256: k.name for k in config.keys}
        self._admin = config.admin_key_sha256
        self.required = bool(self._keys)

    def client(self, headers: dict[bytes, bytes]) -> str | None:
        """The name of the gateway key presented, or None when no keys are configured."""
        if not self._keys:
            return None
        token = _bearer(headers)
        if token is None:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <relaycast key>'.")
        name = self._keys.get(hashlib.sha256(token).hexdigest())
        if name is None:
            raise Unauthorized("Incorrect API key provided.")
        return name

    def admin(self, headers: dict[bytes, bytes]) -> None:
        if self._admin is None:
            raise Forbidden("The admin API is disabled: set 'admin_key' in the config.")
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
