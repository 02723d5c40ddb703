"""Child processes of a bench run: started with logs in files, stopped for sure at the end,
and measured (peak RSS from /proc, CPU time from psutil)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def peak_rss_mb(self) -> float | None:
        """VmHWM: the most resident memory the process has had so far."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float:
        try:
            t = psutil.Process(self.pid).cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Children:
    """Every process a run starts; `stop_all()` in a finally stops what is still running."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env={**os.environ, **self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, proc, log_path)
        self.started.append(child)
        return child

    def python(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        return self.start(name, [sys.executable, *args], env=env)

    def stop_all(self) -> None:
        for child in reversed(self.started):
            with contextlib.suppress(Exception):
                child.stop()


def wait_http(url: str, child: Child, timeout: float = 30) -> None:
    """Wait until GET url answers (any status), or fail with the child's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout}s:\n{child.log_tail()}")


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll until true or the time is up; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def postgres_cpu_seconds() -> float:
    """CPU time of every process named postgres on this machine (the bench's server)."""
    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        if p.info["name"] == "postgres" and p.info["cpu_times"] is not None:
            total += p.info["cpu_times"].user + p.info["cpu_times"].system
    return total
