"""CPU an idle embedded service costs: `zooscope serve --no-bootstrap-models`, no jobs, sampled from
/proc over a minute after a warm-up. Prints a markdown table (docs/benchmarks.md, "Service").

    .venv/bin/python benchmarks/idle_cost.py [--seconds 60]

The embedded worker polls its SQLite broker and the API's long-poll watcher reads SQLite's
data_version; this is what those loops cost when nothing happens.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from service_benchmarks import free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        listed = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        children = [int(child) for child in listed]
        found += children
        frontier += children
    return found


def cpu_seconds(pids: list[int]) -> dict[int, tuple[float, str]]:
    """utime + stime of each process, and its command line."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except FileNotFoundError:
            continue
        out[pid] = ((int(fields[11]) + int(fields[12])) / TICKS, command)
    return out


def role(command: str) -> str:
    if "uvicorn" in command or "multiprocessing.spawn" in command:  # uvicorn --workers spawns its processes
        return "API (uvicorn)"
    if "celery" in command:
        return "worker (Celery)"
    return "supervisor (zooscope serve)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to sample")
    parser.add_argument("--warm-up", type=float, default=25.0, help="seconds to let it start first")
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="zooscope-idle-")
    command = [sys.executable, "-m", "zooscope", "serve", "--port", str(free_port()),
               "--data-dir", data_dir, "--no-bootstrap-models"]  # fmt: skip
    serve = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        time.sleep(args.warm_up)
        pids = [serve.pid, *descendants(serve.pid)]
        before, started = cpu_seconds(pids), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = cpu_seconds(pids), time.monotonic() - started
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait()
    totals: dict[str, float] = {}
    for pid, (seconds, command_line) in after.items():
        used = seconds - before.get(pid, (seconds, ""))[0]
        totals[role(command_line)] = totals.get(role(command_line), 0.0) + used
    print(f"Idle embedded service, {elapsed:.0f} s sampled after a {args.warm_up:.0f} s warm-up:\n")
    print("| process (with its children) | CPU, % of one core |")
    print("|---|---|")
    for name, used in sorted(totals.items()):
        print(f"| {name} | {100 * used / elapsed:.2f} |")


if __name__ == "__main__":
    main()
