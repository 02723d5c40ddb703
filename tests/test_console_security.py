"""The console's doors, over HTTP against the real server: CSRF on every form, a session cookie
signed elsewhere refused, wrong tokens throttled (one budget with the API), the token never
taken from a URL, the cookie's flags, sign-out, and the security headers."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.routing import Mount, Route

from integration.config import Settings
from integration.console.common import Console
from integration.console.routes import console_routes
from integration.console.session import COOKIE, Signer
from integration.throttle import FailureThrottle
from tests import harness, processes
from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.console_support import csrf_of, sign_in_http

MakeEnvironment = Callable[..., Awaitable[harness.TestEnvironment]]


@pytest.fixture
async def console(server: processes.Process) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


def console_forms(settings: Settings) -> list[str]:
    """Every path the console accepts a POST on, read from its routes."""
    [mount] = console_routes(Console(settings, FailureThrottle(1, 1)))
    assert isinstance(mount, Mount)
    return [
        mount.path + route.path
        for route in mount.routes
        if isinstance(route, Route) and "POST" in (route.methods or ())
    ]


async def test_every_form_refuses_a_missing_or_foreign_csrf_token(
    console: httpx.AsyncClient,
    server: processes.Process,
    settings: Settings,
    make_environment: MakeEnvironment,
) -> None:
    env = await make_environment("csrf")
    good = await sign_in_http(console)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as other:
        foreign = await sign_in_http(other)
    forms = console_forms(settings)
    assert len(forms) >= 8, forms  # sign-in, sign-out, and one per action
    for path in forms:
        url = (
            path.replace("{env_id}", str(env.id))
            .replace("{direction}", "inbound")
            .replace("{conflict_id}", "1")
        )
        for token in (None, foreign, good[:-2] + "xx"):
            data = {"name": "x", "what": "stream", "stream": "on", "id": "u"}
            if token is not None:
                data["csrf"] = token
            answer = await console.post(url, data=data)
            assert answer.status_code == 403, (url, token, answer.status_code)
    # A form posted from another site's page: refused on its Origin, token or not.
    answer = await console.post(
        "/admin/environments",
        data={"name": f"x-{uuid.uuid4().hex[:6]}", "csrf": good},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    # The same form with its token and from this origin works: the refusals were the token's.
    created = await console.post(
        "/admin/environments",
        data={"name": f"csrf-ok-{uuid.uuid4().hex[:6]}", "csrf": good},
        headers={"Origin": server.url},
    )
    assert created.status_code == 200 and "webhook-url" in created.text


@pytest.mark.parametrize(
    "signer",
    [
        Signer("another-installation-secret-key-0123456789abcdef", ADMIN_TOKEN),
        Signer(SECRET_KEY, "a-previous-admin-token-0123456789abcdef0123"),
    ],
    ids=["other-secret-key", "other-admin-token"],
)
async def test_a_session_cookie_signed_with_another_key_is_refused(
    console: httpx.AsyncClient, signer: Signer
) -> None:
    cookie, _ = signer.issue(signed_in=True)
    console.cookies.set(COOKIE, cookie, path="/admin")
    answer = await console.get("/admin/")
    assert answer.status_code == 303 and answer.headers["location"].endswith("/admin/login")
    refused = await console.post("/admin/environments", data={"name": "x", "csrf": "x"})
    assert refused.status_code == 403


async def test_a_tampered_or_expired_cookie_is_refused(console: httpx.AsyncClient) -> None:
    signer = Signer(SECRET_KEY, ADMIN_TOKEN)
    anonymous, _ = signer.issue(signed_in=False)
    payload, mac = anonymous.split(".")
    signed_in, _ = signer.issue(signed_in=True)
    # The signed-in flag of one cookie with the signature of another; and an expired one.
    spliced = f"{signed_in.split('.')[0]}.{mac}"
    expired, _ = signer.issue(signed_in=True, now=1_000_000_000)
    for cookie in (spliced, expired, anonymous, "garbage", f"{payload}."):
        console.cookies.set(COOKIE, cookie, path="/admin")
        answer = await console.get("/admin/")
        assert answer.status_code == 303, cookie


async def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_it(
    console: httpx.AsyncClient,
) -> None:
    form = await console.get("/admin/login")
    answer = await console.post(
        "/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf_of(form.text)}
    )
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert re.search(r"(?i)httponly", cookie) and re.search(r"(?i)samesite=strict", cookie)
    assert "Path=/admin" in cookie and "Max-Age=28800" in cookie
    assert ADMIN_TOKEN not in cookie
    home = await console.get("/admin/")
    assert home.status_code == 200
    out = await console.post("/admin/logout", data={"csrf": csrf_of(home.text)})
    assert out.status_code == 303 and out.headers["location"].endswith("/admin/login")
    assert (await console.get("/admin/")).status_code == 303


async def test_the_token_is_never_taken_from_a_url(console: httpx.AsyncClient) -> None:
    for path in (f"/admin/login?token={ADMIN_TOKEN}", f"/admin/?token={ADMIN_TOKEN}"):
        answer = await console.get(path)
        assert answer.status_code in (200, 303)
        assert (await console.get("/admin/")).status_code == 303, path
    # Nor a bearer header: the console is a browser's, its session is the cookie.
    answer = await console.get("/admin/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 303


async def test_pages_carry_the_security_headers(console: httpx.AsyncClient) -> None:
    await sign_in_http(console)
    page = await console.get("/admin/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "unsafe-inline" not in policy


async def test_wrong_tokens_are_throttled_with_the_api_s_budget(
    strict: processes.Process,
) -> None:
    async with httpx.AsyncClient(base_url=strict.url, timeout=10) as client:
        form = await client.get("/admin/login")
        csrf = csrf_of(form.text)
        for i in range(3):
            wrong = await client.post(
                "/admin/login", data={"token": f"wrong-{i}-{uuid.uuid4().hex}", "csrf": csrf}
            )
            assert wrong.status_code == 401 and "not the admin token" in wrong.text
        # Past the budget a wrong token gets 429, here and at the API (one budget)...
        wrong_again = {"token": f"wrong-{uuid.uuid4().hex}", "csrf": csrf}
        refused = await client.post("/admin/login", data=wrong_again)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        api = await client.get("/api/environments", headers={"Authorization": "Bearer wrong"})
        assert api.status_code == 429
        # ...and the right one still works at both (issue #20.3).
        api = await client.get(
            "/api/environments", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert api.status_code == 200
        signed_in = await client.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf})
        assert signed_in.status_code == 303, signed_in.text
    assert "console sign-in failed from 127.0.0.1" in strict.log()
    assert ADMIN_TOKEN not in strict.log()
