"""Identity conflicts (issue #25) resolved by an operator, end to end over HTTP against the real
server: the links and merges ingest refused are listed, and applied (made as asked, logged with
rule operator) or dismissed (nothing changes), each once."""

from __future__ import annotations

from typing import Any

import httpx

from integration.store.db import SessionMaker
from tests import segment_payloads as sp
from tests.outbound_support import cli
from tests.segment_payloads import Env, MakeEnv, at, identify, new_id, track
from tests.test_inbound_identity import conflicts_of, get, log_of, post

ADMIN = "admin API (ADMIN_TOKEN)"


async def resolve(admin: httpx.AsyncClient, env: Env, conflict_id: Any, verb: str) -> Any:
    return await admin.post(f"/api/environments/{env.id}/identity-conflicts/{conflict_id}/{verb}")


async def done(admin: httpx.AsyncClient, env: Env, conflict_id: int, verb: str) -> Any:
    answer = await resolve(admin, env, conflict_id, verb)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def listed(admin: httpx.AsyncClient, env: Env, query: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await get(admin, env, f"/identity-conflicts{query}"))["items"]
    return items


async def two_identified_users(http: httpx.AsyncClient, env: Env) -> tuple[str, str]:
    """Ada and Bob, each with traits, events and a company of their own."""
    ada, bob = new_id("ada"), new_id("bob")
    await post(
        http,
        env,
        [
            identify(ada, {"plan": "pro", "role": "admin"}, when=at(0)),
            track(ada, "Paid", when=at(1)),
            sp.group(ada, "acme", {"name": "Acme"}, when=at(2)),
        ],
    )
    await post(
        http,
        env,
        [
            identify(bob, {"plan": "free", "seats": 3}, when=at(3)),
            track(bob, "Left", when=at(4)),
            sp.group(bob, "globex", {"name": "Globex"}, when=at(5)),
        ],
    )
    return ada, bob


async def test_applying_an_identified_merge_merges_the_two_users_once_and_logs_the_operator(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    ada, bob = await two_identified_users(http, env)
    bobs_events = {r.message_id for r in await sp.events(sessions, env.id) if r.user_id == bob}
    merge = sp.alias(ada, bob, when=at(6))
    await post(http, env, merge)

    # Recorded, open, and neither profile changed.
    [conflict] = await listed(admin, env)
    assert (conflict["kind"], conflict["from_id"], conflict["user_id"]) == (
        "identified_merge",
        bob,
        ada,
    )
    assert (conflict["state"], conflict["resolved_by"]) == ("open", None)
    bob_profile = await sp.user(sessions, env.id, bob)
    assert bob_profile is not None and bob_profile.traits == {"plan": "free", "seats": 3}
    assert await sp.memberships(sessions, env.id) == {(ada, "acme"), (bob, "globex")}

    applied = await done(admin, env, conflict["id"], "apply")
    assert (applied["id"], applied["state"], applied["resolved_by"]) == (
        conflict["id"],
        "applied",
        ADMIN,
    )
    # Bob's events, traits (newest wins) and companies are Ada's now; Bob has no profile.
    assert await sp.user(sessions, env.id, bob) is None
    ada_profile = await sp.user(sessions, env.id, ada)
    assert ada_profile is not None
    assert ada_profile.traits == {"plan": "free", "role": "admin", "seats": 3}
    moved = [r for r in await sp.events(sessions, env.id) if r.message_id in bobs_events]
    assert {r.user_id for r in moved} == {ada}
    assert await sp.memberships(sessions, env.id) == {(ada, "acme"), (ada, "globex")}
    assert await log_of(sessions, env) == [
        ("merge", bob, ada, merge["messageId"], "operator", len(bobs_events), 2, 1)
    ]
    identity = await get(admin, env, f"/users/{ada}/identity")
    assert [(m["from_id"], m["rule"]) for m in identity["merges_in"]] == [(bob, "operator")]
    assert identity["conflicts"][0]["state"] == "applied"

    # Again: the same answer, and nothing more done.
    assert await done(admin, env, conflict["id"], "apply") == applied
    assert len(await log_of(sessions, env)) == 1
    refused = await resolve(admin, env, conflict["id"], "dismiss")
    assert refused.status_code == 409 and refused.json()["error"] == "applied"
    assert [c["id"] for c in await listed(admin, env, "?state=applied")] == [conflict["id"]]
    assert await listed(admin, env, "?state=open") == []
    bad = await admin.get(f"/api/environments/{env.id}/identity-conflicts?state=closed")
    assert bad.status_code == 400

    # Erasing Ada leaves no conflict naming her.
    erased = await admin.delete(f"/api/environments/{env.id}/users/{ada}")
    assert erased.status_code == 200, erased.text
    assert await listed(admin, env) == []


async def test_a_dismissed_conflict_changes_nothing_and_a_linked_elsewhere_one_moves_the_link(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    ada, bob = await two_identified_users(http, env)
    merge = sp.alias(ada, bob, when=at(6))
    anon, eve = new_id("anon"), new_id("eve")
    browsing = sp.page(None, "Home", anonymousId=anon, when=at(7))
    await post(http, env, [merge, identify(ada, {}, anonymousId=anon, when=at(8))])
    rival = identify(eve, {"name": "Eve"}, anonymousId=anon, when=at(9))
    await post(http, env, [rival])
    await post(http, env, [browsing])

    # Newest first, a page at a time.
    first = await get(admin, env, "/identity-conflicts?limit=1")
    [elsewhere] = first["items"]
    following = await get(admin, env, f"/identity-conflicts?limit=1&cursor={first['next_cursor']}")
    [merging] = following["items"]
    assert following["next_cursor"] is None
    assert (elsewhere["kind"], merging["kind"]) == ("linked_elsewhere", "identified_merge")
    assert elsewhere["existing_user_id"] == ada

    before = {u: await sp.user(sessions, env.id, u) for u in (ada, bob)}
    dismissed = await done(admin, env, merging["id"], "dismiss")
    assert (dismissed["state"], dismissed["resolved_by"]) == ("dismissed", ADMIN)
    assert await done(admin, env, merging["id"], "dismiss") == dismissed
    refused = await resolve(admin, env, merging["id"], "apply")
    assert refused.status_code == 409 and refused.json()["error"] == "dismissed"
    for u, profile in before.items():
        now = await sp.user(sessions, env.id, u)
        assert now is not None and profile is not None and now.traits == profile.traits
    rules = [
        (kind, from_id, to, rule) for kind, from_id, to, _, rule, *_ in await log_of(sessions, env)
    ]
    assert rules == [("link", anon, ada, "first_link")]

    # The anonymousId now resolves to Eve; what was Ada's stays Ada's.
    await done(admin, env, elsewhere["id"], "apply")
    assert (await sp.anonymous_ids(sessions, env.id))[anon] == eve
    assert (await log_of(sessions, env))[-1] == (
        "link",
        anon,
        eve,
        rival["messageId"],
        "operator",
        0,
        0,
        0,
    )
    assert (await sp.event(sessions, env.id, browsing["messageId"])).user_id == ada

    # Unknown ids, and another environment's conflict, are not found here.
    other = await make_environment()
    await post(http, other, sp.alias(*await two_identified_users(http, other), when=at(6)))
    [theirs] = await listed(admin, other)
    for missing in (theirs["id"], 999_999_999, "abc", 2**63):
        for verb in ("apply", "dismiss"):
            answer = await resolve(admin, env, missing, verb)
            assert answer.status_code == 404, (missing, verb, answer.text)
    assert (await listed(admin, other))[0]["state"] == "open"


async def test_the_cli_lists_and_applies_a_conflict_of_the_limit(
    env_vars: dict[str, str],
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(max_anonymous_ids_per_user=1)
    ada, first, second = new_id("ada"), new_id("anon"), new_id("anon")
    browsing = sp.page(None, "Home", anonymousId=second, when=at(0))
    await post(http, env, [browsing, track(ada, "Seen", anonymousId=first, when=at(1))])
    over = track(ada, "Seen", anonymousId=second, when=at(2))
    await post(http, env, [over])
    [(kind, *_)] = await conflicts_of(sessions, env)
    assert kind == "anonymous_id_limit"

    shown = await cli(env_vars, "users", "conflicts", env.name)
    assert shown.code == 0, shown
    assert "open      " in shown.out and f"anonymous_id_limit: {second} -> {ada}" in shown.out
    conflict_id = shown.out.split("#", 1)[1].split(" ", 1)[0]
    applied = await cli(env_vars, "users", "apply-conflict", env.name, conflict_id)
    assert applied.code == 0 and "applied" in applied.out, applied
    assert await sp.anonymous_ids(sessions, env.id) == {first: ada, second: ada}
    assert (await sp.event(sessions, env.id, browsing["messageId"])).user_id == ada
    assert (await log_of(sessions, env))[-1] == (
        "link",
        second,
        ada,
        over["messageId"],
        "operator",
        1,
        0,
        0,
    )
    refused = await cli(env_vars, "users", "dismiss-conflict", env.name, conflict_id)
    assert refused.code != 0 and "applied" in refused.out, refused


async def test_the_cli_unmerges_a_merge_and_refuses_one_the_user_was_merged_on_from(
    env_vars: dict[str, str],
    http: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, bob = await two_identified_users(http, env)
    cy = new_id("cy")
    await post(http, env, [sp.alias(ada, bob, when=at(6))])
    await post(
        http, env, [identify(cy, {"plan": "team"}, when=at(7)), sp.alias(cy, ada, when=at(8))]
    )

    async def unmerge(user_id: str, merged_id: str) -> Any:
        return await cli(env_vars, "users", "unmerge", env.name, user_id, "--merged-id", merged_id)

    missing = await unmerge(ada, "nobody")
    assert missing.code != 0 and "no merge of 'nobody' into this user" in missing.out, missing
    refused = await unmerge(ada, bob)
    assert refused.code != 0 and f"merged into {cy!r} since; unmerge that first" in refused.out
    assert (await sp.user(sessions, env.id, bob)) is None  # nothing moved

    first = await unmerge(cy, ada)
    assert first.code == 0 and f"unmerged {ada} from {cy}" in first.out, first
    done = await unmerge(ada, bob)
    assert done.code == 0 and f"unmerged {bob} from {ada}" in done.out, done
    line = f"back on {bob}: events 3, anonymous ids 0, traits 2, memberships 1"
    assert line in done.out, done.out
    restored = await sp.user(sessions, env.id, bob)
    assert restored is not None and restored.traits == {"plan": "free", "seats": 3}
    members = await sp.memberships(sessions, env.id)
    assert {(ada, "acme"), (bob, "globex")} <= members and (ada, "globex") not in members
    again = await unmerge(ada, bob)
    assert again.code == 0 and "nothing changed" in again.out and line in again.out, again
