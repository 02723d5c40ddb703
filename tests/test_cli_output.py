"""What the command line prints (issue #20.7): strings Segment sent are printed with their
control characters escaped, so a userId or event name carrying OSC 0 (window title) or OSC 52
(clipboard) sequences cannot reach the operator's terminal as escape sequences; JSON output
keeps them exact (as JSON escapes)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import httpx
import orjson

from tests.admin_support import UNREACHABLE_API, send
from tests.outbound_support import Delivery, run_cli
from tests.segment_payloads import MakeEnv, group, identify, new_id, track

TITLE = "\x1b]0;pwned\x07"  # OSC 0: sets the terminal's title
CLIPBOARD = "\x1b]52;c;cHduZWQ=\x07"  # OSC 52: writes "pwned" to the clipboard
CSI_8BIT = "\x9b2J"  # C1 CSI: clears the screen on terminals that honour 8-bit controls
BIDI = "\u202e"  # right-to-left override: the rest of the line reads backwards
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


@dataclass(frozen=True)
class Printed:
    code: int
    stdout: bytes
    stderr: bytes

    def assert_clean(self) -> None:
        for stream in (self.stdout, self.stderr):
            text = stream.decode()
            for raw in RAW:
                assert raw not in text, (raw, stream)


async def printed(env_vars: dict[str, str], *args: str) -> Printed:
    """The command's stdout and stderr, as bytes, kept apart."""
    return Printed(*await run_cli(env_vars, *args, stderr=asyncio.subprocess.PIPE))


async def test_stored_escape_sequences_are_printed_escaped(
    env_vars: dict[str, str], http: httpx.AsyncClient, make_environment: MakeEnv
) -> None:
    env = await make_environment()
    user_id = f"{new_id('u')}{TITLE}"
    event = f"Signed Up{CLIPBOARD}"
    await send(
        http,
        env.webhook_path,
        identify(user_id, {"name": f"Eve{CSI_8BIT}", "note": f"{BIDI}txt.exe"}),
        track(user_id, event),
        group(user_id, f"acme{TITLE}", {}),
    )

    text = await printed(env_vars, "users", "show", env.name, user_id)
    assert text.code == 0, text
    text.assert_clean()
    shown = text.stdout.decode()
    assert "\\u001b]0;pwned\\u0007" in shown and "\\u001b]52;c;cHduZWQ=\\u0007" in shown, shown

    as_json = await printed(env_vars, "users", "show", env.name, user_id, "--json")
    assert as_json.code == 0, as_json
    as_json.assert_clean()
    user = orjson.loads(as_json.stdout)  # still JSON, and exact: the escapes are JSON's own
    assert user["user_id"] == user_id
    assert user["traits"] == {"name": f"Eve{CSI_8BIT}", "note": f"{BIDI}txt.exe"}
    assert {e["name"] for e in user["recent_events"]} >= {event}

    erased = await printed(env_vars, "users", "erase", env.name, user_id, "--yes")
    assert erased.code == 0, erased
    erased.assert_clean()
    gone = await printed(env_vars, "users", "show", env.name, user_id)  # an error naming it
    assert gone.code == 1 and b"pwned" in gone.stderr, gone
    gone.assert_clean()


async def test_delivery_lists_escape_stored_message_ids(
    env_vars: dict[str, str], delivery: Delivery
) -> None:
    env, _ = await delivery.stream(api_url=UNREACHABLE_API)
    message = {
        "type": "track",
        "userId": "u1",
        "event": "Checked",
        "messageId": f"m-{uuid.uuid4().hex}{CLIPBOARD}",
    }
    await delivery.publish(env, message)
    listed = await printed(env_vars, "deliveries", "list", env.name)
    assert listed.code == 0, listed
    listed.assert_clean()
    assert "\\u001b]52;c;cHduZWQ=\\u0007" in listed.stdout.decode(), listed
