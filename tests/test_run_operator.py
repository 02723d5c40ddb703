"""An operator's second week with `make run` (issue #19.4-6): the command line names the
instance it talks to, never deletes in another project's run that it merely found running,
and checks Segment API hosts against the allowlist the run's worker enforces."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from integration.embedded import free_port
from tests.outbound_support import TimedSink
from tests.test_cli import bare_env, run_script
from tests.test_run_command import _start, _stop

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
