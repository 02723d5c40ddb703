"""Real processes for end-to-end tests: `python -m integration serve|worker` with a test env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from integration.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


class Process:
    """A child `python -m integration <command>`; its output goes to a log file for failures."""

    def __init__(
        self,
        command: str,
        env: dict[str, str],
        *,
        port: int | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.command = command
        self.port = port
        self.env = {**os.environ, **env}
        if port:
            self.env["PORT"] = str(port)
        log_dir = log_dir or ROOT / ".data-test" / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{command}-{port or os.getpid()}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "integration", self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        if self.port:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.command} did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a machine dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def serve(env: dict[str, str], **extra: str) -> Process:
    return Process("serve", {**env, **extra}, port=free_port()).start()


def worker(env: dict[str, str], **extra: str) -> Process:
    return Process("worker", {**env, **extra}).start()
