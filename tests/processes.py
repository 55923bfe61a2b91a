"""What /proc says about processes, for the tests that kill some and check what is left."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class ProcessState(NamedTuple):
    ppid: int
    pgid: int
    state: str  # "Z": a zombie waiting for a reaper, not running


def process_table() -> dict[int, ProcessState]:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended while we looked
            table[int(entry.name)] = ProcessState(int(fields[1]), int(fields[2]), fields[0])
    return table


def live(table: dict[int, ProcessState]) -> dict[int, ProcessState]:
    return {pid: p for pid, p in table.items() if p.state != "Z"}


def children(pid: int) -> list[int]:
    return [child for child, p in live(process_table()).items() if p.ppid == pid]


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    table = live(process_table())
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        below = [child for child, p in table.items() if p.ppid == parent]
        found += below
        frontier += below
    return found


def still_running(pids: list[int]) -> list[int]:
    table = live(process_table())
    return [pid for pid in pids if pid in table]


def live_in_group(pgid: int) -> list[int]:
    return [pid for pid, p in live(process_table()).items() if p.pgid == pgid]
