"""An operator's second week with `make run` (issue #19.4-6): the command line names the
instance it talks to, never deletes in another project's run that it merely found running,
and checks Segment API hosts against the allowlist the run's worker enforces; rotating the
SECRET_KEY of a `make run` is one command, and a key that opens nothing stops the start with
the file to fix."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from integration.embedded import free_port
from tests.outbound_support import TimedSink
from tests.test_cli import bare_env, run_script
from tests.test_run_command import _run_once, _start, _stop, _webhooks

pytestmark = pytest.mark.slow


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def test_the_cli_names_its_instance_and_deletes_only_in_the_one_it_was_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    other, project = tmp_path / "other-checkout", tmp_path / "project"
    other.mkdir(), project.mkdir()
    (project / ".data").mkdir()  # this project's own data folder; its run is stopped
    sink = TimedSink().start()
    write_key = "wk_" + uuid.uuid4().hex
    sink.write_keys.add(write_key)
    proc, _banner = _start(other, free_port(), SEGMENT_API_ALLOWLIST="127.0.0.1")
    user = {**bare_env(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    theirs = (other / ".data").resolve()
    try:
        listed = run_script("env", "list", "--json", cwd=project, env=user)
        assert listed.returncode == 0, _said(listed)
        assert f"instance: `make run` of {theirs} (API http://127.0.0.1:" in listed.stderr
        assert "none serves ./.data" in listed.stderr, listed.stderr

        for command in (
            ("users", "erase", "staging", "someone", "--yes"),
            ("env", "delete", "staging", "--force", "--yes"),
            ("api-keys", "revoke", "staging", "any"),
        ):
            refused = run_script(*command, cwd=project, env=user)
            assert refused.returncode == 1, _said(refused)
            assert "deletes data, so it does not guess" in refused.stderr, refused.stderr
            assert f"--data-dir {theirs}" in refused.stderr, refused.stderr
        still = run_script("env", "list", "--json", cwd=project, env=user)
        assert {e["name"] for e in orjson.loads(still.stdout)} == {"staging", "production"}

        # Named, it is that run's data that the command works on.
        told = run_script(
            "--data-dir", str(theirs), "users", "erase", "staging", "someone", "--yes",
            cwd=project, env=user,
        )  # fmt: skip
        assert told.returncode == 1 and "no user" in told.stderr, _said(told)
        assert f"instance: `make run` of {theirs}" in told.stderr

        # The run was given an allowlist: the CLI, without one of its own, honours it...
        allowed = run_script(
            "env", "set", "staging", "--segment-api-url", sink.url, "--write-key", write_key,
            "--stream", "on", cwd=other, env=user,
        )  # fmt: skip
        assert allowed.returncode == 0, _said(allowed)
        tested = run_script("env", "test", "staging", cwd=other, env=user)
        assert tested.returncode == 0, _said(tested)
        assert sink.received and sink.received[-1].write_key == write_key
        # ...and a host only the CLI's own environment allows is refused, as the worker would.
        evil = {**user, "SEGMENT_API_ALLOWLIST": "evil.example.test"}
        widened = run_script(
            "env", "set", "production", "--segment-api-url", "http://evil.example.test",
            cwd=other, env=evil,
        )  # fmt: skip
        assert widened.returncode == 1, _said(widened)
        assert "evil.example.test" in widened.stderr, widened.stderr
    finally:
        _stop(proc)
        sink.stop()


def _secrets(data: Path) -> dict[str, str]:
    found: dict[str, str] = orjson.loads((data / "secrets.json").read_bytes())
    return found


def test_secret_key_rotate_under_make_run_is_one_command(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / ".data"
    user = {**bare_env(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    signing = "whsec_" + uuid.uuid4().hex
    proc, banner = _start(tmp_path, port)
    try:
        given = run_script(
            "env", "set", "staging", "--signing-secret", signing, "--write-key", "wk_1234567890",
            cwd=tmp_path, env=user,
        )  # fmt: skip
        assert given.returncode == 0, _said(given)
        old_key = _secrets(data)["secret_key"]

        rotated = run_script("secret-key", "rotate", cwd=tmp_path, env=user)
        assert rotated.returncode == 0, _said(rotated)
        assert "rotated: every stored secret re-encrypted" in rotated.stdout, _said(rotated)
        new_key = _secrets(data)["secret_key"]
        assert new_key != old_key and "secret_key_previous" not in _secrets(data)
        assert f"SECRET_KEY={new_key}\n" in (data / "runtime.env").read_text()

        # The restarted API opens the signing secret, now under the new key.
        hook = _webhooks(banner)["staging"]
        body = orjson.dumps({"type": "track", "userId": "u", "event": "After Rotation"})
        signature = hmac.new(signing.encode(), body, hashlib.sha1).hexdigest()
        answer = httpx.post(hook, content=body, headers={"X-Signature": signature}, timeout=30)
        assert answer.status_code == 200, answer.text
        listed = run_script("env", "list", "--json", cwd=tmp_path, env=user)
        assert listed.returncode == 0, _said(listed)
        staging = next(e for e in orjson.loads(listed.stdout) if e["name"] == "staging")
        assert staging["segment_write_key"] == "…7890"
    finally:
        _stop(proc)

    again, _ = _start(tmp_path, port)  # what `make run` reads is the new key
    _stop(again)

    # A key that opens nothing: the start stops, naming the file to fix.
    (data / "secrets.json").write_bytes(orjson.dumps({**_secrets(data), "secret_key": "w" * 43}))
    refused = _run_once(tmp_path, port)
    said = _said(refused)
    assert refused.returncode == 1, said
    assert 'the "secret_key" in .data/secrets.json does not open the secrets' in said, said
    assert "Traceback" not in said
