"""Console pages over HTTP against the real server: what the live view records, errors shown
as pages, confirmations, and keyset pages through a list."""

from __future__ import annotations

import html
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests import harness, processes
from tests import segment_payloads as sp
from tests.console_support import sign_in_http
from tests.segment_sender import sign

MakeEnvironment = Callable[..., Awaitable[harness.TestEnvironment]]


@pytest.fixture
async def console(server: processes.Process) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client, await sign_in_http(client)


async def test_the_live_view_shows_stored_duplicate_and_refused_messages(
    console: tuple[httpx.AsyncClient, str],
    http: httpx.AsyncClient,
    make_environment: MakeEnvironment,
) -> None:
    client, _ = console
    env = await make_environment("live", webhook_signing_secret="s3cret-signing")
    body = b'{"type":"track","userId":"u1","event":"Signed Up","messageId":"m-1"}'
    signed = {"X-Signature": sign("s3cret-signing", body), "Content-Type": "application/json"}
    assert (await http.post(env.webhook_path, content=body, headers=signed)).status_code == 200
    assert (await http.post(env.webhook_path, content=body, headers=signed)).status_code == 200
    unsigned = await http.post(env.webhook_path, content=body)
    assert unsigned.status_code == 401
    bad = b'[{"type":"track","userId":"u2"},{"type":"identify"}]'
    assert (
        await http.post(
            env.webhook_path, content=bad, headers={"X-Signature": sign("s3cret-signing", bad)}
        )
    ).status_code == 400
    rows = (await client.get(f"/admin/environments/{env.id}/live/rows")).text
    assert rows.count('class="stored"') == 1 and rows.count('class="duplicate"') == 1
    assert "invalid_signature" in rows and "missing_event" in rows and "missing_identity" in rows
    # A refused message opens to what was sent; a duplicate to its stored original.
    assert "<details>" in rows and "&#34;userId&#34;: &#34;u2&#34;" in rows
    original = await client.get(f"/admin/environments/{env.id}/message?id=m-1")
    assert original.status_code == 303
    stored = await client.get(original.headers["location"])
    assert "Signed Up" in stored.text and "m-1" in stored.text


async def test_errors_are_pages_and_erasure_needs_the_id_typed_again(
    console: tuple[httpx.AsyncClient, str],
    http: httpx.AsyncClient,
    make_environment: MakeEnvironment,
) -> None:
    client, csrf = console
    missing = await client.get(f"/admin/environments/{uuid.uuid4()}/users")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "no such environment" in missing.text
    env = await make_environment("erase")
    message = {"type": "identify", "userId": "u-keep", "traits": {"email": "k@example.com"}}
    assert (await http.post(env.webhook_path, json=message)).status_code == 200
    wrong = await client.post(
        f"/admin/environments/{env.id}/user/erase",
        data={"csrf": csrf, "id": "u-keep", "confirm": "u-kee"},
    )
    # The form comes back with what was typed and what is wrong with it.
    assert wrong.status_code == 400
    assert alert(wrong.text) == (
        "“u-kee” does not match: it is not this user&#39;s userId. Type the userId exactly."
        " Nothing was erased."
    )
    assert 'name="confirm"' in wrong.text and 'value="u-kee"' in wrong.text
    spaced = await client.post(
        f"/admin/environments/{env.id}/user/erase",
        data={"csrf": csrf, "id": "u-keep", "confirm": "u-keep "},
    )
    assert "it has spaces before or after it" in alert(spaced.text)
    assert 'value="u-keep "' in spaced.text
    assert (await client.get(f"/admin/environments/{env.id}/user?id=u-keep")).status_code == 200
    unknown = await client.post(
        f"/admin/environments/{env.id}/user/erase",
        data={"csrf": csrf, "id": "nobody", "confirm": "nobody"},
    )
    assert unknown.status_code == 404
    bad_replay = await client.post(
        f"/admin/environments/{env.id}/deliveries/replay", data={"csrf": csrf, "id": "x"}
    )
    assert bad_replay.status_code == 400


async def test_settings_errors_come_back_on_the_page(
    console: tuple[httpx.AsyncClient, str], make_environment: MakeEnvironment
) -> None:
    client, csrf = console
    env = await make_environment("settings")
    url = f"/admin/environments/{env.id}/settings"
    stream = await client.post(url, data={"csrf": csrf, "what": "stream", "stream": "on"})
    # In the console's own words: its label for the setting, not the REST API's field name.
    assert stream.status_code == 400 and "Set Segment write key before" in stream.text
    assert "segment_write_key" not in stream.text
    host = await client.post(
        url,
        data={"csrf": csrf, "what": "segment", "region": "custom", "custom_url": "http://10.1.2.3"},
    )
    assert host.status_code == 400 and "SEGMENT_API_ALLOWLIST" in host.text
    prop = await client.post(url, data={"csrf": csrf, "what": "company", "company_property": ""})
    assert prop.status_code == 400
    assert "Company property must be" in prop.text and "company_property must" not in prop.text


def alert(html: str) -> str:
    """The error a page shows."""
    return html.split('role="alert">', 1)[1].split("</p>", 1)[0]


def alert_ok(html: str) -> str:
    """What a page says was done."""
    return html.split('class="flash ok" role="status">', 1)[1].split("</p>", 1)[0]


async def test_every_setting_of_the_api_is_in_the_console(
    console: tuple[httpx.AsyncClient, str],
    make_environment: MakeEnvironment,
    admin: httpx.AsyncClient,
) -> None:
    """Store outbound events, browser origins (CORS) and retention, besides the settings the
    page always had; refusals in the console's words, with what was typed kept."""
    client, csrf = console
    env = await make_environment("all-settings")
    url = f"/admin/environments/{env.id}/settings"
    api = f"/api/environments/{env.id}"

    async def post(what: str, **fields: str) -> httpx.Response:
        return await client.post(url, data={"csrf": csrf, "what": what, **fields})

    assert (await post("copies", store_outbound_events="on")).status_code == 303
    origins = "https://app.example.com\r\nhttps://admin.example.com:8443\r\n"
    assert (await post("cors", cors_origins=origins)).status_code == 303
    assert (await post("retention", retention_days="30")).status_code == 303
    read = (await admin.get(api)).json()
    assert read["store_outbound_events"] is True
    assert read["cors_allowed_origins"] == [
        "https://app.example.com",
        "https://admin.example.com:8443",
    ]
    assert read["retention_days"] == 30
    page = (await client.get(f"/admin/environments/{env.id}")).text
    assert "https://admin.example.com:8443" in page and 'value="30"' in page

    wrong = await post("cors", cors_origins="app.example.com")
    assert wrong.status_code == 400 and "Browser origins: each origin" in wrong.text
    assert "cors_allowed_origins" not in alert(wrong.text)
    assert ">app.example.com</textarea>" in wrong.text
    days = await post("retention", retention_days="a month")
    assert days.status_code == 400
    assert alert(days.text).startswith("Keep events for (days) must be a whole number")
    assert 'value="a month"' in days.text
    assert (await post("copies")).status_code == 303  # the box unticked
    assert (await post("retention", retention_days="")).status_code == 303  # forever
    read = (await admin.get(api)).json()
    assert (read["store_outbound_events"], read["retention_days"]) == (False, None)
    assert read["cors_allowed_origins"] == [
        "https://app.example.com",
        "https://admin.example.com:8443",
    ]


async def test_lists_page_through_with_a_cursor_and_search_by_email(
    console: tuple[httpx.AsyncClient, str],
    http: httpx.AsyncClient,
    make_environment: MakeEnvironment,
) -> None:
    client, _ = console
    env = await make_environment("pages")
    people = [
        {"type": "identify", "userId": f"p-{i:03}", "traits": {"email": f"p{i}@example.com"}}
        for i in range(60)
    ]
    assert (await http.post(env.webhook_path, json=people)).status_code == 200
    first = await client.get(f"/admin/environments/{env.id}/users")
    assert first.text.count("/user?id=p-") == 50 and "Next page" in first.text
    later = first.text.split('href="?q=&amp;before=')[1].split('"')[0]
    second = await client.get(f"/admin/environments/{env.id}/users?before={later}")
    assert second.text.count("/user?id=p-") == 10 and "Next page" not in second.text
    found = await client.get(f"/admin/environments/{env.id}/users?q=p7%40example.com")
    assert found.text.count("/user?id=p-") == 1 and "p-007" in found.text
    events = await client.get(f"/admin/environments/{env.id}/events?type=identify")
    assert events.text.count("/events/") == 50 and "Next page" in events.text
    cursor = events.text.split("before=")[-1].split('"')[0].replace("&amp;", "&")
    rest = await client.get(f"/admin/environments/{env.id}/events?type=identify&before={cursor}")
    assert rest.status_code == 200 and rest.text.count("/events/") == 10


async def test_ending_earlier_intake_write_keys_early_takes_a_confirmation(
    console: tuple[httpx.AsyncClient, str],
    make_environment: MakeEnvironment,
    http: httpx.AsyncClient,
) -> None:
    client, csrf = console
    env = await make_environment("intake-confirm")
    url = f"/admin/environments/{env.id}/rotate-intake-key"
    graced = await client.post(url, data={"csrf": csrf, "grace_seconds": "86400"})
    assert graced.status_code == 200 and "keeps working until" in graced.text
    second = graced.text.split('id="intake-key" class="mono" value="')[1].split('"')[0]

    async def status(key: str) -> int:
        answer = await http.post("/v1/track", json={"userId": "u", "event": "E"}, auth=(key, ""))
        return answer.status_code

    asked = await client.post(url, data={"csrf": csrf, "grace_seconds": "0"})
    assert asked.status_code == 409
    assert "End 1 earlier intake write key sooner than promised?" in asked.text
    assert f"…{env.source_write_key[-4:]}" in asked.text
    assert env.source_write_key not in asked.text
    assert 'name="end_previous_keys_early" value="1"' in asked.text
    assert [await status(k) for k in (env.source_write_key, second)] == [200, 200]

    confirmed = await client.post(
        url, data={"csrf": csrf, "grace_seconds": "0", "end_previous_keys_early": "1"}
    )
    assert confirmed.status_code == 200
    assert "The previous intake write key no longer works." in confirmed.text
    newest = confirmed.text.split('id="intake-key" class="mono" value="')[1].split('"')[0]
    statuses = [await status(k) for k in (env.source_write_key, second, newest)]
    assert statuses == [401, 401, 200]


async def test_mappings_are_saved_reverted_promoted_and_previewed_through_the_console(
    console: tuple[httpx.AsyncClient, str],
    make_environment: MakeEnvironment,
    admin: httpx.AsyncClient,
) -> None:
    client, csrf = console
    staging, production = await make_environment("staging"), await make_environment("production")
    base = f"/admin/environments/{staging.id}/mappings"
    api = f"/api/environments/{staging.id}/mappings/outbound"

    async def post(tail: str = "", **fields: str) -> httpx.Response:
        return await client.post(f"{base}/outbound{tail}", data={"csrf": csrf, **fields})

    rename = '{"event": {"@template": "Account {{event}}"}}'
    assert (await post(trigger='type = "track"', mapping=rename)).status_code == 303
    assert (await post(trigger="", mapping='{"event": "Other"}')).status_code == 303
    assert (await admin.get(api)).json()["version"] == 2
    # Refused as the API refuses, naming the place; what was typed stays in the form.
    typo = '{"event": {"@pth": "$.event"}}'
    refused = await post(trigger="", mapping=typo)
    assert refused.status_code == 422 and "mapping.event.@pth" in alert(refused.text)
    assert "@pth" in refused.text.split('id="mapping-outbound"', 1)[1].split("</textarea>", 1)[0]
    fixed = await post(trigger="", mapping='{"messageId": "x"}')
    assert fixed.status_code == 422 and "mapping.messageId" in alert(fixed.text)

    assert (await post("/revert")).status_code == 303
    current = (await admin.get(api)).json()
    assert (current["version"], current["mapping"], current["created_by"]) == (
        3,
        {"event": {"@template": "Account {{event}}"}},
        "console",
    )
    empty = (await client.get(f"/admin/environments/{production.id}/mappings")).text
    assert empty.count("No mapping yet: messages go as they come.") == 2
    assert (await post("/promote", to=str(production.id))).status_code == 303
    promoted = (await admin.get(f"/api/environments/{production.id}/mappings/outbound")).json()
    assert promoted["mapping"] == current["mapping"]

    sample = '{"type": "track", "userId": "u-1", "event": "Signed Up"}'
    shown = await post("/preview", trigger='type = "track"', mapping=rename, sample=sample)
    assert shown.status_code == 200
    output = shown.text.split('class="preview-output">', 1)[1].split("</pre>", 1)[0]
    assert '"event": "Account Signed Up"' in html.unescape(output), output
    page = (await client.get(base)).text
    assert "Go back to version 2" in page and "Promote version 3 to" in page


async def test_a_users_page_shows_their_identity_and_resolves_its_conflicts(
    console: tuple[httpx.AsyncClient, str],
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnvironment,
) -> None:
    """Linked ids and refused merges on the user's page; Apply and Dismiss there do what the
    REST API's do, by the console."""
    client, csrf = console
    env = await make_environment("identity")
    ada, bob, cy, anon = (sp.new_id(name) for name in ("ada", "bob", "cy", "anon"))
    messages = [
        sp.identify(ada, {"plan": "pro"}, anonymousId=anon, when=sp.at(0)),
        sp.identify(bob, {"plan": "free"}, when=sp.at(1)),
        sp.identify(cy, {"plan": "free"}, when=sp.at(2)),
        sp.alias(ada, bob, when=sp.at(3)),  # two identified users: refused, recorded
        sp.alias(ada, cy, when=sp.at(4)),
    ]
    for message in messages:
        assert (await http.post(env.webhook_path, json=message)).status_code == 200
    listed = (await admin.get(f"/api/environments/{env.id}/identity-conflicts")).json()["items"]
    of = {c["from_id"]: c["id"] for c in listed}
    page = await client.get(f"/admin/environments/{env.id}/user", params={"id": ada})
    identity = page.text.split('id="identity"', 1)[1].split("</section>", 1)[0]
    assert anon in identity and "first_link" in identity
    assert bob in identity and cy in identity and identity.count("identified merge") == 2
    for conflict_id in of.values():
        for verb in ("apply", "dismiss"):
            assert f"/identity-conflicts/{conflict_id}/{verb}" in identity

    def resolve(conflict_id: int, verb: str, **token: str) -> Awaitable[httpx.Response]:
        url = f"/admin/environments/{env.id}/identity-conflicts/{conflict_id}/{verb}"
        return client.post(url, data={"id": ada, **token})

    refused = await resolve(of[bob], "apply")
    assert refused.status_code == 403
    applied = await resolve(of[bob], "apply", csrf=csrf)
    assert applied.status_code == 303
    shown = await client.get(applied.headers["location"])
    assert "Conflict applied" in shown.text and f">{ada}</h2>" in shown.text
    api = (await admin.get(f"/api/environments/{env.id}/users/{ada}/identity")).json()
    [merged] = [m for m in api["merges_in"] if m["kind"] == "merge"]
    assert (merged["from_id"], merged["rule"]) == (bob, "operator")
    states = {c["from_id"]: (c["state"], c["resolved_by"]) for c in api["conflicts"]}
    assert states == {bob: ("applied", "console"), cy: ("open", None)}

    dismissed = await resolve(of[cy], "dismiss", csrf=csrf)
    assert dismissed.status_code == 303
    assert "Conflict dismissed" in (await client.get(dismissed.headers["location"])).text
    api = (await admin.get(f"/api/environments/{env.id}/users/{ada}/identity")).json()
    assert {c["from_id"]: c["state"] for c in api["conflicts"]} == {
        bob: "applied",
        cy: "dismissed",
    }
    assert [m["from_id"] for m in api["merges_in"] if m["kind"] == "merge"] == [bob]
    # A dismissed conflict cannot be applied: the console's error page, not a server error.
    late = await resolve(of[cy], "apply", csrf=csrf)
    assert late.status_code == 409 and late.headers["content-type"].startswith("text/html")
    assert "this conflict was dismissed; it cannot be applied" in alert(late.text)


async def test_a_users_page_unmerges_a_merge_and_shows_a_refusal_as_its_error(
    console: tuple[httpx.AsyncClient, str],
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnvironment,
) -> None:
    """Each merge into a user has an Unmerge button; it undoes the merge as the REST API's does,
    by the console, and says what went back. Unmerging from a user merged into another since is
    refused, on the console's error page."""
    client, csrf = console
    env = await make_environment("unmerge", allow_identified_merges=True)
    ada, bob, cy = (sp.new_id(name) for name in ("ada", "bob", "cy"))
    messages = [
        sp.identify(ada, {"plan": "pro"}, when=sp.at(0)),
        sp.identify(bob, {"plan": "free"}, when=sp.at(1)),
        sp.track(bob, "Left", when=sp.at(2)),
        sp.identify(cy, {"plan": "team"}, when=sp.at(3)),
        sp.alias(ada, bob, when=sp.at(4)),  # Bob merged into Ada
        sp.alias(cy, ada, when=sp.at(5)),  # then Ada into Cy
    ]
    for message in messages:
        assert (await http.post(env.webhook_path, json=message)).status_code == 200

    def unmerge(user_id: str, merged_id: str, **token: str) -> Awaitable[httpx.Response]:
        form = {"id": user_id, "merged_id": merged_id, **token}
        return client.post(f"/admin/environments/{env.id}/user/unmerge", data=form)

    cy_page = await client.get(f"/admin/environments/{env.id}/user", params={"id": cy})
    identity = cy_page.text.split('id="identity"', 1)[1].split("</section>", 1)[0]
    assert identity.count(">Unmerge</button>") == 1 and f'value="{ada}"' in identity
    assert (await unmerge(ada, bob)).status_code == 403  # no CSRF token
    refused = await unmerge(ada, bob, csrf=csrf)
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("text/html")
    assert f"this user was merged into {cy!r} since; unmerge that first" in html.unescape(
        alert(refused.text)
    )
    missing = await unmerge(ada, cy, csrf=csrf)
    assert missing.status_code == 404 and "no merge of" in html.unescape(alert(missing.text))

    for user_id, merged_id in ((cy, ada), (ada, bob)):
        done = await unmerge(user_id, merged_id, csrf=csrf)
        assert done.status_code == 303, done.text
        shown = (await client.get(done.headers["location"])).text
        assert 'Merge of <a class="mono" href=' in shown and "by console" in shown
    said = alert_ok(shown)
    assert "2 events, 0 anonymous ids, 1 trait and 0 companies went back to it" in said, said
    assert ">Unmerge</button>" not in shown and "undone<br>" in shown
    api = (await admin.get(f"/api/environments/{env.id}/users/{ada}/identity")).json()
    [merged] = [m for m in api["merges_in"] if m["kind"] == "merge"]
    assert (merged["from_id"], merged["undone_by"]) == (bob, "console")
    back = (await admin.get(f"/api/environments/{env.id}/users/{bob}")).json()
    events = [(e["type"], e["name"]) for e in back["recent_events"]]
    assert back["traits"]["plan"] == "free" and events == [("track", "Left"), ("identify", None)]
    # Undone already: the same answer again, nothing changed.
    again = await unmerge(ada, bob, csrf=csrf)
    assert again.status_code == 303
    assert "by console" in alert_ok((await client.get(again.headers["location"])).text)
