"""CPU attributed to each part of a local graph, read from /proc (Linux): Serve replicas by deployment,
Serve's proxy and controller, Ray's own daemons, Postgres, and the benchmark's client process.

Ray names a replica's process `ray::ServeReplica:<app>:<Deployment>` (its title changes to
`ray::ServeReplica:<app>:<Deployment>.<method>` while it runs a call), the proxy `ray::ProxyActor`, the
controller `ray::ServeController`; HAProxy, when Serve runs it, is `haproxy`. A `CpuMeter` finds the
processes once per phase (`start`), reads their user + system time, and `stop` gives CPU seconds per
part (cores = seconds / wall time).
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_REPLICA = re.compile(r"ray::ServeReplica:[^:]+:([A-Za-z0-9_.-]+?)(?:\.[a-z_]\w*)?$")
_NAMED = {
    "ray::ProxyActor": "serve proxy",
    "ray::ServeController": "serve controller",
    "raylet": "ray daemons",
    "gcs_server": "ray daemons",
    "postgres": "postgres",
    "haproxy": "haproxy",
}


def part_of(title: str) -> str | None:
    """The graph part a process title belongs to (None: not the graph's)."""
    first = title.split("\x00")[0].strip()
    match = _REPLICA.match(first)
    if match:
        return match.group(1)
    for prefix, part in _NAMED.items():
        if first.startswith(prefix) or Path(first.split(" ")[0]).name == prefix:
            return part
    if first.startswith("ray::") or "ray/dashboard" in first or "ray/_private" in first:
        return "ray daemons"
    return None


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\x00", " ")
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15 of stat)


def niceness(pid: int) -> tuple[int, int] | None:
    """The lowest and highest nice values among a process's threads (None: gone)."""
    values = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            values.append(int(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[16]))
        except (OSError, IndexError, ValueError):
            continue
    return (min(values), max(values)) if values else None


def _parents() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def _descendants(roots: set[int], parents: dict[int, int]) -> set[int]:
    found, grew = set(roots), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def graph_processes(pgdata: Path | None = None) -> dict[int, str]:
    """pid -> part, for the processes this one started (Ray's daemons and workers) and the embedded
    Postgres of `pgdata`, and this process as `client` (other jobs on the machine are left out)."""
    roots = {os.getpid()}
    pid_file = pgdata / "postmaster.pid" if pgdata else None
    if pid_file is not None and pid_file.is_file():
        roots.add(int(pid_file.read_text().split()[0]))
    found = {os.getpid(): "client"}
    for pid in _descendants(roots, _parents()) - {os.getpid()}:
        part = part_of(_title(pid))
        if part is not None:
            found[pid] = part
    return found


@dataclass
class CpuMeter:
    """CPU seconds per graph part over a phase (processes found at `start`)."""

    pgdata: Path | None = None
    pids: dict[int, str] = field(default_factory=dict)
    before: dict[int, float] = field(default_factory=dict)
    started: float = 0.0

    def start(self) -> CpuMeter:
        self.pids = graph_processes(self.pgdata)
        self.before = {pid: cpu_seconds(pid) or 0.0 for pid in self.pids}
        self.started = time.monotonic()
        return self

    def stop(self) -> tuple[dict[str, float], float]:
        """(part -> CPU cores used on average, wall seconds)."""
        wall = max(time.monotonic() - self.started, 1e-9)
        used: dict[str, float] = defaultdict(float)
        for pid, part in self.pids.items():
            now = cpu_seconds(pid)
            if now is not None:
                used[part] += now - self.before[pid]
        return {part: round(s / wall, 3) for part, s in sorted(used.items())}, wall


def priorities(pgdata: Path | None = None) -> dict[str, list[int]]:
    """part -> [lowest, highest] nice value among its processes' threads (the scheduler favours lower
    values; Ray lowers a worker's main thread only, so its other threads can sit at the lower end)."""
    out: dict[str, list[int]] = {}
    for pid, part in graph_processes(pgdata).items():
        nice = niceness(pid)
        if nice is not None:
            low, high = out.get(part, [nice[0], nice[1]])
            out[part] = [min(low, nice[0]), max(high, nice[1])]
    return dict(sorted(out.items()))
