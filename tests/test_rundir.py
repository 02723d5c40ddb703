"""The data folder's building blocks for `make run`: private files, the run lock, pid files.

The end-to-end behaviour (a second run refused, orphans of a killed run stopped) is in
test_run_command.py; these pin the parts it relies on, fast.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.rundir import (
    AlreadyRunning,
    Recorded,
    alive,
    hold_lock,
    write_pid,
    write_private,
)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: a file created with its defaults would be world-readable."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_private_files_are_0600_from_creation(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    leftover = tmp_path / "secrets.json.tmp"  # from a run killed mid-write, world-readable
    leftover.write_text("old")
    leftover.chmod(0o644)

    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("a chmod after creation: the file was readable until then")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    target = tmp_path / "secrets.json"
    write_private(target, b'{"a": 1}')
    write_private(target, b'{"a": 2}')
    assert target.read_bytes() == b'{"a": 2}'
    assert target.stat().st_mode & 0o777 == 0o600
    assert not leftover.exists()


def test_one_lock_holder_per_data_folder(tmp_path: Path) -> None:
    first = hold_lock(tmp_path, "http://127.0.0.1:8001")
    with pytest.raises(AlreadyRunning) as refused:
        hold_lock(tmp_path)
    assert refused.value.holder == [str(os.getpid()), "http://127.0.0.1:8001"]
    first.close()  # as when the holder dies, however it dies
    hold_lock(tmp_path).close()


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _state(child.pid) != "Z":
        time.sleep(0.02)
    assert _state(child.pid) == "Z"  # exited, not reaped yet
    assert not alive(child.pid)
    child.wait()
    assert not alive(child.pid)
    assert alive(os.getpid())


def test_a_pid_file_is_believed_only_for_the_program_it_names(tmp_path: Path) -> None:
    pid_file = tmp_path / "api.pid"
    write_pid(pid_file, os.getpid())
    assert Recorded("API", pid_file, lambda pid: True).running() == os.getpid()
    assert Recorded("API", pid_file, lambda pid: False).running() is None  # a reused pid
    child = subprocess.Popen(["true"])
    child.wait()
    write_pid(pid_file, child.pid)
    assert Recorded("API", pid_file, lambda pid: True).running() is None  # gone
    assert Recorded("API", tmp_path / "missing.pid", lambda pid: True).running() is None


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


@pytest.mark.parametrize("folder", [".data", ".data-2", ".data-staging", ".data-test"])
def test_every_data_folder_is_ignored_by_git(folder: str) -> None:
    """The README suggests `DATA_DIR=.data-2` for a second instance: its secrets.json must
    not be committed by a `git add -A` any more than the first one's."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", f"{folder}/secrets.json"], cwd=root
    )
    assert done.returncode == 0, f"{folder}/ is not git-ignored"
