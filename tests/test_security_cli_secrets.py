"""`env set` takes secrets from stdin (issue #15.10), so they stay out of shell history and
the process list; the CLI reads a `make run`'s runtime.env only when no one else could have
written it (issue #20.6)."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import subprocess
import sys
import uuid
from pathlib import Path

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
    return CliResult.of(proc.returncode, out)


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


# --- a runtime.env planted by another user (issue #20.6) ---------------------------------------


class Listener:
    """A TCP port standing in for an attacker's database: it records whether anyone came."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def called(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


def _plant(data: Path, database_url: str, *, owner: int, mode: int, run: int) -> None:
    """A data folder as an attacker leaves it: a runtime.env naming their database, and a
    lock file naming a live `... run` process (the victim's own run, in the attack)."""
    data.mkdir(exist_ok=True)
    runtime_env = data / "runtime.env"
    runtime_env.write_text(f"DATABASE_URL={database_url}\nSECRET_KEY={'k' * 40}\n")
    os.chmod(runtime_env, mode)
    os.chown(runtime_env, owner, -1)
    (data / "run.lock").write_text(f"{run}\nhttp://127.0.0.1:1\n")


def test_a_runtime_env_of_another_user_or_writable_by_others_is_refused(tmp_path: Path) -> None:
    attacker = Listener()
    # A live process whose command line ends in "run", as the victim's `make run` does.
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "run"])
    user = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s")}
    try:
        planted = f"postgresql://postgres@127.0.0.1:{attacker.port}/loot"
        nobody = pwd.getpwnam("nobody").pw_uid
        for owner, mode, why in (
            (nobody, 0o644, f"belongs to user id {nobody}"),
            (os.getuid(), 0o666, "others may write it (mode 666)"),
            (os.getuid(), 0o620, "others may write it (mode 620)"),
        ):
            _plant(tmp_path / ".data", planted, owner=owner, mode=mode, run=decoy.pid)
            done = subprocess.run(
                [sys.executable, "-m", "integration", "env", "list"],
                cwd=tmp_path,
                env=user,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 1, done
            assert "refusing to read" in done.stderr and why in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "Traceback" not in done.stderr
            assert not attacker.called(), "the CLI connected to the planted database"

        # The same file, ours and private, is believed: the check is on whose it is.
        _plant(tmp_path / ".data", planted, owner=os.getuid(), mode=0o600, run=decoy.pid)
        believed = subprocess.run(
            [sys.executable, "-m", "integration", "stats", "x"],
            cwd=tmp_path,
            env=user,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"127.0.0.1:{attacker.port}/loot" in believed.stderr, believed.stderr
        assert attacker.called()
    finally:
        decoy.kill()
        decoy.wait()
        attacker.sock.close()
