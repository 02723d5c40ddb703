"""Identity you can trust (issue #25), end to end over HTTP against the real server: blocked
ids identify no one, links and merges are guarded and logged, a user's anonymous ids are
limited, and an erasure leaves nothing of the person in the merge log."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from integration.store.db import SessionMaker
from integration.store.models import IdentityConflict, IdentityLog
from tests import processes
from tests import segment_payloads as sp
from tests.console_support import sign_in_http
from tests.outbound_support import cli
from tests.segment_payloads import Env, MakeEnv, at, identify, new_id, track


async def post(http: httpx.AsyncClient, env: Env, body: Any) -> dict[str, Any]:
    response = await http.post(env.webhook_path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def get(admin: httpx.AsyncClient, env: Env, path: str) -> Any:
    response = await admin.get(f"/api/environments/{env.id}{path}")
    assert response.status_code == 200, response.text
    return response.json()


# Blocked ids


async def test_placeholder_user_ids_identify_no_one_and_are_counted(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    anon_a, anon_b = new_id("anon"), new_id("anon")
    messages = [
        identify("0", {"email": "a@acme.test"}, anonymousId=anon_a, when=at(0)),
        identify("undefined", {"email": "b@acme.test"}, anonymousId=anon_b, when=at(1)),
        track(" NULL ", "Clicked", anonymousId=anon_b, when=at(2)),
        sp.message("track", event="Zero", userId=0, anonymousId=anon_a, when=at(3)),
    ]
    assert (await post(http, env, messages))["stored"] == 4

    # Nobody was identified: no profile, no link, and the two browsers stay apart.
    assert await sp.counts(sessions, env.id) | {"events": 0} == sp.NOTHING
    for m in messages:
        row = await sp.event(sessions, env.id, m["messageId"])
        assert row.user_id is None and row.anonymous_id in (anon_a, anon_b)
    # The stored message reads as it was sent.
    [first] = (await get(admin, env, f"/events?anonymous_id={anon_a}&type=identify"))["items"]
    assert (first["user_id"], first["extra"]["userId"]) == (None, "0")
    book = await get(admin, env, "/ledger?direction=inbound")
    assert (book["inbound"]["stored"], book["inbound"]["blocked_ids"]) == (4, 4)
    # A redelivery counts as a duplicate, not as blocked again.
    assert (await post(http, env, messages))["duplicates"] == 4
    assert (await get(admin, env, "/ledger?direction=inbound"))["inbound"]["blocked_ids"] == 4


async def test_a_blocked_anonymous_id_or_previous_id_links_and_merges_no_one(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    ada = new_id("ada")
    await post(http, env, [sp.page(None, "Home", anonymousId="anonymous", when=at(0))])
    await post(http, env, [identify(ada, {"plan": "pro"}, anonymousId="anonymous", when=at(1))])
    await post(http, env, [sp.alias(ada, "undefined", when=at(2))])

    assert await sp.anonymous_ids(sessions, env.id) == {}
    page = [r for r in await sp.events(sessions, env.id) if r.type == "page"]
    assert [r.user_id for r in page] == [None]
    assert await log_of(sessions, env) == [] and await conflicts_of(sessions, env) == []


async def test_an_environment_sets_its_own_blocked_ids(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    shown = await get(admin, env, "")
    assert shown["blocked_ids_default"] and "undefined" in shown["blocked_ids"]
    changed = await admin.patch(
        f"/api/environments/{env.id}", json={"blocked_ids": ["Guest", "test-user"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["blocked_ids"] == ["guest", "test-user"]
    assert not changed.json()["blocked_ids_default"]
    bad = await admin.patch(f"/api/environments/{env.id}", json={"blocked_ids": "guest"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_field"

    anon = new_id("anon")
    await post(http, env, identify("GUEST", {"plan": "free"}, anonymousId=anon, when=at(0)))
    await post(http, env, identify("0", {"plan": "pro"}, when=at(1)))
    assert await sp.user(sessions, env.id, "GUEST") is None
    assert await sp.anonymous_ids(sessions, env.id) == {}
    # "0" is no longer on this environment's list: it is a user like any other.
    assert await sp.user(sessions, env.id, "0") is not None

    reset = await admin.patch(f"/api/environments/{env.id}", json={"blocked_ids": None})
    assert reset.json()["blocked_ids_default"]


async def test_the_console_says_why_a_message_was_stored_as_anonymous_and_counts_it(
    server: processes.Process, http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    await post(http, env, track("undefined", "Clicked", anonymousId=new_id("anon")))
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as console:
        await sign_in_http(console)
        rows = (await console.get(f"/admin/environments/{env.id}/live/rows")).text
        ledger = (await console.get(f"/admin/environments/{env.id}/deliveries")).text
    assert "userId &#39;undefined&#39; is a blocked id: stored as anonymous" in rows
    assert "of the stored, 1 with a blocked userId" in ledger


# Links, merges, conflicts and the limit


async def log_of(sessions: SessionMaker, env: Env) -> list[tuple[Any, ...]]:
    """(kind, from, to, messageId, rule, events, traits, memberships) of each link and merge."""
    async with sessions() as s:
        rows = await s.scalars(
            select(IdentityLog).where(IdentityLog.environment_id == env.id).order_by(IdentityLog.id)
        )
        return [
            (
                r.kind,
                r.from_id,
                r.user_id,
                r.message_id,
                r.rule,
                r.events_moved,
                r.traits_moved,
                r.memberships_moved,
            )
            for r in rows
        ]


async def conflicts_of(sessions: SessionMaker, env: Env) -> list[tuple[Any, ...]]:
    """(kind, from, user, existing user, messageId) of each refused link or merge."""
    async with sessions() as s:
        rows = await s.scalars(
            select(IdentityConflict)
            .where(IdentityConflict.environment_id == env.id)
            .order_by(IdentityConflict.id)
        )
        return [(r.kind, r.from_id, r.user_id, r.existing_user_id, r.message_id) for r in rows]


async def test_a_second_user_for_a_linked_anonymous_id_is_a_conflict_and_the_first_link_stays(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    ada, eve, anon = new_id("ada"), new_id("eve"), new_id("anon")
    browsing = sp.group(None, "acme", {"name": "Acme"}, anonymousId=anon, when=at(0))
    first = identify(ada, {"name": "Ada"}, anonymousId=anon, when=at(1))
    await post(http, env, [browsing, first])
    # Later, and again in one batch with a later message of the first user's.
    second = identify(eve, {"name": "Eve"}, anonymousId=anon, when=at(2))
    again = track(ada, "Clicked", anonymousId=anon, when=at(3))
    third = track(eve, "Clicked", anonymousId=anon, when=at(4))
    await post(http, env, second)
    await post(http, env, [again, third])

    assert await sp.anonymous_ids(sessions, env.id) == {anon: ada}
    assert (await sp.event(sessions, env.id, browsing["messageId"])).user_id == ada
    assert await log_of(sessions, env) == [
        ("link", anon, ada, first["messageId"], "first_link", 1, 0, 1)
    ]
    assert await conflicts_of(sessions, env) == [
        ("linked_elsewhere", anon, eve, ada, second["messageId"]),
        ("linked_elsewhere", anon, eve, ada, third["messageId"]),
    ]
    # Eve is a user of her own, with her own events, and nothing of Ada's.
    eve_profile = await sp.user(sessions, env.id, eve)
    assert eve_profile is not None and eve_profile.traits == {"name": "Eve"}
    assert await sp.memberships(sessions, env.id) == {(ada, "acme")}
    # A redelivery records nothing again.
    await post(http, env, [browsing, first, second, again, third])
    assert len(await conflicts_of(sessions, env)) == 2 and len(await log_of(sessions, env)) == 1


async def test_an_alias_of_two_identified_users_is_a_recorded_conflict_that_changes_neither(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    ada, bob = new_id("ada"), new_id("bob")
    await post(http, env, [identify(ada, {"plan": "pro"}, when=at(0)), track(ada, "Paid")])
    await post(http, env, [identify(bob, {"plan": "free"}, when=at(1)), track(bob, "Left")])
    before = {u: (await sp.user(sessions, env.id, u)) for u in (ada, bob)}

    merge = sp.alias(ada, bob, when=at(2))
    assert (await post(http, env, merge))["stored"] == 1
    await post(http, env, merge)  # redelivered

    for u, profile in before.items():
        now = await sp.user(sessions, env.id, u)
        assert now is not None and profile is not None and now.traits == profile.traits
    rows = await sp.events(sessions, env.id)
    assert {r.user_id for r in rows if r.type != "alias"} == {ada, bob}
    assert await sp.anonymous_ids(sessions, env.id) == {}
    assert await log_of(sessions, env) == []
    assert await conflicts_of(sessions, env) == [
        ("identified_merge", bob, ada, None, merge["messageId"])
    ]


async def test_an_alias_of_an_anonymous_id_or_a_new_user_id_merges_and_is_logged(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    ada, anon, old = new_id("ada"), new_id("anon"), new_id("old")
    await post(http, env, [sp.page(None, "Home", anonymousId=anon, when=at(0))])
    await post(http, env, identify(ada, {"plan": "pro"}, when=at(1)))
    from_anon = sp.alias(ada, anon, when=at(2))
    await post(http, env, from_anon)
    # An identified earlier userId into a user with nothing of their own yet.
    await post(http, env, identify(old, {"name": "Ada", "plan": "free"}, when=at(3)))
    new = new_id("new")
    into_new = sp.alias(new, old, when=at(4))
    await post(http, env, into_new)

    assert await log_of(sessions, env) == [
        ("merge", anon, ada, from_anon["messageId"], "previous_id_anonymous", 1, 0, 0),
        ("merge", old, new, into_new["messageId"], "user_new", 1, 2, 0),
    ]
    assert await conflicts_of(sessions, env) == []
    profile = await sp.user(sessions, env.id, new)
    assert profile is not None and profile.traits == {"name": "Ada", "plan": "free"}


async def test_a_user_gets_no_anonymous_ids_past_the_limit(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    answer = await admin.patch(
        f"/api/environments/{env.id}", json={"max_anonymous_ids_per_user": 2}
    )
    assert answer.status_code == 200 and answer.json()["max_anonymous_ids_per_user"] == 2
    bad = await admin.patch(f"/api/environments/{env.id}", json={"max_anonymous_ids_per_user": 0})
    assert bad.status_code == 400
    ada = new_id("ada")
    anons = [new_id("anon") for _ in range(4)]
    batch = [track(ada, "Seen", anonymousId=a, when=at(i)) for i, a in enumerate(anons[:3])]
    await post(http, env, batch)
    late = sp.alias(ada, anons[3], when=at(9))
    await post(http, env, late)

    assert await sp.anonymous_ids(sessions, env.id) == {anons[0]: ada, anons[1]: ada}
    assert await conflicts_of(sessions, env) == [
        ("anonymous_id_limit", anons[2], ada, None, batch[2]["messageId"]),
        ("anonymous_id_limit", anons[3], ada, None, late["messageId"]),
    ]


async def test_concurrent_identifies_link_once_and_keep_to_the_limit(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(max_anonymous_ids_per_user=3)
    shared = new_id("anon")
    users = [new_id("user") for _ in range(8)]
    ada = new_id("ada")
    anons = [new_id("anon") for _ in range(8)]
    rivals = [identify(u, {"n": i}, anonymousId=shared, when=at(i)) for i, u in enumerate(users)]
    devices = [track(ada, "Seen", anonymousId=a, when=at(i)) for i, a in enumerate(anons)]
    for _ in range(2):  # then all of it redelivered, as concurrently
        await asyncio.gather(*(post(http, env, m) for m in rivals + devices))

    links = await sp.anonymous_ids(sessions, env.id)
    assert links[shared] in users
    assert sum(1 for u in links.values() if u == ada) == 3
    conflicts = await conflicts_of(sessions, env)
    assert sorted(c[0] for c in conflicts) == ["anonymous_id_limit"] * 5 + ["linked_elsewhere"] * 7
    assert all(c[3] == links[shared] for c in conflicts if c[0] == "linked_elsewhere")
    assert len(await log_of(sessions, env)) == 4


# The identity of a user, over the admin API


async def test_a_users_identity_shows_links_merges_in_and_out_and_conflicts(
    http: httpx.AsyncClient, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    ada, eve, old, anon = new_id("ada"), new_id("eve"), new_id("old"), new_id("anon")
    linking = identify(ada, {"plan": "pro"}, anonymousId=anon, when=at(0))
    rival = identify(eve, {"plan": "free"}, anonymousId=anon, when=at(1))
    merge = sp.alias(ada, old, when=at(2))  # `old` never had a profile of its own
    refused = sp.alias(ada, eve, when=at(3))  # both identified
    await post(http, env, [linking])
    await post(http, env, [rival, merge, refused])

    found = await get(admin, env, f"/users/{ada}/identity")
    assert found["user_id"] == ada and sorted(found["anonymous_ids"]) == sorted([anon, old])
    assert [(m["kind"], m["from_id"], m["message_id"]) for m in found["merges_in"]] == [
        ("merge", old, merge["messageId"]),
        ("link", anon, linking["messageId"]),
    ]
    assert found["merges_in"][1]["rule"] == "first_link" and found["merges_out"] == []
    assert [(c["kind"], c["message_id"]) for c in found["conflicts"]] == [
        ("identified_merge", refused["messageId"]),
        ("linked_elsewhere", rival["messageId"]),
    ]
    # The merged id has no profile now, but its merge out is there to read.
    merged = await get(admin, env, f"/users/{old}/identity")
    assert [(m["user_id"], m["rule"]) for m in merged["merges_out"]] == [
        (ada, "previous_id_anonymous")
    ]
    eves = await get(admin, env, f"/users/{eve}/identity")
    assert eves["anonymous_ids"] == [] and len(eves["conflicts"]) == 2
    unknown = await admin.get(f"/api/environments/{env.id}/users/nobody/identity")
    assert unknown.status_code == 404


async def test_an_erasure_leaves_nothing_of_the_person_in_the_merge_log_or_conflicts(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment()
    ada, eve, old, anon = new_id("ada"), new_id("eve"), new_id("old"), new_id("anon")
    await post(http, env, [identify(ada, {"plan": "pro"}, anonymousId=anon, when=at(0))])
    await post(http, env, [sp.alias(ada, old, when=at(1))])
    await post(http, env, [identify(eve, {"plan": "free"}, anonymousId=anon, when=at(2))])
    eve_alone = new_id("anon")
    await post(http, env, [identify(eve, {}, anonymousId=eve_alone, when=at(3))])
    assert len(await log_of(sessions, env)) == 3 and len(await conflicts_of(sessions, env)) == 1

    # A Segment delete of Ada, as Segment sends it.
    delete = sp.message("delete", userId=ada, context=None, integrations=None)
    assert (await post(http, env, delete))["deleted"]["users"] == 1

    remaining = await log_of(sessions, env)
    assert remaining == [("link", eve_alone, eve, remaining[0][3], "first_link", 0, 0, 0)]
    assert await conflicts_of(sessions, env) == []
    gone = await admin.get(f"/api/environments/{env.id}/users/{ada}/identity")
    assert gone.status_code == 404


async def test_the_cli_sets_the_rules_and_shows_a_users_identity(
    env_vars: dict[str, str], http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    rules = await cli(
        env_vars,
        "env",
        "set",
        env.name,
        "--blocked-ids",
        "guest, 0",
        "--max-anonymous-ids-per-user",
        "1",
        "--identified-merges",
        "off",
    )
    assert rules.code == 0, rules
    shown = await cli(env_vars, "env", "show", env.name)
    assert "Blocked ids (identify or merge no one): '0', 'guest'" in shown.out, shown
    assert "Anonymous ids per user: at most 1" in shown.out

    ada, first, second = new_id("ada"), new_id("anon"), new_id("anon")
    await post(http, env, [track(ada, "Seen", anonymousId=first, when=at(0))])
    await post(http, env, [track(ada, "Seen", anonymousId=second, when=at(1))])
    await post(http, env, [track("Guest", "Seen", anonymousId=second, when=at(2))])
    found = await cli(env_vars, "users", "identity", env.name, ada)
    assert found.code == 0, found
    assert f"anonymous ids: {first}" in found.out and f"link  {first} -> {ada}" in found.out
    assert f"anonymous_id_limit: {second} -> {ada}" in found.out, found
    assert "blocked userId" in (await cli(env_vars, "stats", env.name)).out


async def test_an_anonymous_event_arriving_with_its_identify_is_attached_whichever_commits_first(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    people = [(new_id("user"), new_id("anon")) for _ in range(40)]
    browsing = [sp.page(None, "Home", anonymousId=a, when=at(0)) for _, a in people]
    signing = [identify(u, {"n": 1}, anonymousId=a, when=at(1)) for u, a in people]
    pairs = [m for pair in zip(browsing, signing, strict=True) for m in pair]
    await asyncio.gather(*(post(http, env, m) for m in pairs))

    user_of = {a: u for u, a in people}
    assert await sp.anonymous_ids(sessions, env.id) == user_of
    rows = await sp.events(sessions, env.id)
    assert len(rows) == 80
    orphans = [(r.type, r.anonymous_id) for r in rows if r.user_id != user_of[r.anonymous_id]]
    assert orphans == []


async def test_two_concurrent_aliases_of_one_id_merge_it_once(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    anon = new_id("anon")
    users = [new_id("user") for _ in range(6)]
    await post(http, env, [sp.page(None, "Home", anonymousId=anon, when=at(0))])
    aliases = [sp.alias(u, anon, when=at(1 + i)) for i, u in enumerate(users)]
    await asyncio.gather(*(post(http, env, m) for m in aliases))

    [merge] = await log_of(sessions, env)
    winner = merge[2]
    assert await sp.anonymous_ids(sessions, env.id) == {anon: winner}
    conflicts = await conflicts_of(sessions, env)
    assert sorted(c[2] for c in conflicts) == sorted(set(users) - {winner})
    assert {(c[0], c[3]) for c in conflicts} == {("linked_elsewhere", winner)}
    page = (await sp.events(sessions, env.id))[0]
    assert page.user_id == winner


async def test_an_anonymous_event_arriving_with_an_alias_of_its_id_is_moved_either_way(
    http: httpx.AsyncClient, make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment()
    people = [(new_id("user"), new_id("anon")) for _ in range(40)]
    browsing = [sp.page(None, "Home", anonymousId=a, when=at(0)) for _, a in people]
    aliases = [sp.alias(u, a, when=at(1)) for u, a in people]
    pairs = [m for pair in zip(browsing, aliases, strict=True) for m in pair]
    await asyncio.gather(*(post(http, env, m) for m in pairs))

    user_of = {a: u for u, a in people}
    pages = [r for r in await sp.events(sessions, env.id) if r.type == "page"]
    assert len(pages) == 40
    assert [r.anonymous_id for r in pages if r.user_id != user_of[r.anonymous_id]] == []


async def test_the_console_sets_the_identity_rules(
    server: processes.Process, admin: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as console:
        csrf = await sign_in_http(console)
        page = (await console.get(f"/admin/environments/{env.id}")).text
        assert "(the default list)" in page and ">0\n-1\nnull\nundefined" in page

        async def save(**fields: str) -> httpx.Response:
            data = {"csrf": csrf, "what": "identity", **fields}
            return await console.post(f"/admin/environments/{env.id}/settings", data=data)

        saved = await save(
            blocked_ids="Guest\r\n\r\n  test-user \r\n",
            max_anonymous_ids_per_user="5",
            allow_identified_merges="on",
        )
        assert saved.status_code == 303, saved.text
        read = (await admin.get(f"/api/environments/{env.id}")).json()
        assert read["blocked_ids"] == ["guest", "test-user"]
        assert (read["max_anonymous_ids_per_user"], read["allow_identified_merges"]) == (5, True)
        wrong = await save(blocked_ids="", max_anonymous_ids_per_user="many")
        assert wrong.status_code == 400 and "Anonymous ids per user must be" in wrong.text
        reset = await save(action="default", max_anonymous_ids_per_user="100")
        assert reset.status_code == 303
        read = (await admin.get(f"/api/environments/{env.id}")).json()
        assert read["blocked_ids_default"] and not read["allow_identified_merges"]


async def test_erasing_an_id_named_only_in_the_merge_log_removes_its_rows(
    http: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    make_environment: MakeEnv,
    sessions: SessionMaker,
) -> None:
    env = await make_environment(allow_identified_merges=True)
    ada, old = new_id("ada"), new_id("old")
    await post(http, env, [identify(old, {"plan": "free"}, when=at(0))])
    await post(http, env, [identify(ada, {"plan": "pro"}, when=at(1))])
    await post(http, env, [sp.alias(ada, old, when=at(2))])
    assert [r[4] for r in await log_of(sessions, env)] == ["identified_merges_allowed"]

    erased = await admin.delete(f"/api/environments/{env.id}/users/{old}")
    assert erased.status_code == 200, erased.text
    assert await log_of(sessions, env) == []
    # Ada keeps what was merged into her.
    profile = await sp.user(sessions, env.id, ada)
    assert profile is not None and profile.traits == {"plan": "pro"}
