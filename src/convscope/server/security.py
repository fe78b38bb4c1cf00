"""The dashboard's guard, in one place: an ASGI middleware that `create_app` puts around the app.

    app.add_middleware(Guard, config=config)     # done by create_app; config: ServeConfig

On every request, in this order:
  1. Host check (DNS rebinding): the Host header must name this server — `localhost`,
     `127.0.0.1` or `[::1]` (any port), the bound address `config.host`, or a name in
     `config.allow_hosts` (`--allow-host`). Else 403 with one line saying how to allow it.
  2. Token (only with `config.token`): `Authorization: Bearer T`, the cookie, or `?token=T`.
     A right `?token=` is exchanged for an HttpOnly, SameSite=Strict cookie on that response
     (the page then drops the token from its address bar: static/js/api.js), and the query
     parameter is removed before the app sees the request, so no route, error or log line
     can repeat it. Else 401.
  3. Origin check on every state-changing request (anything but GET, HEAD, OPTIONS): an
     `Origin` must be this server's own origin (a foreign or `null` one -> 403); without an
     `Origin`, `Sec-Fetch-Site` must say `same-origin`, or the request must be JSON
     (`Content-Type: application/json`, which a foreign page cannot send without a CORS
     preflight, and the server answers none). Forms, uploads and plain text -> 403.
  4. Body size on every state-changing request but an upload (which the upload route caps at
     `config.max_upload_bytes`): at most MAX_BODY bytes (controls and analysis requests are a
     few hundred), else 413 before a byte of it is parsed — by Content-Length when one is given,
     else while the body is read (chunked). The app is handed the body read here.
  5. Headers on every response: `X-Content-Type-Options: nosniff`, the CSP below,
     `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, `Cross-Origin-Resource-Policy:
     same-origin` (other sites cannot embed the pictures). With `config.embed` (the server that
     `cs.show` starts for a notebook) the CSP's `frame-ancestors` names the loopback origins
     (EMBED_ANCESTORS) instead of 'none' and X-Frame-Options is left out (it cannot name them);
     steps 1-3 are the same.
A refused request is logged as one warning line (method, path, reason; never a query string).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convscope.config import LOCAL_HOSTS, ServeConfig

#: The page's policy: its own scripts, styles and pictures (plus data: pictures), nothing
#: inline, no plugins, no framing, forms only to itself.
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: Bytes of a JSON request body (a control, an analysis request); uploads have their own cap.
MAX_BODY = 256 * 1024  # a layer-spec control: at most 20,000 characters, ~120 KB as JSON at worst
#: Who may frame an embedded server's page: itself and pages served from this machine, any port
#: (a Jupyter notebook; an `http:` source also matches `https:`). A CSP host-source cannot name an
#: IPv6 literal, so a notebook opened at http://[::1]:PORT cannot frame it.
EMBED_ANCESTORS = "'self' http://localhost:* http://127.0.0.1:*"
EMBED_HEADERS: dict[str, str] = {
    **{k: v for k, v in HEADERS.items() if k != "X-Frame-Options"},
    "Content-Security-Policy": CSP.replace("frame-ancestors 'none'", f"frame-ancestors {EMBED_ANCESTORS}"),
}
log = logging.getLogger("convscope.server")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WILDCARDS = frozenset({"0.0.0.0", "::"})  # bind-to-all addresses


def cookie_name(port: int) -> str:
    """The token cookie's name; cookies are shared by every port of a host, so it names the port."""
    return f"convscope-token-{port}"


def host_name(value: str) -> tuple[str, int | None] | None:
    """`Host`-header text -> (lower-case name without brackets or trailing dot, port or None);
    None when it is not a host[:port]."""
    v = value.strip().lower()
    if v.startswith("["):
        name, sep, rest = v[1:].partition("]")
        if not sep:
            return None
    else:
        name, sep, rest = v.partition(":")
        rest = sep + rest
        if rest.count(":") > 1:
            return None  # a bare IPv6 address needs brackets
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    name = name.removesuffix(".")
    if not name or any(c in name for c in "/\\@ \t"):
        return None
    return name, (int(rest[1:]) if rest else None)


def allowed_hosts(config: ServeConfig) -> frozenset[str]:
    """Every Host name the server answers to (normalised as `host_name` does)."""
    names = set(LOCAL_HOSTS) | {config.host} | set(config.allow_hosts)
    return frozenset(n.lower().strip("[]").removesuffix(".") for n in names)


class Guard:
    """ASGI middleware: Host check, token, Origin check, security headers (module docstring)."""

    def __init__(self, app: ASGIApp, *, config: ServeConfig) -> None:
        self.app = app
        self.config = config
        self.hosts = allowed_hosts(config)
        self.headers = EMBED_HEADERS if config.embed else HEADERS
        self.token = config.token.encode() if config.token else None
        # the cookie holds a value derived from the token, never the token itself
        self.cookie_value = (
            hmac.new(self.token, b"convscope cookie", hashlib.sha256).hexdigest().encode()
            if self.token
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        headers = _headers(scope)
        set_cookie: str | None = None
        refusal = self._host_refusal(headers.get("host", ""))
        if refusal is None and self.token is not None:
            refusal, scope, set_cookie = self._token(scope, headers)
        if refusal is None and (
            scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        ):
            refusal = _origin_refusal(scope, headers)
        if refusal is None and _capped(scope):
            refusal, receive = await _body_within(MAX_BODY, headers, receive)
        if refusal is not None:
            status, line = refusal
            method = scope.get("method", "WEBSOCKET")
            log.warning("refused %s %s (%d): %s", method, scope.get("path", ""), status, line)
            await _refuse(scope, send, status, line, self.headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for k, v in self.headers.items():
                    if k not in out:
                        out[k] = v
                if self.headers is EMBED_HEADERS:  # a handler that set the CLI's headers itself
                    out["Content-Security-Policy"] = EMBED_HEADERS["Content-Security-Policy"]
                    if "X-Frame-Options" in out:
                        del out["X-Frame-Options"]
                if set_cookie is not None:
                    out.append("set-cookie", set_cookie)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    # ---- 1. Host ---------------------------------------------------------------------------
    def _host_refusal(self, value: str) -> tuple[int, str] | None:
        parsed = host_name(value)
        if parsed is not None and parsed[0] in self.hosts:
            return None
        shown = repr(value[:100]) if value else "(none)"
        name = parsed[0] if parsed else "NAME"
        known = ", ".join(f"[{h}]" if ":" in h else h for h in sorted(self.hosts))
        return 403, (
            f"Host {shown} is not allowed (DNS-rebinding guard): this server answers to "
            f"{known}; to allow this name, start convscope with --allow-host {name}"
        )

    # ---- 2. token --------------------------------------------------------------------------
    def _token(
        self, scope: Scope, headers: Mapping[str, str]
    ) -> tuple[tuple[int, str] | None, Scope, str | None]:
        assert self.token is not None and self.cookie_value is not None
        port = _port(scope, self.config.port)
        name = cookie_name(port)
        auth = headers.get("authorization", "")
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = [v for k, v in query if k == "token"]
        given = {
            "header": auth[7:].strip() if auth.lower().startswith("bearer ") else "",
            "cookie": cookie_parser(headers.get("cookie", "")).get(name, ""),
            "query": from_query[-1] if from_query else "",
        }
        expected = {"header": self.token, "cookie": self.cookie_value, "query": self.token}
        good = {k for k, v in given.items() if v and hmac.compare_digest(v.encode(), expected[k])}
        if from_query:  # the app never sees the token: no route, error or log line can repeat it
            rest = urlencode([(k, v) for k, v in query if k != "token"]).encode()
            scope = dict(scope, query_string=rest)
        if not good:
            what = "wrong token" if any(given.values()) else "this server needs a token"
            return (
                (401, f"{what}: open the URL with ?token=... as printed by convscope serve"),
                scope,
                None,
            )
        cookie = None
        if "query" in good and "cookie" not in good:
            cookie = f"{name}={self.cookie_value.decode()}; HttpOnly; Path=/; SameSite=Strict"
        return None, scope, cookie


# ---- 3. Origin ---------------------------------------------------------------------------------
def _origin_refusal(scope: Scope, headers: Mapping[str, str]) -> tuple[int, str] | None:
    origin = headers.get("origin")
    scheme = str(scope.get("scheme", "http")).replace("ws", "http")  # ws -> http, wss -> https
    own = _origin_of(f"{scheme}://{headers.get('host', '')}")
    if origin is not None:
        if origin != "null" and _origin_of(origin) == own and own is not None:
            return None
        return 403, (
            f"cross-origin request refused: Origin {origin[:100]!r} is not this dashboard's own; "
            "controls and uploads are taken only from the dashboard page itself"
        )
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site == "same-origin":
            return None
        return 403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})"
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if scope["type"] == "http" and media == "application/json":
        return None  # no browser sends this cross-site without a preflight, which is refused
    return 403, (
        "request refused: a form, upload or non-JSON request without an Origin header; "
        "send it from the dashboard page (or send JSON with Content-Type: application/json)"
    )


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or base URL; None when it is not one."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.removesuffix("."), port if port is not None else default


# ---- 4. body size -------------------------------------------------------------------------------
def _capped(scope: Scope) -> bool:
    """A state-changing HTTP request whose body MAX_BODY bounds (an upload's route bounds its own)."""
    if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
        return False
    path = str(scope.get("path", ""))
    return not (path.startswith("/api/runs/") and path.endswith("/uploads"))


async def _body_within(
    limit: int, headers: Mapping[str, str], receive: Receive
) -> tuple[tuple[int, str] | None, Receive]:
    """(None, a receive that replays the body) when the body is at most `limit` bytes, else
    (413 and a line, receive); reading stops at the first byte over the limit."""
    too_big = 413, f"request body over the limit of {limit:,} bytes (controls and requests are small JSON)"
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        return too_big, receive
    chunks: list[bytes] = []
    size = 0
    after: Message | None = None  # a message other than the body's (a disconnect): replayed next
    while True:
        message = await receive()
        if message["type"] != "http.request":
            after = message
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return too_big, receive
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
    if after is not None:
        pending.append(after)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return None, replay


# ---- helpers -----------------------------------------------------------------------------------
def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers, lower-case names; the first of repeated ones (latin-1, as ASGI)."""
    out: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


def _port(scope: Scope, fallback: int) -> int:
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else fallback


async def _refuse(scope: Scope, send: Send, status: int, line: str, headers: Mapping[str, str]) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": line[:120]})
        return
    body = json.dumps({"error": line}).encode()
    head = {
        **headers,
        "content-type": "application/json",
        "content-length": str(len(body)),
        "cache-control": "no-store",
    }
    if status == 401:
        head["www-authenticate"] = "Bearer"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in head.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})
