"""Where the CPU went during a phase, as a percentage of one core: each named process, the
Postgres server (postmaster and all its processes), everything this bench runs, and the rest
of the machine (other processes), which on a shared 2-core machine skews every figure."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil


def _own(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def _with_reaped(p: psutil.Process) -> float:
    """Own CPU plus that of its children that have exited and been waited for."""
    t = p.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def tree_cpu_seconds(root: psutil.Process) -> float:
    """CPU seconds of a process and of every process below it."""
    total = _with_reaped(root)
    for child in root.children(recursive=True):
        try:
            total += _own(child)
        except psutil.Error:
            continue
    return total


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


def _idle_and_steal() -> tuple[float, float]:
    """Idle time, and steal: time the hypervisor ran someone else on our virtual cores (on a
    shared VM the reason two runs of the same code differ)."""
    t = psutil.cpu_times()
    return float(t.idle), float(getattr(t, "steal", 0.0))


@dataclass
class _Snapshot:
    wall: float
    busy: float
    bench: float
    postgres: float
    named: dict[str, float]
    idle: float
    steal: float


class CpuWatch:
    def __init__(self, named: dict[str, int], postmaster: int | None) -> None:
        self.named = named
        self.postmaster = postmaster
        self.start = self._snapshot()

    def _snapshot(self) -> _Snapshot:
        me = psutil.Process(os.getpid())
        bench = tree_cpu_seconds(me)
        postgres = 0.0
        if self.postmaster is not None:
            try:
                pm = psutil.Process(self.postmaster)
                postgres = tree_cpu_seconds(pm)
                if pm.pid not in {c.pid for c in me.children(recursive=True)}:
                    bench += postgres
            except psutil.Error:
                pass
        named: dict[str, float] = {}
        for name, pid in self.named.items():
            try:
                named[name] = _own(psutil.Process(pid))
            except psutil.Error:
                named[name] = 0.0
        return _Snapshot(time.monotonic(), _busy(), bench, postgres, named, *_idle_and_steal())

    def stop(self) -> dict[str, float]:
        end, start = self._snapshot(), self.start
        wall = max(end.wall - start.wall, 1e-9)

        def pct(a: float, b: float) -> float:
            return round(100 * max(a - b, 0.0) / wall, 1)

        out = {name: pct(end.named[name], start.named[name]) for name in self.named}
        if self.postmaster is not None:
            out["postgres"] = pct(end.postgres, start.postgres)
        out["whole bench"] = pct(end.bench, start.bench)
        out["other processes"] = pct(end.busy - end.bench, start.busy - start.bench)
        out["idle"] = pct(end.idle, start.idle)
        out["stolen by the hypervisor"] = pct(end.steal, start.steal)
        return out


def machine_busy(seconds: float = 2.0) -> float:
    """How busy the machine is, in % of one core, over a short look."""
    return round(float(psutil.cpu_percent(interval=seconds)) * (psutil.cpu_count() or 1), 1)
