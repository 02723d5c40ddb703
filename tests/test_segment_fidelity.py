"""The webhook against what Segment really sends (segmentio/action-destinations `webhook`, and
Segment's docs for the classic Webhooks destination), driven by a Segment-like sender that keeps
Segment's retry rules: Actions batches signed over their first event only, PUT and PATCH,
4,000-event requests, and GDPR deletes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, text

from integration.config import Settings
from integration.inbound.digests import InstallKey
from integration.store.db import SessionMaker
from integration.store.models import Deletion
from tests import segment_payloads as sp
from tests.conftest import ADMIN_TOKEN
from tests.processes import ROOT
from tests.segment_payloads import Env, MakeEnv, at, group, identify, new_id, page, track
from tests.segment_sender import SegmentSender, js_number, js_stringify, sign

SECRET = "whsec-actions-shared-secret"


def sender(http: httpx.AsyncClient, env: Env, **options: Any) -> SegmentSender:
    return SegmentSender(http, env.webhook_path, **options)


def tracks(user_id: str, n: int) -> list[dict[str, Any]]:
    return [track(user_id, "Report Viewed", {"n": i, "company_id": "acme"}) for i in range(n)]


async def stored_ids(sessions: SessionMaker, env: Env) -> set[str]:
    return {e.message_id for e in await sp.events(sessions, env.id)}


# Webhooks (Actions): batching, a shared secret, the method the user picked


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("batch_size", [1, 100])
async def test_actions_batches_with_a_shared_secret_lose_nothing(
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
    method: str,
    batch_size: int,
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    messages = tracks(new_id("user"), 2 * batch_size)
    relay = sender(http, env, method=method, secret=SECRET, batch_size=batch_size)

    answers = await relay.send(messages)

    assert [a.status for a in answers] == [200] * 2
    assert all(a.body["stored"] == batch_size for a in answers)
    assert relay.dropped == [] and relay.retries == 0
    assert await stored_ids(sessions, env) == {m["messageId"] for m in messages}


async def test_a_4000_event_actions_request_is_stored_well_inside_segments_timeout(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    user_id = new_id("user")
    padding = "x" * 500  # about 1 KB per event, as Segment's are with their context
    messages = [
        track(user_id, "Report Viewed", {"n": i, "company_id": f"c{i % 50}", "pad": padding})
        for i in range(4000)
    ]
    relay = sender(http, env, method="PUT", secret=SECRET, batch_size=4000)
    _, body, _ = relay.request(messages)
    assert len(body) > 3_500_000

    loop = asyncio.get_running_loop()
    started = loop.time()
    [answer] = await relay.send(messages)
    elapsed = loop.time() - started

    assert answer.status == 200, answer.body
    assert answer.body == {"stored": 4000, "duplicates": 0, "rejected": []}
    assert elapsed < 5, f"took {elapsed:.1f} s; Segment gives up after 10 s"
    assert len(await stored_ids(sessions, env)) == 4000
    assert len(await sp.memberships(sessions, env.id)) == 50


async def test_more_than_4000_messages_in_one_request_is_413(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    messages = [
        {"type": "track", "userId": "u", "event": "E", "messageId": str(i)} for i in range(4001)
    ]
    body = orjson.dumps(messages)
    response = await http.put(env.webhook_path, content=body)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_many_messages"
    assert "4000" in response.json()["detail"]
    assert await sp.counts(sessions, env.id) == sp.NOTHING


async def test_a_signature_over_the_wrong_event_or_with_the_wrong_secret_is_401(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    batch = tracks(new_id("user"), 3)
    body = js_stringify(batch)
    cases = {
        "wrong secret": sign("not-the-secret", js_stringify(batch[0])),
        "second event": sign(SECRET, js_stringify(batch[1])),
        "first event re-encoded differently": sign(SECRET, json.dumps(batch[0]).encode()),
        "missing": "",
    }
    for case, signature in cases.items():
        headers = {"Content-Type": "application/json", "X-Signature": signature}
        response = await http.put(env.webhook_path, content=body, headers=headers)
        assert response.status_code == 401, case
        assert response.json()["error"] == "invalid_signature", case
    # Segment drops a 401 for good: the sender counts the whole batch as lost.
    relay = sender(http, env, method="PUT", secret="not-the-secret")
    [answer] = await relay.send(batch)
    assert answer.status == 401
    assert relay.dropped == batch
    assert await sp.counts(sessions, env.id) == sp.NOTHING


async def test_a_signature_over_the_whole_batch_body_is_accepted_too(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    """Signing the whole body is the fix discussed upstream: both forms are accepted."""
    env = await make_environment(webhook_signing_secret=SECRET)
    batch = tracks(new_id("user"), 3)
    body = js_stringify(batch)
    headers = {"Content-Type": "application/json", "X-Signature": sign(SECRET, body)}
    response = await http.patch(env.webhook_path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert await stored_ids(sessions, env) == {m["messageId"] for m in batch}


TRICKY_FIRST_EVENT: dict[str, Any] = {
    "name": "Zoë 日本語 🚀",
    "quote": 'She said "hi" \\ and left',
    "controls": "tab\there\nnew line\u0001\u001f",
    "separators": "line\u2028paragraph\u2029",
    "slash": "a/b</script>",
    "numbers": [1.0, 0.1, 1e21, 1e-7, 123456789012345678, -0.0, 2.5e-5, 100],
}


def test_the_sender_writes_json_as_javascript_does() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    values = TRICKY_FIRST_EVENT["numbers"] + [5e-324, 1.7976931348623157e308, 0.000001234]
    script = "process.stdout.write(JSON.stringify(JSON.parse(require('fs').readFileSync(0))))"
    data = orjson.dumps({**TRICKY_FIRST_EVENT, "more": values})
    node = subprocess.run(["node", "-e", script], input=data, capture_output=True, check=True)
    assert js_stringify(orjson.loads(data)) == node.stdout
    assert [js_number(v) for v in (1.0, 1e21, 1e-7)] == ["1", "1e+21", "1e-7"]


async def test_first_event_signatures_made_by_node_hold_for_non_ascii_and_escapes(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    """Node's own JSON.stringify and createHmac, as Segment's Actions runtime uses them."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    env = await make_environment(webhook_signing_secret=SECRET)
    user_id = new_id("user-ü")
    first = track(user_id, "Exportiert “Bericht”", TRICKY_FIRST_EVENT)
    batch = [first, *tracks(user_id, 2)]
    job = {
        "url": f"{http.base_url}{env.webhook_path}".replace("//webhooks", "/webhooks"),
        "method": "PUT",
        "secret": SECRET,
        "batches": [batch, [first]],
    }
    script = ROOT / "tests" / "js" / "actions_webhook.mjs"
    done = await asyncio.to_thread(
        subprocess.run, ["node", str(script)], input=orjson.dumps(job), capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    results = json.loads(done.stdout)
    assert [r["status"] for r in results] == [200, 200], results
    assert results[1]["body"]["duplicates"] == 1
    stored = await sp.event(sessions, env.id, first["messageId"])
    assert stored.properties is not None
    assert stored.properties["name"] == TRICKY_FIRST_EVENT["name"]
    assert stored.properties["separators"] == TRICKY_FIRST_EVENT["separators"]
    assert stored.name == "Exportiert “Bericht”"


# Classic Webhooks


async def test_classic_webhooks_sign_the_whole_body(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(webhook_signing_secret=SECRET)
    user_id = new_id("user")
    messages = [identify(user_id, {"plan": "pro"}), *tracks(user_id, 2), page(user_id, "Home")]
    relay = sender(http, env, mode="classic", secret=SECRET)
    answers = await relay.send(messages)
    assert [a.status for a in answers] == [200] * 4
    assert relay.dropped == []
    assert await stored_ids(sessions, env) == {m["messageId"] for m in messages}


# GDPR deletes


async def seed_person(
    http: httpx.AsyncClient, env: Env, user_id: str, anon: str, secret: str | None = None
) -> list[dict[str, Any]]:
    """A person with a profile, a device, a company, events before and after sign-up."""
    messages = [
        page(None, "Pricing", anonymousId=anon, when=at(0)),
        identify(user_id, {"email": "ada@acme.test", "plan": "pro"}, anonymousId=anon, when=at(1)),
        group(user_id, "acme", {"name": "Acme"}, when=at(2)),
        track(user_id, "Report Viewed", {"company_id": "globex"}, when=at(3)),
    ]
    relay = sender(http, env, mode="classic", secret=secret)
    assert [a.status for a in await relay.send(messages)] == [200] * len(messages)
    return messages


def delete_call(user_id: str, **fields: Any) -> dict[str, Any]:
    """What the classic Webhooks destination forwards for a deletion request."""
    body = {"type": "delete", "userId": user_id, "timestamp": "2026-12-01T10:00:00.000Z"}
    body.update(fields)
    return body


async def traces(sessions: SessionMaker, env: Env, user_id: str, anon: str) -> dict[str, int]:
    sql = {
        "users": "SELECT count(*) FROM users WHERE environment_id = :e AND user_id = :u",
        "anonymous_ids": "SELECT count(*) FROM anonymous_ids WHERE environment_id = :e"
        " AND (user_id = :u OR anonymous_id = :a)",
        "memberships": "SELECT count(*) FROM memberships WHERE environment_id = :e"
        " AND user_id = :u",
        "events": "SELECT count(*) FROM events WHERE environment_id = :e"
        " AND (user_id = :u OR anonymous_id = :a OR type = 'delete')",
        "outbox": "SELECT count(*) FROM outbox WHERE environment_id = :e"
        " AND (payload->>'userId' = :u OR payload->>'anonymousId' = :a)",
        "text anywhere": "SELECT count(*) FROM events e WHERE environment_id = :e"
        " AND row_to_json(e)::text LIKE '%' || :u || '%'",
    }
    async with sessions() as s:
        return {
            name: int(await s.scalar(text(q), {"e": env.id, "u": user_id, "a": anon}) or 0)
            for name, q in sql.items()
        }


NO_TRACE = {
    "users": 0,
    "anonymous_ids": 0,
    "memberships": 0,
    "events": 0,
    "outbox": 0,
    "text anywhere": 0,
}


async def queue_outbound(sessions: SessionMaker, env: Env, user_id: str, anon: str) -> None:
    """Outbound messages about the person, as the product publishes them: one pending, one
    already delivered, one of their device before sign-up."""
    from integration.outbound.publish import publish
    from integration.store.db import transaction
    from integration.store.models import Environment

    async with transaction(sessions) as session:
        row = await session.get(Environment, env.id)
        assert row is not None
        row.stream_enabled = True  # no worker runs here: the rows stay in the outbox
        await publish(
            session,
            row,
            [
                {"type": "identify", "userId": user_id, "traits": {"email": "ada@acme.test"}},
                {"type": "track", "userId": user_id, "event": "Flow Started"},
                {"type": "track", "anonymousId": anon, "event": "Visited"},
            ],
        )
        await session.execute(
            text(
                "UPDATE outbox SET status = 'delivered', delivered_at = now()"
                " WHERE environment_id = :e AND type = 'track' AND payload->>'userId' = :u"
            ),
            {"e": env.id, "u": user_id},
        )


async def test_a_segment_delete_leaves_no_trace_of_the_user_but_a_hashed_audit_row(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
    settings: Settings,
) -> None:
    env, other = await make_environment(webhook_signing_secret=SECRET), await make_environment()
    user_id, anon = new_id("ada"), new_id("anon")
    bob = new_id("bob")
    await seed_person(http, env, user_id, anon, SECRET)
    await seed_person(http, other, user_id, anon)
    await sender(http, env, mode="classic", secret=SECRET).send([identify(bob, {"n": "Bob"})])
    await queue_outbound(sessions, env, user_id, anon)
    other_before = await sp.counts(sessions, other.id)

    relay = sender(http, env, mode="classic", secret=SECRET)
    [answer] = await relay.send([delete_call(user_id, messageId=new_id("delete"))])

    assert answer.status == 200, answer.body
    assert answer.body["deleted"] == {
        "events": 4,
        "memberships": 2,
        "anonymous_ids": 1,
        "users": 1,
        "outbox": 3,
    }
    assert (answer.body["stored"], answer.body["duplicates"]) == (0, 0)
    assert await traces(sessions, env, user_id, anon) == NO_TRACE
    # Others in the environment, and the same person in another environment, are untouched.
    assert await sp.user(sessions, env.id, bob) is not None
    assert await sp.counts(sessions, other.id) == other_before
    # The audit row keeps a digest of the userId, never the id.
    async with sessions() as s:
        [row] = (await s.scalars(select(Deletion).where(Deletion.environment_id == env.id))).all()
        whole = (
            await s.execute(
                text("SELECT row_to_json(d)::text FROM deletions d WHERE id = :id"), {"id": row.id}
            )
        ).scalar_one()
    assert row.user_id_hash == InstallKey.of(settings).hexdigest(user_id)
    assert row.user_id_hash != hashlib.sha256(user_id.encode()).hexdigest()  # not guessable
    assert (row.requested_by, row.removed) == ("segment", answer.body["deleted"])
    assert user_id not in whole
    listed = (await admin.get(f"/api/environments/{env.id}/deletions")).json()["items"]
    assert [(d["user_id_hash"], d["requested_by"]) for d in listed] == [
        (row.user_id_hash, "segment")
    ]


async def test_a_repeated_delete_is_a_no_op_that_still_answers_200(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, anon = new_id("ada"), new_id("anon")
    await seed_person(http, env, user_id, anon)
    call = delete_call(user_id)  # no messageId, as in Segment's docs: one is derived
    relay = sender(http, env, mode="classic")
    [first] = await relay.send([call])
    assert first.body["deleted"]["users"] == 1
    # The person comes back; then Segment redelivers the same delete: it must not erase again.
    await relay.send([identify(user_id, {"plan": "free"})])
    [again] = await relay.send([call])
    assert again.status == 200
    assert again.body["duplicates"] == 1
    assert not any(again.body["deleted"].values())
    assert await sp.user(sessions, env.id, user_id) is not None
    async with sessions() as s:
        rows = (await s.scalars(select(Deletion).where(Deletion.environment_id == env.id))).all()
    assert len(rows) == 1


async def test_an_identify_after_a_delete_starts_a_fresh_profile(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, anon = new_id("ada"), new_id("anon")
    await seed_person(http, env, user_id, anon)
    relay = sender(http, env, mode="classic")
    await relay.send([delete_call(user_id, messageId=new_id("del"))])
    await relay.send([identify(user_id, {"name": "Ada again"}, when=at(-60))])
    user = await sp.user(sessions, env.id, user_id)
    assert user is not None
    # Nothing of the old profile: not its traits, not its first-seen time, not its links.
    assert user.traits == {"name": "Ada again"}
    assert user.first_seen_at == at(-60)
    assert await sp.anonymous_ids(sessions, env.id) == {}
    assert {e.name for e in await sp.events(sessions, env.id)} == {None}


async def test_deletes_in_a_batch_apply_in_order(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id = new_id("ada")
    before, after = identify(user_id, {"plan": "pro"}), identify(user_id, {"plan": "new"})
    body = [before, delete_call(user_id, messageId=new_id("del")), after]
    response = await http.post(env.webhook_path, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 2
    assert response.json()["deleted"]["events"] == 1
    assert [e.message_id for e in await sp.events(sessions, env.id)] == [after["messageId"]]


async def test_a_delete_without_user_id_is_400(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    response = await http.post(env.webhook_path, json={"type": "delete", "anonymousId": "a"})
    assert response.status_code == 400
    assert response.json()["error"] == "missing_user_id"


async def test_admin_deletion_erases_the_same_rows_as_a_segment_delete(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    by_segment, by_admin = await make_environment(), await make_environment()
    user_id, anon = new_id("ada"), new_id("anon")
    for env in (by_segment, by_admin):
        await seed_person(http, env, user_id, anon)
        await queue_outbound(sessions, env, user_id, anon)

    [answer] = await sender(http, by_segment, mode="classic").send([delete_call(user_id)])
    response = await admin.delete(f"/api/environments/{by_admin.id}/users/{user_id}")

    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": user_id, "deleted": answer.body["deleted"]}
    for env in (by_segment, by_admin):
        assert await traces(sessions, env, user_id, anon) == NO_TRACE
    listed = (await admin.get(f"/api/environments/{by_admin.id}/deletions")).json()["items"]
    assert [d["requested_by"] for d in listed] == ["admin"]
    assert listed[0]["removed"] == answer.body["deleted"]


async def test_admin_deletions_list_needs_the_token(
    http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    assert (await http.get(f"/api/environments/{env.id}/deletions")).status_code == 401
    async with httpx.AsyncClient(
        base_url=str(http.base_url), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as authorized:
        assert (await authorized.get(f"/api/environments/{env.id}/deletions")).status_code == 200


# Types Segment never sends


async def test_an_unknown_type_is_stored_but_creates_or_changes_no_profile(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    user_id, anon = new_id("user"), new_id("anon")
    odd = sp.message("experiment_viewed", userId=user_id, anonymousId=anon, traits={"x": 1})
    response = await http.post(env.webhook_path, json=odd)
    assert response.json() == {"stored": 1, "duplicates": 0, "rejected": []}
    assert await sp.counts(sessions, env.id) == {**sp.NOTHING, "events": 1}
    assert (await sp.event(sessions, env.id, odd["messageId"])).extra == odd
