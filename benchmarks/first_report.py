"""Time to the first reconstruction report on a fresh clone: a newcomer's first minutes.

    .venv/bin/python benchmarks/first_report.py                 # clones this checkout's HEAD
    .venv/bin/python benchmarks/first_report.py --json /tmp/first.json --keep /tmp/first-clone

What it does, as the README tells a newcomer to:
1. `git clone` of the source repository into an empty folder (HEAD: commit what you measure);
2. `scripts/bootstrap` in the clone, timed: the install (.venv, the packages; pip's cache of this
   machine makes it faster than a first install anywhere else, so it is reported apart);
3. `scripts/run --port P` in the clone (the README's run command; a free port instead of 8000),
   its start is time 0; every second GET /api/v1/defaults until a default autoencoder exists;
4. one checkpoint file of the zoo built on that start (the first in name order) uploaded (POST
   /checkpoints, the newcomer's upload), a reconstruct job of it on the default autoencoder
   (POST /jobs), its long poll until it ends and its report (GET /jobs/{id}/report).
The clock stops when the report has been read. The issue's target: at most 180 s from the start
of `scripts/run` after the install. With --until-full it keeps the service running until the
full default replaced (or was kept behind) the quick one, and reports when.

Prints a markdown table (docs/benchmarks.md, "First minutes") and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1"
sys.path.insert(0, str(ROOT))

from benchmarks.load_benchmark import machine, machine_line, markdown_table  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command: list[str], cwd: Path, log: Path) -> float:
    start = time.monotonic()
    with log.open("ab") as out:
        subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - start


def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT to the service's process group (Ctrl-C), SIGKILL if it is still there after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def first_default(client: httpx.Client, proc: subprocess.Popen, timeout_s: float) -> dict[str, Any]:
    """Polls GET /defaults until an autoencoder serves; returns the whole answer then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"scripts/run exited with {proc.returncode} before a default existed")
        try:
            answer = client.get(f"{API}/defaults")
            if answer.status_code == 200 and answer.json()["autoencoders"]:
                return answer.json()
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(1.0)
    raise RuntimeError(f"no default autoencoder {timeout_s:.0f} s after the start")


def upload_and_reconstruct(client: httpx.Client, checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The newcomer's first job: a checkpoint uploaded, reconstructed by the default, its report."""
    uploaded = client.post(
        f"{API}/checkpoints", files={"file": ("mine.safetensors", checkpoint.read_bytes())}
    )
    uploaded.raise_for_status()
    job = client.post(
        f"{API}/jobs",
        json={"kind": "reconstruct", "params": {"checkpoint_ids": [uploaded.json()["id"]]}},
    )
    job.raise_for_status()
    job_id = job.json()["id"]
    while True:
        state = client.get(f"{API}/jobs/{job_id}", params={"wait": 30}, timeout=60).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            break
    if state["state"] != "succeeded":
        raise RuntimeError(f"the reconstruct job ended {state['state']}: {state.get('error')}")
    report = client.get(f"{API}/jobs/{job_id}/report")
    report.raise_for_status()
    return state, report.json()


def wait_for_full_default(client: httpx.Client, proc: subprocess.Popen, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"scripts/run exited with {proc.returncode} while preparing the full default")
        answer = client.get(f"{API}/defaults").json()
        if answer["builds"] and all(build["state"] != "preparing" for build in answer["builds"]):
            return answer
        time.sleep(5.0)
    raise RuntimeError(f"the default build still preparing {timeout_s:.0f} s after the start")


def measure(args: argparse.Namespace, clone: Path) -> dict[str, Any]:
    log = clone.parent / f"{clone.name}.log"
    subprocess.run(["git", "clone", "--quiet", str(args.source), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"clone of {commit}; installing (log: {log})", file=sys.stderr)
    install_s = timed(["scripts/bootstrap"], clone, log)
    port = free_port()
    print(f"install {install_s:.0f} s; starting scripts/run on port {port}", file=sys.stderr)
    start = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["scripts/run", "--port", str(port)], cwd=clone, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            defaults = first_default(client, proc, args.timeout)
            default_s = time.monotonic() - start
            default = defaults["autoencoders"][0]
            print(f"a default after {default_s:.0f} s: {default['name']}", file=sys.stderr)
            # a checkpoint of the zoo the default was trained on: a file of the kind a user has
            checkpoint = min((clone / "data" / "zoos").glob("*/checkpoints/*/*.safetensors"))
            job, report = upload_and_reconstruct(client, checkpoint)
            report_s = time.monotonic() - start
            print(f"the first report after {report_s:.0f} s", file=sys.stderr)
            full = wait_for_full_default(client, proc, args.full_timeout) if args.until_full else None
            full_s = time.monotonic() - start if full else None
    finally:
        stop_group(proc)
    items = report.get("items") or report.get("results") or []
    first = items[0] if items else {}
    return {
        "commit": commit,
        "machine": machine(),
        "install_s": install_s,
        "default_s": default_s,
        "first_report_s": report_s,
        "default": default,
        "job": {"id": job["id"], "eta_s_seen": job.get("eta_s")},
        "report_first_item": first,
        "full_default_s": full_s,
        "defaults_at_end": full,
    }


def quality(default: dict[str, Any]) -> str:
    q = default.get("quality") or {}
    if q.get("agreement") is None:
        return "not evaluated"
    return f"agreement {100 * q['agreement']:.1f} % on {q.get('checkpoints')} test checkpoints"


def reported(r: dict[str, Any]) -> str:
    item = r["report_first_item"]
    if not item:
        return "target: at most 180"
    return (
        f"target: at most 180; original {100 * item['original_accuracy']:.1f} %, reconstruction "
        f"{100 * item['reconstructed_accuracy']:.1f} %, agreement {100 * item['agreement']:.1f} %"
    )


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ["`scripts/bootstrap` (the install)", f"{r['install_s']:.0f}", ""],
        [
            "`scripts/run` to a default autoencoder",
            f"{r['default_s']:.0f}",
            f"{r['default']['name']}, {quality(r['default'])}",
        ],
        [
            "`scripts/run` to the first reconstruct report",
            f"{r['first_report_s']:.0f}",
            reported(r),
        ],
    ]
    if r["full_default_s"] is not None:
        final = r["defaults_at_end"]["autoencoders"][0]
        outcome = "; ".join(b.get("outcome") or "" for b in r["defaults_at_end"]["builds"])
        rows.append(
            [
                "`scripts/run` to the full default's decision",
                f"{r['full_default_s']:.0f}",
                f"{final['name']}: {outcome}",
            ]
        )
    print(f"\nFresh clone of commit {r['commit']}; {machine_line(r['machine'])}\n")
    print(markdown_table(["step", "seconds", "what"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=ROOT, help="the repository to clone (its HEAD)")
    parser.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for a default")
    parser.add_argument("--until-full", action="store_true", help="also wait for the full default")
    parser.add_argument("--full-timeout", type=float, default=3600.0)
    parser.add_argument("--json", type=Path, help="write the measurements here too")
    args = parser.parse_args()
    if args.keep:
        result = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="zooscope-first-") as work:
            result = measure(args, Path(work) / "zooscope")
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
