"""`env set` takes secrets from stdin (issue #15.10), so they stay out of shell history and
the process list."""

from __future__ import annotations

import asyncio
import sys
import uuid

from integration.config import Settings
from integration.crypto import SecretBox
from integration.store.db import SessionMaker
from tests.admin_support import environment_row
from tests.outbound_support import CliResult
from tests.processes import ROOT
from tests.segment_payloads import MakeEnv


async def cli_with_stdin(env_vars: dict[str, str], stdin: bytes, *args: str) -> CliResult:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "integration",
        *args,
        cwd=ROOT,
        env={**env_vars, "PATH": "/usr/bin:/bin"},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(errors="replace"))


async def test_env_set_reads_each_secret_from_stdin(
    env_vars: dict[str, str], make_environment: MakeEnv, sessions: SessionMaker, settings: Settings
) -> None:
    env = await make_environment()
    box = SecretBox.of(settings)
    write_key, signing = f"wk_{uuid.uuid4().hex}", f"whsec_{uuid.uuid4().hex}"

    done = await cli_with_stdin(
        env_vars, write_key.encode() + b"\n", "env", "set", env.name, "--write-key", "-"
    )
    assert done.code == 0, done
    assert write_key not in done.out
    done = await cli_with_stdin(
        env_vars, signing.encode() + b"\r\n", "env", "set", env.name, "--signing-secret", "-"
    )
    assert done.code == 0, done

    row = await environment_row(sessions, env.id)
    assert row is not None and row.segment_write_key and row.webhook_signing_secret
    assert box.decrypt(row.segment_write_key) == write_key
    assert box.decrypt(row.webhook_signing_secret) == signing


async def test_env_set_refuses_an_empty_stdin_and_two_secrets_from_it(
    env_vars: dict[str, str], make_environment: MakeEnv, sessions: SessionMaker
) -> None:
    env = await make_environment(segment_write_key=f"wk_{uuid.uuid4().hex}")
    before = await environment_row(sessions, env.id)
    empty = await cli_with_stdin(env_vars, b"", "env", "set", env.name, "--write-key", "-")
    assert empty.code != 0 and "no Segment write key on stdin" in empty.out, empty
    both = await cli_with_stdin(
        env_vars,
        b"one-secret-value\nanother-secret\n",
        *("env", "set", env.name, "--write-key", "-", "--signing-secret", "-"),
    )
    assert both.code != 0 and "only one of" in both.out, both
    after = await environment_row(sessions, env.id)
    assert before is not None and after is not None
    assert after.segment_write_key == before.segment_write_key
    assert after.webhook_signing_secret is None
