"""Running wrk with bench/lua/webhook.lua and reading what it prints."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

LUA = Path(__file__).resolve().parent / "lua" / "webhook.lua"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class WrkResult:
    command: list[str]
    duration_s: float
    requests: int
    rps: float
    percentiles_ms: dict[int, float]
    non2xx_wrk: int
    socket_errors: dict[str, int]
    ok: int  # 2xx counted by the Lua script's response()
    non2xx: int  # non-2xx counted by the Lua script's response()
    statuses: dict[str, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def p50(self) -> float:
        return self.percentiles_ms[50]

    @property
    def p99(self) -> float:
        return self.percentiles_ms[99]


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unreadable wrk time {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse(output: str, command: list[str]) -> WrkResult:
    """Read wrk's --latency report and the script's `BENCH {...}` line."""
    percentiles: dict[int, float] = {}
    in_distribution = False
    for line in output.splitlines():
        if line.strip() == "Latency Distribution":
            in_distribution = True
            continue
        if in_distribution:
            match = re.fullmatch(r"\s*(\d+)%\s+(\S+)\s*", line)
            if match:
                percentiles[int(match.group(1))] = _ms(match.group(2))
                continue
            in_distribution = False
    totals = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not totals or not rps or 50 not in percentiles or 99 not in percentiles:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors
        else {}
    )
    bench_line = next((ln for ln in output.splitlines() if ln.startswith("BENCH ")), None)
    counted: dict[str, Any] = orjson.loads(bench_line[6:]) if bench_line else {}
    return WrkResult(
        command=command,
        duration_s=_ms(totals.group(2) + totals.group(3)) / 1000,
        requests=int(totals.group(1)),
        rps=float(rps.group(1)),
        percentiles_ms=percentiles,
        non2xx_wrk=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=socket_errors,
        ok=int(counted.get("ok", 0)),
        non2xx=int(counted.get("non2xx", 0)),
        statuses={str(k): int(v) for k, v in counted.get("statuses", {}).items()},
        raw=output,
    )


def run(
    url: str,
    *,
    template: Path,
    prefix: str,
    threads: int = 2,
    connections: int = 64,
    seconds: int = 20,
    batch: int = 1,
    pace_ms: int = 0,
    timeout_s: int = 10,
) -> WrkResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        f"template={template}",
        f"prefix={prefix}",
        f"batch={batch}",
        f"pace_ms={pace_ms}",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse(done.stdout, command)
