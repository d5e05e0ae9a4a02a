"""The keys admin API (the admin key, or a dashboard session):

POST /admin/keys                  {"name", "owner", "models", "user", "feature", "pin", "tags", "rpm", "tpm",
                                   "budget_day_usd", "budget_month_usd", "expires_in_s"}  -> 201, the secret once
GET  /admin/keys                  every key, without secrets (a prefix tells them apart), and `access`: whether
                                  requests need a key, why, and how many keys work
POST /admin/keys/<name>/revoke    the key stops working on every replica within a second
POST /admin/keys/<name>/rotate    a new secret; the old one stops working
DELETE /admin/keys/<name>         the key's row goes: it stops working on every replica within a second

Revoking or deleting a key answers with `access` too, and a `note` when no live key remains: whether requests
without a key are still refused (and why) or the gateway is open again.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from relaycast import errors
from relaycast.asgi import Receive, Request, send_bytes
from relaycast.keys.policy import LIMIT_FIELDS, KeyPolicy, Limits
from relaycast.schema import read_json
from relaycast.server.services import Services
from relaycast.store import keys as key_store
from relaycast.store.db import store_errors

PREFIX = "/admin/keys"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FIELDS = {"name", "owner", "models", "user", "feature", "pin", "tags", "expires_in_s", *LIMIT_FIELDS}


class KeysApi:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def handle(self, r: Request) -> None:
        method, path = r.method, r.path
        if self.s.reader is None:
            raise errors.StoreNotReady("Virtual keys live in the store, and the store is disabled.", disabled=True)
        rest = path[len(PREFIX) :].strip("/")
        with store_errors(self.s.redactor.scrub, "The key store cannot be reached"):
            if rest == "" and method == "GET":
                now_ms = int(self.s.clock() * 1000)
                body: Any = {"keys": await self.s.reader.run(key_store.listing, now_ms), "access": self._access()}
                status = 200
            elif rest == "" and method == "POST":
                status, body = 201, await self._create(r.receive)
            elif rest.count("/") == 1 and method == "POST" and rest.split("/")[1] in ("revoke", "rotate"):
                name, action = rest.split("/")
                status, body = 200, await self._change(name, action)
            elif rest and "/" not in rest and method == "DELETE":
                status, body = 200, await self._delete(rest)
            else:
                raise errors.NotFoundRoute(f"Unknown request URL: {method} {path}.")
        await self.s.keys.refresh()  # this replica at once; the others within a second
        if isinstance(body, dict) and (body.get("revoked") or body.get("deleted")):
            body["access"] = self._access()
            if body["access"]["live_keys"] == 0:
                body["note"] = _no_live_keys_note(body["access"])
        await send_bytes(r.send, status, orjson.dumps(body), [*r.id_headers, (b"cache-control", b"no-store")])

    async def _create(self, receive: Receive) -> dict[str, Any]:
        spec = await read_json(receive, 64 * 1024)
        unknown = set(spec) - _FIELDS
        if unknown:
            raise errors.InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise errors.InvalidRequest("'name' must be 1-64 letters, digits, '_', '.' or '-'", param="name")
        if any(k.name == name for k in self.s.config.keys):
            raise errors.InvalidRequest(f"'{name}' is a key of the config file", param="name")
        models = spec.get("models")
        if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)):
            raise errors.InvalidRequest(
                "'models' must be a list of model names or patterns (e.g. \"openai/*\")", param="models"
            )
        tags = spec.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise errors.InvalidRequest("'tags' must be an object of strings", param="tags")
        for f in ("owner", "user", "feature"):
            if spec.get(f) is not None and not isinstance(spec[f], str):
                raise errors.InvalidRequest(f"'{f}' must be a string", param=f)
        pin = spec.get("pin", False)
        if not isinstance(pin, bool):
            raise errors.InvalidRequest("'pin' must be true or false", param="pin")
        if pin and not spec.get("user") and not spec.get("feature"):
            raise errors.InvalidRequest("'pin' pins the key's user and feature: give 'user' or 'feature'", param="pin")
        try:
            limits = Limits.parse(spec, "key")
        except ValueError as e:
            raise errors.InvalidRequest(
                str(e).removeprefix("key."), param=str(e).split(":")[0].removeprefix("key.")
            ) from None
        now_ms = int(self.s.clock() * 1000)
        expires = spec.get("expires_in_s")
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires <= 0):
            raise errors.InvalidRequest("'expires_in_s' must be a number of seconds above 0", param="expires_in_s")
        policy = KeyPolicy(
            name=name,
            source="store",
            owner=spec.get("owner"),
            models=tuple(models) if models is not None else None,
            user=spec.get("user"),
            feature=spec.get("feature"),
            pin=pin,
            tags=tuple(tags.items()),
            limits=limits,
            expires_ms=now_ms + int(expires * 1000) if expires else None,
        )
        assert self.s.reader is not None
        try:
            secret = await self.s.reader.run(key_store.create, policy, now_ms)
        except key_store.KeyExists:
            raise errors.InvalidRequest(
                f"a key named '{name}' exists already (rotate it, or revoke it and pick another name)", param="name"
            ) from None
        self.s.log.info("key_created", key=name, prefix=secret[:8])
        listed = next(k for k in await self.s.reader.run(key_store.listing) if k["name"] == name)
        return {"key": listed, "secret": secret, "note": "Store this secret now: relaycast keeps only its hash."}

    def _access(self) -> dict[str, Any]:
        reg = self.s.keys
        return {
            "required": reg.required,
            "because": reg.required_because(),
            "live_keys": reg.live(int(self.s.clock() * 1000)),
        }

    async def _delete(self, name: str) -> dict[str, Any]:
        assert self.s.reader is not None
        if not await self.s.reader.run(key_store.delete, name, int(self.s.clock() * 1000)):
            if any(k.name == name for k in self.s.config.keys):
                raise errors.NotFoundRoute(f"'{name[:64]}' is a key of the config file: remove it there.")
            raise errors.NotFoundRoute(f"No key named '{name[:64]}'.")
        self.s.log.info("key_deleted", key=name)
        return {"name": name, "deleted": True}

    async def _change(self, name: str, action: str) -> dict[str, Any]:
        assert self.s.reader is not None
        now_ms = int(self.s.clock() * 1000)
        if action == "revoke":
            if not await self.s.reader.run(key_store.revoke, name, now_ms):
                raise errors.NotFoundRoute(f"No active key named '{name[:64]}'.")
            self.s.log.info("key_revoked", key=name)
            return {"name": name, "revoked": True}
        secret = await self.s.reader.run(key_store.rotate, name, now_ms)
        if secret is None:
            raise errors.NotFoundRoute(f"No active key named '{name[:64]}'.")
        self.s.log.info("key_rotated", key=name, prefix=secret[:8])
        return {"name": name, "secret": secret, "note": "The previous secret no longer works. Store this one now."}


def _no_live_keys_note(access: dict[str, Any]) -> str:
    if access["required"]:
        return f"No live keys remain: requests without a key are refused ({access['because']})."
    return "No keys remain: the gateway is open again, and serves requests without a key."
