"""The data folder `make run` owns: one live run at a time, private files, and pid files.

A run holds an exclusive lock on `run.lock` for its whole life. The kernel drops the lock
when the process ends, however it ends (Ctrl-C, a closed terminal, SIGKILL), so a lock is
never stale and a second run can tell a live first run from a dead one.

What a run starts is recorded in pid files. After a crash a pid can belong to anything, so a
pid file is believed only when its process is alive and is the program it names (by its
command line in /proc, and for servers by the folder it works in).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOCK_FILE = "run.lock"


class AlreadyRunning(Exception):
    """Another live process holds the data folder's lock; `holder` is what it wrote there."""

    def __init__(self, holder: list[str]) -> None:
        super().__init__("the data folder is in use")
        self.holder = holder


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with a file only its owner can read, with that mode from its creation:
    written then chmod-ed, a secret would be readable under the umask's mode until the chmod."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover could have any mode; O_EXCL makes a new one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def hold_lock(data: Path, *about: str) -> IO[bytes]:
    """Take the data folder's lock for as long as the returned file stays open, and write our
    pid and `about` (lines a second run shows) into it. AlreadyRunning if a live run has it."""
    fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    lock = os.fdopen(fd, "r+b")  # not inherited by children: Python's descriptors are CLOEXEC
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.read().decode(errors="replace").splitlines()
        lock.close()
        raise AlreadyRunning(holder) from None
    lock.truncate(0)
    lock.write("\n".join([str(os.getpid()), *about]).encode() + b"\n")
    lock.flush()
    return lock


# --- processes --------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """The process exists and has not exited. A zombie (exited, not yet reaped by its parent,
    as an orphan can stay in a container whose init does not reap) is not alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: the signal-0 probe (it counts zombies as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def controlling_terminal() -> int:
    """This process's controlling terminal's device number (0: none). When a terminal hangs
    up, the kernel detaches it from every process of its session at once, while it sends
    SIGHUP to the session's leader alone."""
    try:
        stat = Path("/proc/self/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[4])


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces ("" when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def works_in(pid: int, folder: Path) -> bool:
    """The process's working directory is `folder` (Postgres and Redis chdir to their data)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == folder.resolve()
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    """The number on the first line of a pid file (Postgres's postmaster.pid too)."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() and int(first) > 0 else None


def write_pid(path: Path, pid: int) -> None:
    write_private(path, f"{pid}\n".encode())


def terminate(pid: int, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Ask the process to stop with `sig`; SIGKILL it if it is still there after `timeout`."""
    for attempt, deadline in ((sig, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, attempt)
        until = time.monotonic() + deadline
        while alive(pid) and time.monotonic() < until:
            time.sleep(0.05)
        if not alive(pid):
            return


@dataclass(frozen=True)
class Recorded:
    """A process a run records: a name for messages, its pid file, how to recognise it, and
    the signal that stops it cleanly."""

    name: str
    pid_file: Path
    recognise: Callable[[int], bool]
    stop_signal: int = signal.SIGTERM
    stop_seconds: float = 15

    def running(self) -> int | None:
        """The recorded pid, if that process is alive and is what this record names."""
        pid = read_pid(self.pid_file)
        return pid if pid is not None and alive(pid) and self.recognise(pid) else None

    def stop(self) -> int | None:
        """Stop the recorded process if it runs; return its pid if it did."""
        pid = self.running()
        if pid is not None:
            terminate(pid, self.stop_signal, self.stop_seconds)
        return pid


# --- the runs of this user, so that a CLI in any folder finds them -----------------------------
#
# A run records itself in a per-user folder (config.runs_registry()) while it serves: one small
# file per data folder naming it. A CLI command started elsewhere reads these to find the data
# folder, and so the runtime.env, of the run to talk to. An entry is believed only while the
# run that wrote it still holds its data folder's lock (a run killed with SIGKILL leaves its
# entry behind; it is ignored, and removed by whoever next reads it).


@dataclass(frozen=True)
class Run:
    """A live `make run`: its data folder and the URL its API answers on."""

    data_dir: Path
    url: str


def run_pid(data: Path) -> int | None:
    """The pid of the live run holding `data`'s lock, if one does. The lock file names its
    holder on its first line; a pid is believed only when that process is alive and a run."""
    pid = read_pid(data / LOCK_FILE)
    if pid is None or not alive(pid):
        return None
    return pid if command_line(pid).split()[-1:] == ["run"] else None


def _entry(registry: Path, data: Path) -> Path:
    digest = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:16]
    return registry / f"{digest}.json"


def register(registry: Path, data: Path, url: str) -> Path:
    """Record the run of `data` (by the caller's pid); returns the entry to remove on exit."""
    entry = _entry(registry, data)
    record = {"data_dir": str(data.resolve()), "pid": os.getpid(), "url": url}
    write_private(entry, json.dumps(record).encode())
    return entry


def registered_runs(registry: Path) -> list[Run]:
    """The runs recorded in `registry` that are still alive, stale entries removed."""
    runs: list[Run] = []
    for entry in sorted(registry.glob("*.json")) if registry.is_dir() else []:
        try:
            record = json.loads(entry.read_text())
            data, pid, url = Path(record["data_dir"]), int(record["pid"]), str(record["url"])
        except (OSError, ValueError, KeyError, TypeError):
            data, pid, url = Path("/nonexistent"), -1, ""
        if run_pid(data) == pid:
            runs.append(Run(data, url))
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return runs
