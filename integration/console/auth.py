"""Signing in and out, and the guard in front of every console page.

The admin token is typed into a form (POSTed, never in a URL) and exchanged for a signed,
HttpOnly, SameSite=Strict session cookie. Wrong tokens drain the same kind of failure budget as
the REST API's bearer token; a client past it is refused without its token being looked at.
"""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integration.console.common import (
    PREFIX,
    ConsoleRequest,
    form,
    page,
    redirect,
    render,
    session_of,
)
from integration.console.session import (
    ANONYMOUS_LIFETIME_SECONDS,
    COOKIE,
    LIFETIME_SECONDS,
    Signer,
)
from integration.crypto import constant_time_equal
from integration.errors import TooManyRequests
from integration.throttle import client_key

log = logging.getLogger(__name__)

PUBLIC = (f"{PREFIX}/login", f"{PREFIX}/static/")
SAFE_METHODS = ("GET", "HEAD")
# Pages and assets come from this origin only: no inline script, nothing from elsewhere, no
# framing (clickjacking a "replay all" button), no form posted anywhere else.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # Not no-referrer: under it Chromium sends `Origin: null` with a form, which the origin
    # check must refuse. Same-origin keeps the console's URLs from leaking to other sites.
    "referrer-policy": "same-origin",
}


class ConsoleGuard:
    """Finds the session on every console request; pages other than sign-in need one that
    signed in (a GET is sent to the sign-in page, anything else refused); unsafe methods must
    come from this origin. Adds the console's security headers to every answer."""

    def __init__(self, app: ASGIApp, signer: Signer) -> None:
        self.app = app
        self.signer = signer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        session = self.signer.read(request.cookies.get(COOKIE))
        scope["console_session"] = session
        path = scope["path"]
        refused: Response | None = None
        if scope["method"] not in SAFE_METHODS and not _same_origin(request):
            refused = PlainTextResponse("cross-origin form refused", status_code=403)
        elif not path.startswith(PUBLIC) and not (session and session.signed_in):
            if scope["method"] in SAFE_METHODS:
                refused = RedirectResponse(f"{PREFIX}/login", status_code=303)
            else:
                refused = PlainTextResponse("sign in first", status_code=403)
        await (refused or self.app)(scope, receive, _with_headers(send))


def _same_origin(request: Request) -> bool:
    """A browser names the page a form was posted from; it must be one of ours (the host is
    compared, not the scheme, which a TLS-terminating proxy changes)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.partition("://")[2] == host


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                headers.setdefault(name, value)
            if not headers.get("content-type", "").startswith(("text/css", "text/javascript")):
                # Pages show what an operator may not want left in a shared browser's cache.
                headers.setdefault("cache-control", "no-store")
        await send(message)

    return sending


def _set_cookie(request: ConsoleRequest, response: Response, value: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@page
async def sign_in_form(request: ConsoleRequest) -> Response:
    session = session_of(request)
    if session and session.signed_in:
        return redirect("/")
    if session is not None:
        return render(request, "login.html")
    # A session before signing in, so that the sign-in form carries a CSRF token too.
    cookie, session = request.state["console"].signer.issue(signed_in=False)
    request.scope["console_session"] = session
    response = render(request, "login.html")
    _set_cookie(request, response, cookie, ANONYMOUS_LIFETIME_SECONDS)
    return response


@page
async def sign_in(request: ConsoleRequest) -> Response:
    console = request.state["console"]
    client = client_key(request.scope)
    fields = await form(request)
    # The token first: the right one signs in whatever else came from this address.
    if not constant_time_equal(fields.get("token", ""), console.admin_token):
        if wait := console.throttle.failure(client):
            raise TooManyRequests(
                f"too many wrong tokens from {client}; try again in {wait} s", retry_after=wait
            )
        log.warning("console sign-in failed from %s", client)
        return render(request, "login.html", status_code=401, error="That is not the admin token.")
    cookie, _ = console.signer.issue(signed_in=True)
    response = redirect("/")
    _set_cookie(request, response, cookie, LIFETIME_SECONDS)
    return response


@page
async def sign_out(request: ConsoleRequest) -> Response:
    await form(request)
    response = redirect("/login")
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


routes = [
    Route("/login", sign_in_form, methods=["GET"]),
    Route("/login", sign_in, methods=["POST"]),
    Route("/logout", sign_out, methods=["POST"]),
]
