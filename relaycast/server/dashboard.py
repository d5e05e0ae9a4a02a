"""The dashboard: static pages bundled with the package, behind a login with the admin key.

`POST /dashboard/login` with the admin key sets an HttpOnly, SameSite=Strict session cookie: the key never goes in
a URL and is never stored in the browser. The cookie is `<session id>.<expiry>.<HMAC(id.expiry)>`, signed with
`dashboard.session_secret` (shared by replicas) or a random secret (the one `relaycast serve` gives all its
workers: `server.host.SESSION_SECRET_ENV`), and bound to the admin key's hash, so changing the admin key ends every
session.

`POST /dashboard/logout` revokes the session: its id is kept until the session would have expired, in this
process and, with a store, in the store every worker and replica shares (`store/sessions.py`: each polls it every
second), so a logout holds everywhere within a second. The sets are bounded; when one is full, every session issued
so far ends instead (the safe way to forget). Without a store, a logout holds in the gateway that served it: its
workers share it through the host's state process (`server.session_share`).

Failed logins are throttled per client address: after `LOGIN_FAILURES` in `LOGIN_WINDOW_S` seconds, every login
from that address gets a 429 with Retry-After until the window ends. The map is bounded: when it is full, new
addresses share one bucket (so many addresses together still get no more guesses).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import mimetypes
import re
import secrets
import time
from importlib import resources
from urllib.parse import parse_qsl

from relaycast import errors
from relaycast.asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, read_body, send_bytes
from relaycast.log import EventLog
from relaycast.server.session_share import SessionShare

COOKIE = "relaycast_session"
SESSION_S = 12 * 3600
MAX_REVOKED = 10_000  # revoked sessions remembered until they expire
LOGIN_FAILURES = 5  # failed logins allowed per client address per window ...
LOGIN_WINDOW_S = 60.0  # ... of this many seconds, counted from the first failure
MAX_CLIENTS = 10_000  # client addresses whose failures are tracked
POLL_S = 1.0  # how often the store's revoked sessions are checked for changes
_SHARED = "*"  # the bucket of addresses beyond MAX_CLIENTS (no real address is "*")
STATIC_PREFIX = "/dashboard/static/"
_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_SECURITY = [
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it browsers send `Origin: null` with the pages' own form posts (login, logout),
    # which the gateway's Origin check refuses. same-origin still sends nothing to other sites.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
HTML = (b"content-type", b"text/html; charset=utf-8")


def _load_static() -> dict[str, tuple[bytes, bytes]]:
    """name -> (content type, bytes), read once: only files shipped in the package can ever be served."""
    out: dict[str, tuple[bytes, bytes]] = {}
    root = resources.files("relaycast.dashboard").joinpath("static")

    def walk(d: object, prefix: str) -> None:
        for entry in d.iterdir():  # type: ignore[attr-defined]
            name = prefix + entry.name
            if entry.is_dir():
                walk(entry, name + "/")
            elif not entry.name.startswith("."):
                ctype = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype.endswith("javascript"):
                    ctype += "; charset=utf-8"
                out[name] = (ctype.encode(), entry.read_bytes())

    walk(root, "")
    return out


class Dashboard:
    def __init__(self, admin_sha256: str | None, secret: str | None, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self._admin = admin_sha256
        self._key = hashlib.sha256(
            (secret or secrets.token_hex(32)).encode() + b"|" + (admin_sha256 or "").encode()
        ).digest()
        self._clock = clock
        self._files = _load_static()
        self._revoked: dict[str, int] = {}  # session id -> its expiry (unix seconds)
        self._not_before = 0  # sessions issued before this (unix seconds) are over: set when _revoked overflows
        self._shared: dict[str, int] = {}  # sessions ended elsewhere (the store's, or the state process's)
        self._shared_not_before = 0
        self._marker: str | None = None
        self._share: SessionShare | None = None
        self._log: EventLog | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures: dict[str, tuple[float, int]] = {}  # client address -> (window start, failed logins)
        self._pruned_at = 0.0
        self.counters = {
            "logins": 0,
            "login_failures": 0,
            "logins_throttled": 0,
            "logouts": 0,
            "revoked_overflows": 0,  # the revoked set was full: every session issued until then ended
            "clients_shared": 0,  # failures counted in the shared bucket because the address map was full
        }

    # --- sessions -----------------------------------------------------------------------------

    def _sign(self, sid: str, expiry: int) -> str:
        return hmac.new(self._key, f"{sid}.{expiry}".encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        expiry = max(int(self._clock()), self._not_before) + SESSION_S
        sid = secrets.token_hex(16)
        return f"{sid}.{expiry}.{self._sign(sid, expiry)}"

    def _session(self, headers: dict[bytes, bytes]) -> tuple[str, int] | None:
        """The (id, expiry) of the request's session when it is signed, unexpired and not revoked."""
        if self._admin is None:
            return None
        token = _cookie(headers.get(b"cookie", b""), COOKIE)
        if not token:
            return None
        sid, _, rest = token.partition(".")
        expiry, _, mac = rest.partition(".")
        if not sid or not expiry.isascii() or not expiry.isdigit() or len(expiry) > 12:
            return None
        exp = int(expiry)
        issued = exp - SESSION_S
        if exp < self._clock() or issued < self._not_before or issued < self._shared_not_before:
            return None
        if sid in self._revoked or sid in self._shared:
            return None
        if not hmac.compare_digest(mac.encode("latin-1"), self._sign(sid, exp).encode()):
            return None
        return sid, exp

    def valid(self, headers: dict[bytes, bytes]) -> bool:
        return self._session(headers) is not None

    def revoke(self, headers: dict[bytes, bytes]) -> None:
        """End the request's session (if it has a valid one) in this process."""
        found = self._session(headers)
        if found is None:
            return
        sid, expiry = found
        if len(self._revoked) >= MAX_REVOKED:
            now = self._clock()
            self._revoked = {k: v for k, v in self._revoked.items() if v >= now}
            if len(self._revoked) >= MAX_REVOKED:
                # Forgetting a revocation would revive a session: end every session issued so far instead.
                self._revoked.clear()
                self._not_before = int(now) + 1
                self.counters["revoked_overflows"] += 1
                return
        self._revoked[sid] = expiry

    async def logout(self, headers: dict[bytes, bytes]) -> None:
        """End the request's session here at once, and everywhere through the store (or the host's state
        process)."""
        found = self._session(headers)
        self.revoke(headers)
        if found is None or self._share is None:
            return
        sid, expiry = found
        try:
            await self._share.revoke(sid, expiry, int(self._clock()))
            await self.sync()
        except Exception as e:  # noqa: BLE001 - it still holds in this process; logged for the others
            if self._log is not None:
                self._log.error("dashboard_logout_not_shared", error=type(e).__name__, message=str(e)[:200])

    # --- sessions ended elsewhere ---------------------------------------------------------------

    async def start(self, share: SessionShare, log: EventLog) -> None:
        """Follow the sessions ended everywhere (every worker's and replica's logouts: `server.session_share`)."""
        self._share, self._log = share, log
        self._task = asyncio.create_task(self._poll(), name="relaycast-dashboard-sessions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sync(self) -> None:
        """Load the ended sessions when their marker changed. What was loaded before stays until it expires (or a
        later start covers it): a state process started again has forgotten the logouts it was told."""
        assert self._share is not None
        marker = await self._share.marker()
        if marker == self._marker:
            return
        now = int(self._clock())
        marker, revoked, not_before = await self._share.load(now)
        not_before = max(not_before, self._shared_not_before)
        merged = {
            sid: exp for sid, exp in {**self._shared, **revoked}.items() if exp >= now and exp - SESSION_S >= not_before
        }
        if len(merged) > MAX_REVOKED:  # forgetting one would revive it: every session issued so far ends instead
            merged, not_before = {}, now + 1
            self.counters["revoked_overflows"] += 1
        self._marker, self._shared, self._shared_not_before = marker, merged, not_before

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the store is down: sessions it revoked stay revoked here
                await self.sync()
            await asyncio.sleep(POLL_S)

    # --- login throttling ---------------------------------------------------------------------

    def _bucket(self, client: str, now: float) -> str:
        if client in self._failures or len(self._failures) < MAX_CLIENTS:
            return client
        if now - self._pruned_at >= 1.0:  # at most once a second: a full map costs one pass
            self._pruned_at = now
            self._failures = {k: v for k, v in self._failures.items() if now - v[0] < LOGIN_WINDOW_S}
            if len(self._failures) < MAX_CLIENTS:
                return client
        return _SHARED

    def _check_throttle(self, client: str, now: float) -> None:
        entry = self._failures.get(self._bucket(client, now))
        if entry is None:
            return
        start, failures = entry
        if failures >= LOGIN_FAILURES and now - start < LOGIN_WINDOW_S:
            self.counters["logins_throttled"] += 1
            wait = max(1, math.ceil(start + LOGIN_WINDOW_S - now))
            raise errors.LimitExceeded(
                f"Too many failed logins from this address: try again in {wait} s.",
                limit="login",
                retry_after_s=wait,
            )

    def _failed(self, client: str, now: float) -> None:
        self.counters["login_failures"] += 1
        bucket = self._bucket(client, now)
        if bucket == _SHARED and client != _SHARED:
            self.counters["clients_shared"] += 1
        entry = self._failures.get(bucket)
        if entry is None or now - entry[0] >= LOGIN_WINDOW_S:
            self._failures[bucket] = (now, 1)
        else:
            self._failures[bucket] = (entry[0], entry[1] + 1)

    # --- pages --------------------------------------------------------------------------------

    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        path: str,
        ids: list[tuple[bytes, bytes]],
    ) -> None:
        method = scope["method"]
        if path.startswith(STATIC_PREFIX):
            found = self._files.get(path[len(STATIC_PREFIX) :])
            if found is None or method != "GET" or path.endswith(".html"):
                raise errors.NotFoundRoute(f"Unknown request URL: {method} {path}.")
            ctype, body = found
            await send_bytes(
                send, 200, body, [*ids, (b"cache-control", b"no-cache"), *_SECURITY], (b"content-type", ctype)
            )
            return
        if path == "/dashboard/login":
            if method == "POST":
                client = scope.get("client")
                address = str(client[0]) if client else ""
                await self._login(receive, send, ids, address, secure=scope.get("scheme") == "https")
            elif method == "GET":
                await self._page(send, "login.html", ids)
            else:
                raise errors.MethodNotAllowed(f"Method {method} is not allowed on {path}.")
            return
        if path == "/dashboard/logout" and method == "POST":
            await self.logout(headers)
            self.counters["logouts"] += 1
            await _redirect(send, "/dashboard/login", ids, f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")
            return
        if path == "/dashboard" and method == "GET":
            if self._admin is None:
                raise errors.Forbidden("The dashboard needs an admin key: set 'admin_key' in the config.")
            if not self.valid(headers):
                await _redirect(send, "/dashboard/login", ids)
                return
            await self._page(send, "index.html", ids)
            return
        raise errors.NotFoundRoute(f"Unknown request URL: {method} {path}.")

    async def _page(
        self, send: Send, name: str, ids: list[tuple[bytes, bytes]], status: int = 200, error: bool = False
    ) -> None:
        _, body = self._files[name]
        if error:  # the login page's error line, shown by the server: the page runs no inline script
            body = re.sub(rb'(<[^>]*id="login-error"[^>]*?)\s+hidden(\s*>)', rb"\1\2", body, count=1)
        await send_bytes(send, status, body, [*ids, (b"cache-control", b"no-store"), *_SECURITY], HTML)

    async def _login(
        self, receive: Receive, send: Send, ids: list[tuple[bytes, bytes]], client: str, secure: bool = False
    ) -> None:
        self._check_throttle(client, self._clock())  # before the key is compared: a throttled guess learns nothing
        try:
            raw = await read_body(receive, 16 * 1024)
        except BodyTooLarge:
            raise errors.PayloadTooLarge("The login form is larger than 16 KiB.") from None
        except ClientGone:
            return
        # Again, after the read: logins sent at once all passed the first check while their bodies arrived. From
        # here to counting a failure there is no await, so the sixth of a concurrent burst is refused.
        self._check_throttle(client, self._clock())
        fields = dict(parse_qsl(raw.decode("utf-8", "replace")))
        key = fields.get("key", "").strip().encode()
        ok = bool(self._admin and key and hmac.compare_digest(hashlib.sha256(key).hexdigest(), self._admin))
        if not ok:
            self._failed(client, self._clock())
            await self._page(send, "login.html", ids, status=401, error=True)
            return
        self.counters["logins"] += 1
        self._failures.pop(client, None)
        cookie = f"{COOKIE}={self.new_session()}; Path=/; Max-Age={SESSION_S}; HttpOnly; SameSite=Strict" + (
            "; Secure" if secure else ""
        )
        await _redirect(send, "/dashboard", ids, cookie)


async def _redirect(send: Send, location: str, ids: list[tuple[bytes, bytes]], cookie: str | None = None) -> None:
    h = [*ids, (b"location", location.encode()), (b"cache-control", b"no-store")]
    if cookie:
        h.append((b"set-cookie", cookie.encode()))
    await send_bytes(send, 303, b"", h, (b"content-type", b"text/plain"))


def _cookie(raw: bytes, name: str) -> str | None:
    for part in raw.decode("latin-1").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None
