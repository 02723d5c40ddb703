"""The console in a real browser (Debian's Chromium through Playwright), against the real
server, walked as an operator would: sign in, create an environment and copy its URL, watch a
message arrive, connect Segment (the Segment-like sink) and stream, see the delivery, repair a
dead letter, erase a user. Every page's HTML is kept and searched for secrets at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from integration.config import Settings
from integration.store.db import SessionMaker
from tests import harness
from tests.browser import chromium
from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.console_support import sign_in_browser
from tests.harness import wait_for
from tests.outbound_support import (
    Delivery,
    TimedSink,
    all_delivered,
    in_process_worker,
    new_write_key,
    publish_http,
    stop_streams,
)
from tests.processes import Process
from tests.segment_sender import sign

pytestmark = pytest.mark.slow


class Visits:
    """Every page the browser showed, to search for secrets afterwards."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.pages: list[tuple[str, str]] = []

    async def keep(self) -> str:
        html = await self.page.content()
        self.pages.append((self.page.url, html))
        return html


async def reload_until(
    page: Any, check: Callable[[], Awaitable[bool]], seconds: float = 30
) -> None:
    async def reloaded() -> bool:
        await page.reload()
        return await check()

    await wait_for(reloaded, timeout=seconds, interval=0.5)


async def test_operator_sets_up_both_directions_and_repairs_a_delivery(
    server: Process,
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    sink: TimedSink,
    settings: Settings,
    sessions: SessionMaker,
) -> None:
    base = server.url
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        visits = Visits(page)
        await sign_in_browser(page, base)

        # Create an environment; its URL is shown once, and the copy button copies it.
        name = f"console-{uuid.uuid4().hex[:8]}"
        await page.fill("#name", name)
        await page.click("button:has-text('Create')")
        webhook_url = await page.input_value("#webhook-url")
        first_intake_key = await page.input_value("#intake-key")  # ours, shown once too
        await page.click("button[data-copy='#webhook-url']")
        await page.get_by_role("button", name="Copied").wait_for()
        assert await page.evaluate("navigator.clipboard.readText()") == webhook_url
        first_key = webhook_url.rsplit("/", 1)[1]
        await page.click("text=Continue to the settings")
        env_page = page.url
        env_id = uuid.UUID(env_page.rsplit("/", 1)[1])
        try:
            await _watch_messages_arrive(page, visits, http, urlsplit(webhook_url).path)
            secrets = await _connect_segment(page, visits, sink, env_page)
            secrets += await _rotate_with_promises(page, visits, http, first_key, secrets)
            secrets += await _publish_through_us(page, visits, http, first_intake_key, env_page)
            await _deliver_and_repair(page, visits, admin, sink, settings, sessions, env_id)
            await _erase_a_user(page, visits, env_page)
        finally:
            await stop_streams(sessions, [env_id])
        secrets += [ADMIN_TOKEN, SECRET_KEY, first_key, first_intake_key]
        for url, html in visits.pages:
            for secret in secrets:
                assert secret not in html, f"a secret is shown whole on {url}"
        assert errors == [], "a page threw"


IDENTIFY = {
    "type": "identify",
    "userId": "u-ada",
    "traits": {"email": "ada@example.com", "plan": "pro"},
    "messageId": "console-identify-1",
}
TRACK = {
    "type": "track",
    "userId": "u-ada",
    "event": "Flow Started",
    "properties": {"company_id": "acme", "flow": "onboarding"},
    "messageId": "console-track-1",
}


async def _watch_messages_arrive(
    page: Any, visits: Visits, http: httpx.AsyncClient, path: str
) -> None:
    """The live view is open when the messages come: they appear without a reload, stored,
    duplicate or rejected with the reason, and a stored one opens to its JSON."""
    await page.click("nav.tabs >> text=Live")
    await page.get_by_text("Nothing received yet").wait_for()
    answer = await http.post(path, json=[IDENTIFY, TRACK])
    assert answer.status_code == 200, answer.text
    rows = page.locator("#live-rows")
    await rows.locator("tr.stored", has_text="Flow Started").wait_for(timeout=15_000)
    assert (await http.post(path, json=TRACK)).status_code == 200  # a redelivery
    assert (await http.post(path, json={"type": "track", "userId": "u-ada"})).status_code == 400
    await rows.locator("tr.duplicate", has_text="Flow Started").wait_for(timeout=15_000)
    await rows.locator("tr.rejected", has_text="missing_event").wait_for(timeout=15_000)
    await visits.keep()
    await rows.locator("tr.stored", has_text="Flow Started").locator("a").click()
    stored = await page.inner_text("pre.json")
    await visits.keep()
    assert '"messageId": "console-track-1"' in stored and '"flow": "onboarding"' in stored


async def _connect_segment(page: Any, visits: Visits, sink: TimedSink, env_page: str) -> list[str]:
    """Write key against the sink, stream on, a test event, a signing secret, a key rotation:
    each secret shown masked afterwards. Returns the secrets set."""
    await page.goto(env_page)
    write_key = new_write_key()
    sink.write_keys.add(write_key)
    await page.fill("#write_key", write_key)
    await page.check("input[name=region][value=custom]")
    await page.fill("#custom_url", sink.url)
    await page.click("button:has-text('Save Segment settings')")
    await page.get_by_text("Segment settings saved.").wait_for()
    assert f"…{write_key[-4:]}" in await visits.keep()
    await page.click("button:has-text('Turn the stream on')")
    await page.get_by_text("Stream switched.").wait_for()
    await page.click("button:has-text('Send test event')")
    result = await page.inner_text("#test-result")
    await visits.keep()
    assert result.startswith("OK: Segment") and "HTTP 200" in result, result
    signing = f"sig-{uuid.uuid4().hex}"
    await page.fill("#signing_secret", signing)
    await page.click("button[name=action][value=set]")
    await page.get_by_text("Signing secret saved.").wait_for()
    assert f"…{signing[-4:]}" in await visits.keep()
    await page.select_option("#grace", "3600")
    await page.click("button:has-text('Rotate the webhook key')")
    rotated = await page.input_value("#webhook-url")
    await page.get_by_text("The previous key keeps working until").wait_for()
    await page.click("text=Continue to the settings")
    await visits.keep()
    return [write_key, signing, rotated.rsplit("/", 1)[1]]


async def _rotate_with_promises(
    page: Any, visits: Visits, http: httpx.AsyncClient, first_key: str, made: list[str]
) -> list[str]:
    """After _connect_segment's rotation (an hour's grace), the first key is listed as still
    working; a rotation that would end it now asks first, and cancelling changes nothing; a
    rotation with the default grace keeps it working. Returns the keys made."""
    _, signing, second = made
    listed = page.locator("#previous-webhook-keys")
    assert f"…{first_key[-4:]}" in await listed.inner_text()
    await page.select_option("#grace", "0")
    await page.click("button:has-text('Rotate the webhook key')")
    confirm = page.locator("#confirm-rotation")
    await confirm.get_by_text("End 1 earlier webhook key sooner than promised?").wait_for()
    assert f"…{first_key[-4:]}" in await page.inner_text("#early-keys")
    await visits.keep()
    await page.click("text=Cancel: rotate nothing")
    assert f"…{second[-4:]}" in await page.inner_text("#receive")  # still the current key
    await page.click("button:has-text('Rotate the webhook key')")  # the default: a day
    third = (await page.input_value("#webhook-url")).rsplit("/", 1)[1]
    await page.click("text=Continue to the settings")
    keys = await page.inner_text("#previous-webhook-keys")
    await visits.keep()
    assert f"…{first_key[-4:]}" in keys and f"…{second[-4:]}" in keys
    body = orjson.dumps(IDENTIFY)
    for key in (first_key, second, third):
        answer = await http.post(
            f"/webhooks/segment/{key}",
            content=body,
            headers={"X-Signature": sign(signing, body), "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
    return [third]


async def _publish_through_us(
    page: Any, visits: Visits, http: httpx.AsyncClient, first_key: str, env_page: str
) -> list[str]:
    """The intake write key: its last characters, a rotation that shows the new one once (the
    old one still publishing), and the intake's settings: browser origins, stored outbound
    events, retention; a refused origin is named by its label and the typed text kept."""
    await page.goto(env_page)
    intake = page.locator("#intake")
    assert f"…{first_key[-4:]}" in await intake.inner_text()
    await page.click("button:has-text('Rotate the intake write key')")
    new_key = await page.input_value("#intake-key")
    await page.get_by_text("The previous intake write key keeps working until").wait_for()
    await page.click("text=Continue to the settings")
    assert f"…{first_key[-4:]}" in await page.inner_text("#previous-intake-keys")
    assert f"…{new_key[-4:]}" in await intake.inner_text()
    for key in (first_key, new_key):
        answer = await http.post("/v1/track", json=TRACK, auth=(key, ""))
        assert answer.status_code == 200, answer.text

    await page.fill("#cors_origins", "app.example.com")
    await page.click("button:has-text('Save origins')")
    error = await page.inner_text("p.flash.error")
    assert error.startswith("Browser origins: each origin"), error
    assert await page.input_value("#cors_origins") == "app.example.com"
    await page.fill("#cors_origins", "https://app.example.com\nhttps://admin.example.com:8443")
    await page.click("button:has-text('Save origins')")
    await page.get_by_text("Browser origins saved.").wait_for()
    await page.check("#store_outbound_events")
    await page.click("#send form:has(#store_outbound_events) button")
    await page.get_by_text("Store outbound events saved.").wait_for()
    await page.fill("#retention_days", "90")
    await page.click("#data form button")
    await page.get_by_text("Retention saved.").wait_for()
    assert await page.is_checked("#store_outbound_events")
    assert await page.input_value("#retention_days") == "90"
    origins = await page.input_value("#cors_origins")
    assert origins.splitlines() == ["https://app.example.com", "https://admin.example.com:8443"]
    await visits.keep()
    return [new_key]


async def _deliver_and_repair(
    page: Any,
    visits: Visits,
    admin: httpx.AsyncClient,
    sink: TimedSink,
    settings: Settings,
    sessions: SessionMaker,
    env_id: uuid.UUID,
) -> None:
    """A published event is delivered and shows in the overview; a batch Segment refuses is a
    dead letter, replayed from the page and delivered."""
    deliveries = page.locator("nav.tabs >> text=Deliveries")
    async with in_process_worker(settings):
        await publish_http(
            admin, env_id, {"type": "track", "userId": "u-ada", "event": "Checklist Task Completed"}
        )
        await wait_for(lambda: all_delivered(sessions, env_id))
        await deliveries.click()

        async def delivered_shown() -> bool:
            return await page.inner_text("#delivered-hour") != "0"

        await reload_until(page, delivered_shown)
        batches = await page.inner_text("#batches")
        assert "delivered" in batches and "200" in batches, batches
        await visits.keep()

        sink.fail(400)
        [failing] = await publish_http(
            admin, env_id, {"type": "track", "userId": "u-ada", "event": "Invoice Failed"}
        )
        dead = page.locator("#dead")

        async def dead_shown() -> bool:
            return "Invoice Failed" in await dead.inner_text()

        await reload_until(page, dead_shown)
        assert "HTTP 400" in await dead.inner_text()
        assert await page.inner_text("#dead-now") == "1"  # the count and the list agree
        await visits.keep()
        await (
            dead.locator("tr", has_text="Invoice Failed")
            .locator("button:has-text('Replay')")
            .click()
        )
        await page.get_by_text("1 dead letter queued again.").wait_for()
        await wait_for(lambda: failing in sink.message_ids())

        async def repaired() -> bool:
            return "No dead letters." in await dead.inner_text()

        await reload_until(page, repaired)
        assert await page.inner_text("#dead-now") == "0"
        await visits.keep()


async def _erase_a_user(page: Any, visits: Visits, env_page: str) -> None:
    await page.goto(f"{env_page}/users")
    await page.fill("#q", "ada@example.com")
    await page.click("button:has-text('Search')")
    await page.click("a:has-text('u-ada')")
    traits = await visits.keep()
    assert "plan" in traits and "acme" in traits
    await page.click("a:has-text('Erase…')")
    # A typo keeps the form and what was typed, and says what is wrong.
    await page.fill("#confirm", "U-ada")
    await page.click("button:has-text('Erase this user')")
    said = await page.inner_text("p.flash.error")
    assert "capitals differ" in said and "Nothing was erased" in said, said
    assert await page.input_value("#confirm") == "U-ada"
    await visits.keep()
    await page.fill("#confirm", "u-ada")
    await page.click("button:has-text('Erase this user')")
    await page.get_by_text("Erased").first.wait_for()
    removed = await page.inner_text("table.counts")
    assert "users\t1" in removed or "users 1" in removed, removed
    await visits.keep()
    await page.goto(f"{env_page}/users?q=u-ada")
    await page.get_by_text("No user with this userId or email.").wait_for()


LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Pages that also get a phone-sized picture in docs/ (every page is checked at both sizes).
PHONE_SHOTS = {"environment", "live", "deliveries"}


async def _fill_with_data(
    http: httpx.AsyncClient, delivery: Delivery, sink: TimedSink, env: harness.TestEnvironment
) -> str:
    """Users, companies, events, deliveries and one dead letter (its messageId returned): what
    a working day shows."""
    people = [("ada", "pro"), ("grace", "team"), ("alan", "free"), ("edsger", "pro")]
    messages: list[dict[str, Any]] = []
    for i, (who, plan) in enumerate(people):
        company = "acme" if i % 2 == 0 else "globex"
        messages += [
            {
                "type": "identify",
                "userId": f"u-{who}",
                "anonymousId": f"anon-{who}",
                "traits": {"email": f"{who}@example.com", "plan": plan, "name": who.title()},
            },
            {
                "type": "group",
                "userId": f"u-{who}",
                "groupId": company,
                "traits": {"name": company.title(), "employees": 40 + i},
            },
            {
                "type": "track",
                "userId": f"u-{who}",
                "event": "Flow Started",
                "properties": {"company_id": company, "flow": "onboarding"},
            },
            {"type": "page", "userId": f"u-{who}", "name": "Pricing"},
        ]
    assert (await http.post(env.webhook_path, json=messages)).status_code == 200
    assert (await http.post(env.webhook_path, json=messages[2])).status_code == 200
    assert (
        await http.post(env.webhook_path, json={"type": "track", "userId": "x"})
    ).status_code == 400
    async with delivery.worker():
        await delivery.publish(
            env,
            [
                {"type": "track", "userId": f"u-{who}", "event": "Checklist Task Completed"}
                for who, _ in people
            ],
        )
        await wait_for(partial(all_delivered, delivery.sessions, env.id))
        sink.fail(400)
        [dead] = await delivery.publish(
            env, {"type": "track", "userId": "u-ada", "event": "Invoice Failed"}
        )

        async def is_dead() -> bool:
            rows = await delivery.admin.get(f"/api/environments/{env.id}/deliveries?status=dead")
            return any(d["message_id"] == dead for d in rows.json()["items"])

        await wait_for(is_dead)
    return dead


async def _a_plan_with_violations(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, env: harness.TestEnvironment
) -> None:
    """An inbound tracking plan, and messages it strips and holds: what the plan page and the
    quarantine show."""
    plan = {
        "events": [
            {
                "type": "track",
                "name": "Flow Started",
                "properties": {
                    "company_id": {"type": "string"},
                    "flow": {"type": "string", "enum": ["onboarding", "checkout"]},
                },
                "required": ["flow"],
            },
            {"type": "identify", "properties": {"email": {"type": "string"}}},
        ]
    }
    body = {"plan": plan, "unplanned_event": "quarantine", "unplanned_property": "quarantine"}
    saved = await admin.put(f"/api/environments/{env.id}/tracking-plan/inbound", json=body)
    assert saved.status_code == 200, saved.text
    messages = [
        {
            "type": "track",
            "userId": "u-ada",
            "event": "Flow Started",
            "properties": {"flow": "tour", "debug": True},
        },
        {"type": "track", "userId": "u-grace", "event": "Button Clicked", "properties": {}},
        {"type": "identify", "userId": "u-alan", "traits": {"email": 7, "plan": "free"}},
    ]
    assert (await http.post(env.webhook_path, json=messages)).status_code == 200


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def _paused_by_the_breaker(delivery: Delivery) -> harness.TestEnvironment:
    """An environment whose Segment answers every batch with 503 until its breaker pauses its
    delivery (after a second of failing rounds here; no probe for an hour, so it stays so)."""
    down = TimedSink().start()
    try:
        env, key = await delivery.stream(api_url=down.url)
        down.write_keys.add(key)
        down.fail(503, times=10_000)
        await delivery.publish(env, {"type": "track", "userId": "u-ada", "event": "Held"})
        state = f"/api/environments/{env.id}/delivery"

        async def paused() -> bool:
            return bool((await delivery.admin.get(state)).json()["paused"])

        breaker = {
            "outbox_breaker_pause_after_seconds": 1.0,
            "outbox_breaker_probe_seconds": 3600.0,
        }
        async with delivery.worker(**breaker):
            await wait_for(paused, timeout=30)
    finally:
        down.stop()
    return env


async def test_every_page_fits_a_laptop_and_a_phone(
    server: Process,
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    delivery: Delivery,
    sink: TimedSink,
    shots: Path,
) -> None:
    """Each page at 1280 pixels and at a phone's 390 in portrait: nothing wider than the
    screen (tables scroll inside their own box). `make screenshots` keeps the pictures in
    docs/console (CONSOLE_SCREENSHOTS); otherwise they go to the test's temporary folder."""
    env, _ = await delivery.stream()
    dead = await _fill_with_data(http, delivery, sink, env)
    paused = await _paused_by_the_breaker(delivery)
    await _a_plan_with_violations(admin, http, env)
    base = server.url
    at = f"{base}/admin/environments/{env.id}"
    # Rotated-out keys still working, for the settings page to list.
    for path, grace in (("rotate-webhook-key", 3600), ("rotate-webhook-key", None)):
        query = {} if grace is None else {"grace_seconds": grace}
        rotated = await admin.post(f"/api/environments/{env.id}/{path}", params=query)
        assert rotated.status_code == 200, rotated.text
    rotated = await admin.post(f"/api/environments/{env.id}/rotate-source-write-key")
    assert rotated.status_code == 200, rotated.text
    await _with_mappings(admin, env)
    # Another environment with the longest name allowed: the lists that offer environments
    # (promotion) must still fit a phone.
    longest = await admin.post("/api/environments", json={"name": "n" * 56 + uuid.uuid4().hex[:8]})
    assert longest.status_code == 201, longest.text
    # An alias of one identified user into another is refused and recorded: Ada's page shows
    # her linked anonymousId and the open conflict with its Apply and Dismiss buttons. Before
    # it, what Ada did on her phone before signing in is merged into her: its row has an
    # Unmerge button.
    merged = [
        {
            "type": "track",
            "anonymousId": "anon-ada-phone",
            "event": "Flow Started",
            "properties": {"flow": "checkout"},
        },
        {"type": "alias", "userId": "u-ada", "previousId": "anon-ada-phone"},
        {"type": "alias", "userId": "u-ada", "previousId": "u-grace"},
    ]
    for message in merged:
        assert (await http.post(env.webhook_path, json=message)).status_code == 200
    pages = {
        "environments": f"{base}/admin/",
        "environment": at,
        "live": f"{at}/live",
        "deliveries": f"{at}/deliveries",
        "trace": f"{at}/trace?message_id={dead}",
        "users": f"{at}/users",
        "user": f"{at}/user?id=u-ada",
        "erase": f"{at}/user/erase?id=u-ada",
        "companies": f"{at}/companies",
        "company": f"{at}/company?id=acme",
        "events": f"{at}/events",
        "mappings": f"{at}/mappings",
        "plan": f"{at}/plan",
        "quarantine": f"{at}/quarantine",
    }
    async with chromium() as browser:
        for size, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
            page = await (await browser.new_context(viewport=viewport)).new_page()
            await page.goto(f"{base}/admin/login")
            await _check_fits(page, "login", size, shots)
            await sign_in_browser(page, base)
            for name, url in pages.items():
                await page.goto(url)
                await _check_fits(page, name, size, shots)
            await page.goto(f"{at}/user?id=u-ada")
            assert await page.locator("#identity button:has-text('Apply')").count() == 1
            assert await page.locator("#identity button:has-text('Unmerge')").count() == 1
            await page.goto(f"{at}/user/erase?id=u-ada")
            await page.fill("#confirm", "u-adaa")
            await page.click("button:has-text('Erase this user')")
            await page.locator("p.flash.error").wait_for()
            await _check_fits(page, "erase-typo", size, shots)
            await page.goto(f"{at}/live")
            stored = page.locator("#live-rows tr.stored", has_text="Flow Started").first
            # The click navigates: measure the page it lands on, not the one it leaves.
            async with page.expect_navigation():
                await stored.locator("a").click()
            await _check_fits(page, "message", size, shots)
            await page.goto(f"{at}/deliveries")
            await page.fill("#replay-filter input[name=event]", "Invoice Failed")
            await page.click("#replay-filter button:has-text('Dry run')")
            await page.wait_for_selector("#dry-run")
            await _check_fits(page, "replay-dry-run", size, shots)
            await page.goto(f"{base}/admin/")
            await page.fill("#name", f"shot-{uuid.uuid4().hex[:6]}")
            await page.click("button:has-text('Create')")
            await page.locator("#webhook-url").wait_for()
            await _check_fits(page, "webhook-url", size, shots)
            await page.goto(at)
            await page.click("button:has-text('Rotate the intake write key')")
            await page.locator("#intake-key").wait_for()
            await _check_fits(page, "intake-key", size, shots)
            await page.goto(at)
            await page.select_option("#grace", "0")
            await page.click("button:has-text('Rotate the webhook key')")
            await page.locator("#confirm-rotation").wait_for()
            await _check_fits(page, "confirm-rotation", size, shots)
            await page.goto(f"{at}/mappings")
            await page.fill("#sample-outbound", orjson.dumps(SIGNED_UP).decode())
            await page.click("#outbound button:has-text('Preview')")
            await page.locator("#preview-outbound").wait_for()
            output = await page.locator("#outbound pre.preview-output").inner_text()
            assert '"event": "Account Signed Up"' in output, output
            await _check_fits(page, "mapping-preview", size, shots)
            await page.goto(f"{base}/admin/environments/{paused.id}")
            await _check_fits(page, "breaker", size, shots)
            banner = page.locator("#delivery-paused")
            assert await banner.is_visible()
            said = await banner.inner_text()
            assert "Delivery to Segment is paused." in said and "HTTP 503" in said, said
            assert await banner.get_by_role("button", name="Resume delivery").is_visible()


SIGNED_UP = {
    "type": "track",
    "messageId": "m-1",
    "userId": "u-ada",
    "event": "Signed Up",
    "properties": {"plan": "pro", "seats": 3, "coupon": "WINTER"},
}


async def _with_mappings(admin: httpx.AsyncClient, env: harness.TestEnvironment) -> None:
    """Two outbound versions (so the page offers to go back) and an inbound one."""
    outbound = f"/api/environments/{env.id}/mappings/outbound"
    first = {"event": {"@template": "Signed Up ({{properties.plan}})"}}
    rename = {
        "event": {"@template": "Account {{event}}"},
        "properties": {
            "plan": {"@case": {"operator": "upper", "value": {"@path": "$.properties.plan"}}}
        },
        "context": {"traits": {"plan": {"@path": "$.properties.plan"}}},
    }
    for mapping in (first, rename):
        body = {"trigger": 'type = "track" and event = "Signed Up"', "mapping": mapping}
        assert (await admin.put(outbound, json=body)).status_code == 200
    inbound = {
        "trigger": 'type = "track"',
        "mapping": {"traits": {"plan": {"@path": "$.properties.plan_name"}}},
    }
    put = await admin.put(f"/api/environments/{env.id}/mappings/inbound", json=inbound)
    assert put.status_code == 200, put.text


async def _check_fits(page: Any, name: str, size: str, out: Path) -> None:
    await page.wait_for_load_state()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    if size == "laptop":
        await page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    elif name in PHONE_SHOTS:
        await page.screenshot(path=str(out / f"phone-{name}.png"), full_page=True)
    assert overflow <= 0, f"{name} is {overflow} pixels wider than a {size} screen"
