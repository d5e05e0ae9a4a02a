"""Broadcast settings in the admin API (the admin key or a dashboard session), behind the Settings > Broadcast page
and `relaycast broadcast`:

GET    /admin/broadcast/kinds                        every destination kind's form: fields, defaults, secrets
GET    /admin/broadcast/destinations                 every destination, where it comes from, its live status
PUT    /admin/broadcast/destinations/<name>          {"kind", "settings", "save_anyway", "create"}: tested, saved
DELETE /admin/broadcast/destinations/<name>          a saved destination (the config's are read-only)
POST   /admin/broadcast/try                          {"kind", "name"?, "settings"}: Test Connection, nothing saved
PUT    /admin/broadcast/enabled                      {"enabled": true|false}: the saved destinations on or off

A destination is saved only when its Test Connection passes, unless `save_anyway` says to (a backend that is down
on purpose); a failed test answers 422 `test_failed` with what failed, and nothing is saved. Secret settings are
sealed before they reach the store and never come back: the listing says which are set (`secrets_set`); a PUT that
leaves one out keeps the saved value. Saved destinations run on every replica within seconds (`telemetry.saved`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from relaycast import errors
from relaycast.asgi import Request, send_bytes
from relaycast.redact import Redactor
from relaycast.schema import read_json
from relaycast.sealed import Sealer, SealError, load_sealer
from relaycast.server.services import Services
from relaycast.store import destinations as table
from relaycast.store.db import store_errors
from relaycast.telemetry import forms, saved
from relaycast.telemetry.settings import DestinationConfig

if TYPE_CHECKING:
    from relaycast.telemetry.exporters.base import TestResult

PREFIX = "/admin/broadcast/"
MAX_BODY = 64 * 1024
TEST_TIMEOUT_S = 15.0


class TestFailed(errors.GatewayError):
    """Test Connection failed, so the destination was not saved."""

    status_code: ClassVar[int] = 422
    error_class: ClassVar[str] = "test_failed"
    openai_type: ClassVar[str] = "invalid_request_error"


class Conflict(errors.GatewayError):
    status_code: ClassVar[int] = 409
    error_class: ClassVar[str] = "conflict"
    openai_type: ClassVar[str] = "invalid_request_error"


class BroadcastApi:
    def __init__(self, services: Services) -> None:
        self.s = services
        self._sealer: Sealer | None = None
        base = services.config.source
        self._base = Path(base).parent if base else Path(".")

    async def handle(self, r: Request) -> None:
        self.s.auth.admin(r.headers)
        rest = r.path[len(PREFIX) :]
        method = r.method
        with store_errors(self.s.redactor.scrub):
            if rest == "kinds" and method == "GET":
                body: Any = {"kinds": forms.catalog()}
            elif rest == "destinations" and method == "GET":
                body = await self._listing()
            elif rest.startswith("destinations/") and rest.count("/") == 1 and method in ("PUT", "DELETE"):
                name = rest.split("/", 1)[1]
                body = await (self._save(r, name) if method == "PUT" else self._delete(name))
            elif rest == "try" and method == "POST":
                body = await self._try(r)
            elif rest == "enabled" and method == "PUT":
                body = await self._toggle(r)
            else:
                raise errors.NotFoundRoute(f"Unknown request URL: {method} {r.path[:200]}.")
        payload = self.s.redactor.scrub_bytes(orjson.dumps(body))
        await send_bytes(r.send, 200, payload, [*r.id_headers, (b"cache-control", b"no-store")])

    # --- reading ------------------------------------------------------------------------------

    async def _listing(self) -> dict[str, Any]:
        # The destinations' counters and the sync are the telemetry process's: at saturation, the last of each
        # this worker was given (`Services.view`), so that the page answers in time.
        (destinations, live_age), (sync, sync_age) = await asyncio.gather(
            self.s.view("broadcast"), self.s.view("broadcast_saved")
        )
        live = {d["name"]: d for d in destinations or []}
        out: list[dict[str, Any]] = []
        for d in self.s.config.broadcast.destinations if self.s.config.broadcast else ():
            out.append(
                {
                    "name": d.name,
                    "kind": d.kind,
                    "title": forms.title(d.kind),
                    "source": d.source,
                    "editable": False,
                    "enabled": d.enabled,
                    "status": live.get(d.name),
                }
            )
        rows: list[table.Row] = []
        enabled = True
        if self.s.reader is not None:
            enabled, rows = await self.s.reader.run(table.state)
        problems = (sync or {}).get("problems", {})
        for row in rows:
            hidden = self._hidden(row)
            secret = forms.secret_names(row.kind)
            out.append(
                {
                    "name": row.name,
                    "kind": row.kind,
                    "title": forms.title(row.kind),
                    "source": saved.SOURCE,
                    "editable": True,
                    "enabled": row.settings.get("enabled", True) is not False,
                    "settings": saved.shown(row.kind, {**row.settings, **hidden}),
                    "secrets_set": sorted(k for k in hidden if k in secret),
                    "created_ms": row.created_ms,
                    "updated_ms": row.updated_ms,
                    "last_test": {"ok": row.test_ok, "message": row.test_message, "at_ms": row.tested_ms}
                    if row.tested_ms is not None
                    else None,
                    "problem": problems.get(row.name),
                    "status": live.get(row.name),
                }
            )
        return {
            "enabled": enabled,
            "store": self.s.reader is not None,
            "sync": sync,
            "destinations": out,
            "view_age_s": max(live_age, sync_age),
        }

    def _hidden(self, row: table.Row) -> dict[str, Any]:
        """A saved row's sealed settings, opened (only to say which are set and to show URLs masked)."""
        if not row.sealed:
            return {}
        try:
            found = orjson.loads(self.sealer().open(row.sealed, row.name))
        except (SealError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    # --- changing -----------------------------------------------------------------------------

    def sealer(self) -> Sealer:
        if self._sealer is None:
            try:
                self._sealer = load_sealer(os.environ, self._base)
            except (ValueError, OSError) as e:
                raise errors.Forbidden(
                    f"Secrets cannot be sealed here: {self.s.redactor.scrub(str(e))[:200]}"
                ) from None
        return self._sealer

    def _need_store(self) -> None:
        if self.s.reader is None:
            raise errors.StoreNotReady(
                "Destinations saved from the dashboard live in the store, and the store is disabled: add them to "
                "the config file's broadcast: section instead.",
                disabled=True,
            )

    def _readonly(self, name: str) -> None:
        for d in self.s.config.broadcast.destinations if self.s.config.broadcast else ():
            if d.name == name:
                raise errors.InvalidRequest(
                    f"'{name}' is a destination of the {d.source}: change it there (it is read-only here)",
                    param="name",
                )

    async def _form(self, name: str, body: dict[str, Any]) -> tuple[str, dict[str, Any], DestinationConfig]:
        """The destination a request describes: its kind, its values (saved secrets filling the ones left out),
        and its parsed config."""
        unknown = set(body) - {"kind", "settings", "save_anyway", "name", "create"}
        if unknown:
            raise errors.InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
        kind = body.get("kind")
        try:
            values = dict(saved.check_values(str(kind) if isinstance(kind, str) else "", body.get("settings", {})))
        except saved.Invalid as e:
            raise errors.InvalidRequest(str(e), param=e.field) from None
        assert isinstance(kind, str)
        try:
            values = saved.merge_kept(kind, values, await self._saved_values(name, kind))
            cfg = saved.build(name, kind, values, self._base)
        except saved.Invalid as e:
            raise errors.InvalidRequest(str(e), param=e.field) from None
        return kind, values, cfg

    async def _saved_values(self, name: str, kind: str) -> dict[str, Any]:
        """The saved destination's values (secrets opened) when it exists with this kind."""
        if self.s.reader is None or not saved.NAME.fullmatch(name):
            return {}
        row = await self.s.reader.run(table.find, name)
        if row is None or row.kind != kind:
            return {}
        try:
            return saved.opened(row, self.sealer())
        except SealError:
            return dict(row.settings)

    async def _try(self, r: Request) -> dict[str, Any]:
        body = await read_json(r.receive, MAX_BODY)
        name = body.get("name") or "test"
        if not isinstance(name, str):
            raise errors.InvalidRequest("'name' must be a string", param="name")
        _, _, cfg = await self._form(name, body)
        result = await self._test(cfg)
        return {"name": name, "ok": result.ok, "message": result.message}

    async def _save(self, r: Request, name: str) -> dict[str, Any]:
        self._need_store()
        assert self.s.reader is not None
        self._readonly(name)
        body = await read_json(r.receive, MAX_BODY)
        anyway = body.get("save_anyway", False)
        create = body.get("create", False)
        for flag, value in (("save_anyway", anyway), ("create", create)):
            if not isinstance(value, bool):
                raise errors.InvalidRequest(f"'{flag}' must be true or false", param=flag)
        if create and await self.s.reader.run(table.find, name) is not None:
            raise Conflict(f"A destination named '{name[:64]}' is saved already: edit it, or pick another name.")
        kind, values, cfg = await self._form(name, body)
        result = await self._test(cfg)
        if not result.ok and not anyway:
            raise TestFailed(
                f"Test Connection failed, so '{name}' was not saved: {result.message}",
                param="settings",
            )
        settings_part, secret_part = saved.split(kind, values)
        sealed = saved.seal(self.sealer(), name, secret_part)
        now_ms = int(self.s.clock() * 1000)
        try:
            created = await self.s.reader.run(
                table.save, name, kind, settings_part, sealed, now_ms, (result.ok, result.message)
            )
        except table.TooMany as e:
            raise errors.InvalidRequest(str(e), param="name") from None
        self.s.log.info("broadcast_destination_saved", destination=name, kind=kind, created=created, test_ok=result.ok)
        sync = await self._apply()
        return {
            "name": name,
            "created": created,
            "test": {"ok": result.ok, "message": result.message},
            "applied": sync is not None and name not in (sync.get("problems") or {}),
        }

    async def _delete(self, name: str) -> dict[str, Any]:
        self._need_store()
        assert self.s.reader is not None
        self._readonly(name)
        if not await self.s.reader.run(table.delete, name, int(self.s.clock() * 1000)):
            raise errors.NotFoundRoute(f"No saved destination named '{name[:64]}'.")
        self.s.log.info("broadcast_destination_deleted", destination=name)
        await self._apply()
        return {"name": name, "deleted": True}

    async def _toggle(self, r: Request) -> dict[str, Any]:
        self._need_store()
        assert self.s.reader is not None
        body = await read_json(r.receive, MAX_BODY)
        on = body.get("enabled")
        if not isinstance(on, bool) or set(body) != {"enabled"}:
            raise errors.InvalidRequest('the body must be {"enabled": true} or {"enabled": false}', param="enabled")
        await self.s.reader.run(table.set_enabled, on, int(self.s.clock() * 1000))
        self.s.log.info("broadcast_saved_toggled", enabled=on)
        await self._apply()
        return {"enabled": on}

    async def _apply(self) -> dict[str, Any] | None:
        """This replica applies the change now; the others at their next poll."""
        try:
            result: dict[str, Any] | None = await self.s.telemetry("broadcast_sync")
            return result
        except Exception as e:  # noqa: BLE001 - saved all the same: the next poll applies it
            self.s.log.warning("broadcast_apply_deferred", error=self.s.redactor.scrub(str(e))[:200])
            return None

    async def _test(self, cfg: DestinationConfig) -> TestResult:
        """Test Connection with a destination's settings, from this process (nothing is built in the pipeline)."""
        # The exporters and their HTTP client are loaded by the first test: a worker needs them for nothing else.
        from relaycast.telemetry.exporters import tried
        from relaycast.telemetry.exporters.base import TestResult, http_session

        redactor = Redactor(cfg.secrets())
        try:
            async with http_session() as session:
                result = await asyncio.wait_for(tried(cfg, session), TEST_TIMEOUT_S)
        except TimeoutError:
            result = TestResult(False, f"no answer within {TEST_TIMEOUT_S:.0f} s")
        except Exception as e:  # noqa: BLE001 - a test reports, it does not crash
            result = TestResult(False, f"test failed: {type(e).__name__}: {str(e)[:200]}")
        return TestResult(result.ok, self.s.redactor.scrub(redactor.scrub(result.message)))
