"""Profiling a server under load with py-spy, and reading the profile back as text.

`record()` samples a process without pausing it, Python and native frames together, into a
speedscope file (open it in https://www.speedscope.app/). `summarise()` reads that file back:
own time by package, by Python function (native time folded into the Python function that
called it) and by leaf frame (so system calls such as write() show up), and total time of
the product's own functions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.procs import ROOT


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def record(
    pid: int, seconds: int, out: Path, *, native: bool = True, rate: int = 100
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """Start py-spy in the background; wait on the returned process. Returns the command too."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy, or .[bench])")
    command = [exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate)]
    command += ["--function", "--format", "speedscope", "--output", str(out)]
    # Native frames (C extensions, system calls) need py-spy to pause the process for each
    # sample; without them it reads the process's memory while it runs.
    command.append("--native" if native else "--nonblocking")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, command


# Which package a Python frame's file belongs to; first match wins.
PACKAGES = [
    (f"{ROOT}/integration/", "product (integration/)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg (incl. its Cython protocol)"),
    ("/starlette/", "Starlette"),
    ("/uvicorn/", "uvicorn (incl. httptools)"),
    ("/pydantic", "pydantic"),
    ("/prometheus_client/", "prometheus_client"),
    ("/cryptography/", "cryptography"),
    ("/asyncio/", "event loop (uvloop, asyncio)"),
    ("/logging/", "logging"),
    ("/python3.", "other stdlib"),
]
# Frames that are on every stack and say nothing about where the time goes.
ENTRY_FRAMES = (
    "<frozen runpy>",
    "click/",
    "uvicorn/main.py",
    "uvicorn/_compat.py",
    "uvicorn/server.py",
    "asyncio/runners.py",
    "integration/__main__.py",
    "integration/cli.py",
)


def package(file: str) -> str:
    for needle, label in PACKAGES:
        if needle in file:
            return label
    return "other"


def is_python(frame: dict[str, Any]) -> bool:
    file = str(frame.get("file") or "")
    return file.endswith(".py") or file.startswith("<")


def _label(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "?")
    for marker in ("site-packages/", f"{ROOT}/", "/lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame.get('name')} ({file})"


@dataclass
class Summary:
    samples: int
    seconds: float
    native: bool
    by_package: list[tuple[str, float]]
    own_python: list[tuple[str, float]]
    own_leaf: list[tuple[str, float]]
    total_product: list[tuple[str, float]]
    total_other: list[tuple[str, float]]

    def markdown(self, top: int = 25) -> str:
        def rows(items: list[tuple[str, float]], n: int) -> list[str]:
            return [f"| `{name}` | {pct:.1f} |" for name, pct in items[:n]]

        lines = [
            f"Samples: {self.samples:,} ({self.seconds:.1f} s of non-idle time; py-spy counts a"
            " thread that is runnable but waiting for a CPU as busy, so on a saturated machine"
            " the profile includes time spent waiting to run).",
            "",
            "Own time by package (native time counted to the Python package that called it,"
            " except time in libc, listed on its own: write() and read() are system calls):",
            "",
            "| package | own % |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {pct:.1f} |" for name, pct in self.by_package]
        lines += ["", f"Top {top} Python functions by own time (native time folded in):", ""]
        lines += ["| function | own % |", "|---|---:|", *rows(self.own_python, top)]
        if self.native:
            lines += ["", f"Top {top} leaf frames, native included (system calls show here):", ""]
            lines += ["| frame | own % |", "|---|---:|", *rows(self.own_leaf, top)]
        lines += ["", "The product's functions by total time (on the stack):", ""]
        lines += ["| function | total % |", "|---|---:|", *rows(self.total_product, top)]
        lines += ["", f"Top {top} library functions by total time (entry frames left out):", ""]
        lines += ["| function | total % |", "|---|---:|", *rows(self.total_other, top)]
        return "\n".join(lines) + "\n"


def summarise(path: Path, *, native: bool) -> Summary:
    data = orjson.loads(path.read_bytes())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    labels = [_label(f) for f in frames]
    python = [is_python(f) for f in frames]
    files = [str(f.get("file") or "") for f in frames]
    # Seconds sampled per key; a sample's weight is 1 / rate.
    by_package: defaultdict[str, float] = defaultdict(float)
    own_python: defaultdict[str, float] = defaultdict(float)
    own_leaf: defaultdict[str, float] = defaultdict(float)
    total: defaultdict[str, float] = defaultdict(float)
    samples, seconds = 0, 0.0
    for profile in data["profiles"]:
        weights = profile.get("weights") or [1] * len(profile["samples"])
        for stack, weight in zip(profile["samples"], weights, strict=True):
            if not stack:
                continue
            samples += 1
            seconds += weight
            leaf = stack[-1]
            own_leaf[labels[leaf]] += weight
            py_leaf = next((i for i in reversed(stack) if python[i]), None)
            if not python[leaf] and "/libc.so" in files[leaf]:
                name = str(frames[leaf].get("name"))
                call = "other" if name.startswith("0x") else f"{name}()"
                caller = package(files[py_leaf]) if py_leaf is not None else "no Python frame"
                by_package[f"libc {call}, called from {caller}"] += weight
            elif py_leaf is not None:
                by_package[package(files[py_leaf])] += weight
            else:
                by_package["native, no Python frame"] += weight
            if py_leaf is not None:
                own_python[labels[py_leaf]] += weight
            for i in {i for i in stack if python[i]}:
                total[labels[i]] += weight

    def pct(times: dict[str, float]) -> list[tuple[str, float]]:
        ordered = sorted(times.items(), key=lambda kv: kv[1], reverse=True)
        return [(k, 100 * v / seconds) for k, v in ordered] if seconds else []

    useful = {k: v for k, v in total.items() if not any(e in k for e in ENTRY_FRAMES)}
    product = {k: v for k, v in useful.items() if "(integration/" in k}
    other = {k: v for k, v in useful.items() if k not in product}
    return Summary(
        samples,
        seconds,
        native,
        pct(by_package),
        pct(own_python),
        pct(own_leaf),
        pct(product),
        pct(other),
    )
