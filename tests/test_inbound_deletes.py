"""GDPR deletions as Segment really sends them, and what no redelivery or replay may undo
(issues #19.1, #19.2, #20.4, #20.8).

Segment drops every 4xx for good: a deletion request we refuse is a person never erased. So a
`delete` needs a userId and nothing else; `[]` where an object is expected is read as `{}`
(Segment's PHP library, and Segment's own deletion requests, send it); a time that does not
parse is kept as it came and the event takes another time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.config import Settings
from integration.inbound import erasure, ingest, retention
from integration.inbound.digests import InstallKey
from integration.inbound.queries import stored_message
from integration.inbound.service import validate
from integration.store.db import SessionMaker, driver_transaction
from tests import processes
from tests import segment_payloads as sp
from tests.console_support import sign_in_http
from tests.segment_payloads import Env, MakeEnv, at, iso, new_id, track
from tests.segment_sender import sign
from tests.test_segment_fidelity import NO_TRACE, seed_person, traces

JSON_HEADERS = {"Content-Type": "application/json"}

# Segment's published examples, as bytes, with the userId each erases.
PUBLISHED_DELETES = {
    "partner spec (Go time string)": (sp.PARTNER_SPEC_DELETE, "507f191e81"),
    "Refersion docs (context: [])": (sp.REFERSION_DELETE, "5678"),
}


@pytest.mark.parametrize("case", list(PUBLISHED_DELETES))
async def test_segments_published_deletion_requests_erase_the_user(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker, case: str
) -> None:
    body, user_id = PUBLISHED_DELETES[case]
    env = await make_environment()
    anon = new_id("anon")
    await seed_person(http, env, user_id, anon)

    response = await http.post(env.webhook_path, content=body, headers=JSON_HEADERS)

    assert response.status_code == 200, response.text
    assert response.json()["deleted"]["users"] == 1
    assert await traces(sessions, env, user_id, anon) == NO_TRACE


ODD_DELETES: dict[str, dict[str, Any]] = {
    "traits not an object": {"traits": "x"},
    "context a string": {"context": "web"},
    "timestamp a number": {"timestamp": 5, "sentAt": [2024]},
    "messageId an object": {"messageId": {"id": 1}},
    "a NUL in another field": {"email": "a\x00b"},
    "over 32 KB": {"note": "x" * 40_000},
}


@pytest.mark.parametrize("case", list(ODD_DELETES))
async def test_nothing_but_a_missing_user_id_refuses_a_delete(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker, case: str
) -> None:
    env = await make_environment()
    user_id, anon = new_id("ada"), new_id("anon")
    await seed_person(http, env, user_id, anon)
    body = {"type": "delete", "userId": user_id, **ODD_DELETES[case]}

    response = await http.post(env.webhook_path, json=body)

    assert response.status_code == 200, response.text
    assert await traces(sessions, env, user_id, anon) == NO_TRACE


EMPTY = {"context": [], "integrations": []}
EMPTY_ARRAYS = {
    "identify": sp.message("identify", userId="u", traits=[], **EMPTY),
    "track": sp.message("track", userId="u", event="Clicked", properties=[], **EMPTY),
    "page": sp.message("page", userId="u", name="Home", properties=[], **EMPTY),
    "screen": sp.message("screen", userId="u", name="Home", properties=[], **EMPTY),
    "group": sp.message("group", userId="u", groupId="acme", traits=[], **EMPTY),
    "alias": sp.message("alias", userId="u", previousId="anon-1", **EMPTY),
}


@pytest.mark.parametrize("kind", list(EMPTY_ARRAYS))
async def test_an_empty_array_where_an_object_is_expected_is_an_empty_object(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker, kind: str
) -> None:
    env = await make_environment()
    msg = {**EMPTY_ARRAYS[kind], "messageId": new_id(kind)}

    response = await http.post(env.webhook_path, json=msg)

    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    stored = await sp.event(sessions, env.id, msg["messageId"])
    assert stored.context == {}
    if kind in ("identify", "group"):
        assert stored.traits == {}
    if kind in ("track", "page", "screen"):
        assert stored.properties == {}


BAD_TIMES: dict[str, tuple[dict[str, Any], Any]] = {
    # case: (time fields, the time the event gets)
    "timestamp not a date": ({"timestamp": "yesterday"}, "originalTimestamp"),
    "timestamp past year 9999 in UTC": ({"timestamp": "9999-12-31T23:00:00-05:00"}, "original"),
    "a Go time string": (
        {"timestamp": None, "originalTimestamp": "2020-05-09 23:54:49.2 +0000 UTC m=+7.2"},
        "receivedAt",
    ),
    "sentAt not a date": ({"sentAt": [2024]}, "timestamp"),
}


@pytest.mark.parametrize("case", list(BAD_TIMES))
async def test_a_time_that_does_not_parse_is_kept_raw_and_the_event_takes_another(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker, case: str
) -> None:
    env = await make_environment()
    times, falls_back_to = BAD_TIMES[case]
    msg = track("ada", "Clicked", when=at(0), **{k: v for k, v in times.items() if v})
    if None in times.values():
        msg.pop("timestamp")

    response = await http.post(env.webhook_path, content=orjson.dumps(msg), headers=JSON_HEADERS)

    assert response.status_code == 200, response.text
    stored = await sp.event(sessions, env.id, msg["messageId"])
    expected = {
        "originalTimestamp": msg["originalTimestamp"],
        "original": msg["originalTimestamp"],
        "receivedAt": msg["receivedAt"],
        "timestamp": iso(at(0)),
    }[falls_back_to]
    assert iso(stored.timestamp) == expected
    # What was sent is kept as it came, in the stored message.
    kept = stored_message(stored)
    for name, value in times.items():
        if value:
            assert kept[name] == value


# Redelivery (#19.2): Segment redelivers a batch whose answer it lost.


async def snapshot(sessions: SessionMaker, env: Env, user_id: str) -> dict[str, Any]:
    """What the environment holds, as a user would look at it."""
    person = await sp.user(sessions, env.id, user_id)
    async with sessions() as s:
        audit = (
            await s.execute(
                text("SELECT count(*) FROM deletions WHERE environment_id = :e"), {"e": env.id}
            )
        ).scalar_one()
    return {
        "counts": await sp.counts(sessions, env.id),
        "traits": person.traits if person else None,
        "events": sorted(e.message_id for e in await sp.events(sessions, env.id)),
        "audit rows": audit,
    }


def delete_of(user_id: str) -> dict[str, Any]:
    return {"type": "delete", "userId": user_id, "messageId": new_id("delete")}


@pytest.mark.parametrize("order", ["delete last", "delete first"])
async def test_a_redelivered_batch_changes_nothing(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker, order: str
) -> None:
    env = await make_environment()
    user_id = new_id("ada")
    person = [sp.identify(user_id, {"plan": "pro"}), track(user_id, "Clicked")]
    batch = (
        [*person, delete_of(user_id)] if order == "delete last" else [delete_of(user_id), *person]
    )
    body = orjson.dumps(batch)

    first = await http.post(env.webhook_path, content=body, headers=JSON_HEADERS)
    assert first.status_code == 200, first.text
    before = await snapshot(sessions, env, user_id)
    again = await http.post(env.webhook_path, content=body, headers=JSON_HEADERS)

    assert again.status_code == 200, again.text
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 3)
    assert not any(again.json()["deleted"].values())
    assert await snapshot(sessions, env, user_id) == before
    if order == "delete last":
        assert before["counts"] == sp.NOTHING  # erased, and it stays erased
    else:
        assert before["traits"] == {"plan": "pro"}  # the fresh profile after the delete stays


async def test_redelivered_messages_of_an_erased_person_one_by_one_change_nothing(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("ada")
    batch = [sp.identify(user_id, {"plan": "pro"}), track(user_id, "Clicked"), delete_of(user_id)]
    assert (await http.post(env.webhook_path, json=batch)).status_code == 200

    for message in batch:
        response = await http.post(env.webhook_path, json=message)
        assert response.status_code == 200, response.text
        assert (response.json()["stored"], response.json()["duplicates"]) == (0, 1)

    assert await sp.counts(sessions, env.id) == sp.NOTHING


async def test_an_admin_erasure_is_not_undone_by_segment_redelivering_the_person(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    user_id, anon = new_id("ada"), new_id("anon")
    seeded = await seed_person(http, env, user_id, anon)
    assert (await admin.delete(f"/api/environments/{env.id}/users/{user_id}")).status_code == 200

    response = await http.post(env.webhook_path, json=seeded)

    assert response.status_code == 200, response.text
    assert (response.json()["stored"], response.json()["duplicates"]) == (0, len(seeded))
    assert await traces(sessions, env, user_id, anon) == NO_TRACE


async def test_the_digest_postgres_keeps_is_hmac_sha256_under_the_install_key(
    sessions: SessionMaker, settings: Settings
) -> None:
    key = InstallKey.of(settings)
    ipad, opad, *_ = key.sql_args()
    async with sessions() as s:
        made = (
            await s.execute(
                text("SELECT keyed_digest(:i, :o, :v)"), {"i": ipad, "o": opad, "v": "ajs-ü-1"}
            )
        ).scalar_one()
    assert made == hmac.new(key.current, "ajs-ü-1".encode(), hashlib.sha256).digest()


# What a signature vouches for (#20.4): an Actions batch is signed over its first event only.

SECRET = "whsec-deletes-shared-secret"


def array(*parts: bytes) -> bytes:
    """A JSON array of these elements' bytes, as a sender (or an attacker) writes it."""
    return b"[" + b",".join(parts) + b"]"


async def post_signed(
    http: httpx.AsyncClient, env: Env, body: bytes, signed: bytes
) -> httpx.Response:
    headers = {**JSON_HEADERS, "X-Signature": sign(SECRET, signed)}
    return await http.post(env.webhook_path, content=body, headers=headers)


async def test_a_captured_signature_replayed_with_a_new_tail_stores_and_erases_nothing(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    victim, anon = new_id("victim"), new_id("anon")
    await seed_person(http, env, victim, anon, SECRET)
    captured = orjson.dumps(track(new_id("someone"), "Clicked"))
    assert (await post_signed(http, env, captured, captured)).status_code == 200
    before = await snapshot(sessions, env, victim)

    forged = orjson.dumps(sp.identify(victim, {"email": "attacker@evil.test"}))
    body = array(captured, forged, orjson.dumps(delete_of(victim)))
    response = await post_signed(http, env, body, captured)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["stored"], answer["duplicates"]) == (0, 1)
    assert [(r["index"], r["error"]) for r in answer["rejected"]] == [
        (1, "replayed_signature"),
        (2, "unsigned_delete"),
    ]
    assert await snapshot(sessions, env, victim) == before
    assert await traces(sessions, env, victim, anon) != NO_TRACE  # the victim is not erased


async def test_a_delete_in_a_first_event_signed_batch_counts_only_as_the_signed_event(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    victim, anon = new_id("victim"), new_id("anon")
    await seed_person(http, env, victim, anon, SECRET)
    fresh = orjson.dumps(track(new_id("someone"), "Clicked"))

    unsigned = await post_signed(http, env, array(fresh, orjson.dumps(delete_of(victim))), fresh)
    assert unsigned.status_code == 200, unsigned.text
    assert unsigned.json()["stored"] == 1
    assert [r["error"] for r in unsigned.json()["rejected"]] == ["unsigned_delete"]
    assert "deleted" not in unsigned.json()
    assert await sp.user(sessions, env.id, victim) is not None

    delete = orjson.dumps(delete_of(victim))
    signed = await post_signed(http, env, array(delete, fresh), delete)
    assert signed.status_code == 200, signed.text
    assert signed.json()["deleted"]["users"] == 1
    assert await traces(sessions, env, victim, anon) == NO_TRACE


async def test_a_whole_body_signature_covers_every_delete_in_the_batch(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    victim, anon = new_id("victim"), new_id("anon")
    await seed_person(http, env, victim, anon, SECRET)
    body = array(orjson.dumps(track(new_id("someone"), "Clicked")), orjson.dumps(delete_of(victim)))

    response = await post_signed(http, env, body, body)

    assert response.status_code == 200, response.text
    assert response.json()["deleted"]["users"] == 1
    assert await traces(sessions, env, victim, anon) == NO_TRACE


async def test_a_first_event_signed_batch_redelivered_whole_is_acknowledged(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    user_id = new_id("ada")
    parts = [orjson.dumps(track(user_id, "Clicked")) for _ in range(3)]
    parts.append(orjson.dumps(sp.identify(user_id, {"plan": "pro"})))
    body = array(*parts)

    first = await post_signed(http, env, body, parts[0])
    again = await post_signed(http, env, body, parts[0])

    assert (first.json()["stored"], first.json()["rejected"]) == (4, [])
    assert again.status_code == 200, again.text
    assert (again.json()["stored"], again.json()["duplicates"], again.json()["rejected"]) == (
        0,
        4,
        [],
    )


# What an erasure leaves behind (#20.8): the live view's rings, the audit.


@pytest.fixture
async def console(server: processes.Process) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await sign_in_http(client)
        yield client


async def live_rows(console: httpx.AsyncClient, env: Env) -> str:
    response = await console.get(f"/admin/environments/{env.id}/live/rows")
    assert response.status_code == 200, response.text
    return response.text


async def leave_traces_in_the_live_view(
    http: httpx.AsyncClient, env: Env, user_id: str, email: str
) -> None:
    """A refused message of the person (kept whole, email and all) and a redelivered one."""
    refused = {"type": "track", "userId": user_id, "properties": {"email": email}}
    assert (await http.post(env.webhook_path, json=refused)).status_code == 400
    known = sp.identify(user_id, {"email": email})
    for _ in range(2):
        assert (await http.post(env.webhook_path, json=known)).status_code == 200


@pytest.mark.parametrize("held", [True, False], ids=["stored person", "refused messages only"])
async def test_a_segment_delete_clears_the_person_from_the_live_view(
    http: httpx.AsyncClient, console: httpx.AsyncClient, make_environment: MakeEnv, held: bool
) -> None:
    env = await make_environment()
    user_id, email, bob = new_id("ada"), f"{new_id('ada')}@acme.test", new_id("bob")
    if held:
        await leave_traces_in_the_live_view(http, env, user_id, email)
    else:
        refused = {"type": "track", "userId": user_id, "properties": {"email": email}}
        assert (await http.post(env.webhook_path, json=refused)).status_code == 400
    bob_refused = {"type": "track", "userId": bob, "properties": {"n": 1}}
    assert (await http.post(env.webhook_path, json=bob_refused)).status_code == 400
    before = await live_rows(console, env)
    assert user_id in before and email in before

    assert (await http.post(env.webhook_path, json=delete_of(user_id))).status_code == 200

    after = await live_rows(console, env)
    assert user_id not in after and email not in after
    assert bob in after  # only the erased person goes


async def test_an_erasure_by_another_process_clears_the_servers_live_view(
    http: httpx.AsyncClient,
    console: httpx.AsyncClient,
    make_environment: MakeEnv,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    env = await make_environment()
    user_id, email = new_id("ada"), f"{new_id('ada')}@acme.test"
    await leave_traces_in_the_live_view(http, env, user_id, email)
    assert email in await live_rows(console, env)

    # This test's process erases (as the CLI would): the server hears it on `users_erased`.
    await erasure.erase_by_admin(engine, env.id, user_id, InstallKey.of(settings))

    for _ in range(50):
        rows = await live_rows(console, env)
        if email not in rows:
            break
        await asyncio.sleep(0.1)
    assert user_id not in rows and email not in rows


async def test_deletes_of_unknown_users_are_counted_not_each_audited(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    known = new_id("ada")
    await http.post(env.webhook_path, json=sp.identify(known, {"plan": "pro"}))
    flood = [delete_of(new_id("nobody")) for _ in range(3999)]

    response = await http.post(env.webhook_path, json=[*flood, delete_of(known)])

    assert response.status_code == 200, response.text
    listed = (await admin.get(f"/api/environments/{env.id}/deletions")).json()
    assert len(listed["items"]) == 1  # the one person who was there
    assert listed["items"][0]["removed"]["users"] == 1
    assert listed["unmatched"]["count"] == 3999
    assert listed["unmatched"]["last_at"] is not None


async def test_erased_messages_stay_erased_across_a_secret_key_rotation(
    engine: AsyncEngine, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    """Digests made under SECRET_KEY_PREVIOUS are recognised while it is set; once it is
    removed they are not (SECURITY.md: keep it for a day)."""
    env = await make_environment()
    old, new = InstallKey(b"o" * 32), InstallKey(b"n" * 32)
    user_id = new_id("ada")
    person = validate([sp.identify(user_id, {"plan": "pro"}), track(user_id, "Clicked")])
    async with driver_transaction(engine) as pg:
        await ingest.store(pg, env.id, "company_id", person.messages, old)
        await erasure.erase_user(pg, env.id, user_id, old, requested_by=erasure.ADMIN)

    rotating = InstallKey(new.current, previous=old.current)
    async with driver_transaction(engine) as pg:
        assert (
            await ingest.store(pg, env.id, "company_id", person.messages, rotating)
        ).new == set()
    assert await sp.counts(sessions, env.id) == sp.NOTHING

    async with driver_transaction(engine) as pg:
        again = await ingest.store(pg, env.id, "company_id", person.messages, new)
    assert len(again.new) == 2  # the previous key gone: its digests match nothing


async def test_the_audit_row_keeps_segments_request_id_but_no_digest_of_the_content(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    ada, bob = new_id("ada"), new_id("bob")
    for user_id in (ada, bob):
        await http.post(env.webhook_path, json=sp.identify(user_id, {"plan": "pro"}))
    # Without a messageId, the one derived is a plain SHA-256 of the content (the userId in it):
    # a guess could be tested against it, so the audit does not keep it.
    await http.post(env.webhook_path, json={"type": "delete", "userId": ada})
    segments = sp.PARTNER_SPEC_DELETE.replace(b"507f191e81", bob.encode())
    await http.post(env.webhook_path, content=segments, headers=JSON_HEADERS)
    async with sessions() as s:
        kept = (
            (
                await s.execute(
                    text("SELECT message_id FROM deletions WHERE environment_id = :e ORDER BY id"),
                    {"e": env.id},
                )
            )
            .scalars()
            .all()
        )
    assert kept == [None, "delete-reg-6543321::job-2-P0OJ3CTID1"]


async def test_retention_forgets_the_digests_of_messages_erased_before_its_window(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    old, recent = new_id("old"), new_id("recent")
    for user_id in (old, recent):
        await http.post(env.webhook_path, json=[sp.identify(user_id, {}), delete_of(user_id)])
    async with sessions() as s:
        await s.execute(
            text(
                "UPDATE erased_messages SET created_at = now() - interval '31 days'"
                " WHERE environment_id = :e AND digest IN (SELECT digest FROM erased_messages"
                " WHERE environment_id = :e ORDER BY created_at LIMIT 2)"
            ),
            {"e": env.id},
        )
        await s.commit()

    await retention.expire(sessions, env.id, 30)

    async with sessions() as s:
        left = (
            await s.execute(
                text("SELECT count(*) FROM erased_messages WHERE environment_id = :e"),
                {"e": env.id},
            )
        ).scalar_one()
    assert left == 2  # the recent person's identify and delete
