"""The dashboard: static pages bundled with the package, behind a login with the admin key.

`POST /dashboard/login` with the admin key sets an HttpOnly, SameSite=Strict session cookie: the key never goes in
a URL and is never stored in the browser. The cookie is `<expiry>.<HMAC(expiry)>`, signed with
`dashboard.session_secret` (shared by replicas) or a per-process random secret, and bound to the admin key's
hash, so changing the admin key ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import re
import secrets
import time
from importlib import resources
from urllib.parse import parse_qsl

from relaycast import errors
from relaycast.asgi import Receive, Scope, Send, read_body, send_bytes

COOKIE = "relaycast_session"
SESSION_S = 12 * 3600
STATIC_PREFIX = "/dashboard/static/"
_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_SECURITY = [
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
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

    # --- sessions -----------------------------------------------------------------------------

    def _sign(self, expiry: int) -> str:
        return hmac.new(self._key, str(expiry).encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        expiry = int(self._clock()) + SESSION_S
        return f"{expiry}.{self._sign(expiry)}"

    def valid(self, headers: dict[bytes, bytes]) -> bool:
        if self._admin is None:
            return False
        token = _cookie(headers.get(b"cookie", b""), COOKIE)
        if not token:
            return False
        expiry, _, mac = token.partition(".")
        if not expiry.isdigit() or int(expiry) < self._clock():
            return False
        return hmac.compare_digest(mac, self._sign(int(expiry)))

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
                await self._login(receive, send, ids, secure=scope.get("scheme") == "https")
            elif method == "GET":
                await self._page(send, "login.html", ids)
            else:
                raise errors.MethodNotAllowed(f"Method {method} is not allowed on {path}.")
            return
        if path == "/dashboard/logout" and method == "POST":
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

    async def _login(self, receive: Receive, send: Send, ids: list[tuple[bytes, bytes]], secure: bool = False) -> None:
        raw = await read_body(receive, 16 * 1024)
        fields = dict(parse_qsl(raw.decode("utf-8", "replace")))
        key = fields.get("key", "").strip().encode()
        ok = bool(self._admin and key and hmac.compare_digest(hashlib.sha256(key).hexdigest(), self._admin))
        if not ok:
            await self._page(send, "login.html", ids, status=401, error=True)
            return
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
