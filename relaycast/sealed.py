"""Secrets at rest: what the dashboard, the admin API and the CLI save in the store (a broadcast destination's API
key, ...) is sealed with AES-256-GCM before it is written, and opened only where it is used.

The key comes from `RELAYCAST_SECRET_KEY` (any string of at least 32 characters; replicas that share a store must
share it), else from a key file: `RELAYCAST_SECRET_KEY_FILE`, or `.relaycast/secret.key` beside the config file,
created 0600 on first use with 32 random bytes. A sealed value is `v1.<key id>.<base64url(nonce | ciphertext)>`:
the key id (8 hex characters of the key's SHA-256) tells a value sealed with another key apart from a damaged one,
and the value's owner (a destination's name) is bound to it as associated data, so a sealed value copied onto
another row does not open.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from relaycast.private_files import open_private, private_dirs

ENV_KEY = "RELAYCAST_SECRET_KEY"
ENV_FILE = "RELAYCAST_SECRET_KEY_FILE"
DEFAULT_FILE = ".relaycast/secret.key"
MIN_KEY_CHARS = 32
_NONCE = 12


class SealError(Exception):
    """A sealed value that cannot be opened: sealed with another key, damaged, or not a sealed value."""


class Sealer:
    """Seals and opens short secrets with one key."""

    __slots__ = ("_aead", "key_id", "source")

    def __init__(self, key: bytes, source: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        material = hashlib.sha256(b"relaycast-sealed-v1|" + key).digest()
        self._aead = AESGCM(material)
        self.key_id = hashlib.sha256(material).hexdigest()[:8]
        self.source = source  # where the key came from, for status lines (never the key)

    def seal(self, plaintext: str, owner: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), owner.encode())
        return f"v1.{self.key_id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, owner: str) -> str:
        from cryptography.exceptions import InvalidTag

        version, _, rest = value.partition(".")
        key_id, _, body = rest.partition(".")
        if version != "v1" or not body:
            raise SealError("not a sealed value")
        if key_id != self.key_id:
            raise SealError(
                f"sealed with another key (key id {key_id[:8]}; this gateway's is {self.key_id}): set the same "
                f"{ENV_KEY} or key file on every replica"
            )
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], owner.encode()).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise SealError("damaged, or sealed for another owner") from None


def load_sealer(env: Mapping[str, str], base: Path) -> Sealer:
    """The gateway's sealer: from the environment's key, else from its key file (created on first use)."""
    given = env.get(ENV_KEY, "")
    if given:
        if len(given) < MIN_KEY_CHARS:
            raise ValueError(f"{ENV_KEY} must be at least {MIN_KEY_CHARS} characters, got {len(given)}")
        return Sealer(given.encode(), f"${ENV_KEY}")
    path = Path(env.get(ENV_FILE) or base / DEFAULT_FILE)
    return Sealer(_key_file(path), str(path))


def _key_file(path: Path) -> bytes:
    """The key file's bytes; a new one (0600, 32 random bytes) when there is none."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = _new_key_file(path)
    key = key.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"the secret key file {path} holds {len(key)} bytes, fewer than {MIN_KEY_CHARS}")
    return key


def _new_key_file(path: Path) -> bytes:
    """Write a new key to a private file beside `path`, then hard-link it into place: the key file appears whole or
    not at all, so no process ever reads it half written. When processes start at once, the first link wins and the
    others read its key."""
    private_dirs(path.parent)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n"
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = open_private(draft, os.O_WRONLY | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        os.link(draft, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        draft.unlink(missing_ok=True)
    return key
