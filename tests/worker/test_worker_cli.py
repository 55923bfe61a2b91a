"""`zooscope serve` and `zooscope keys` as a user types them (the commands live in worker/commands.py,
registered through the zooscope.commands entry points,
and import the service only when they run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from worker_fixtures import ROOT


def zooscope(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSCOPE_")}
    env["ZOOSCOPE_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"  # rich wraps help text to the terminal width
    return subprocess.run(
        [sys.executable, "-m", "zooscope", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_help_names_the_run_mode_options(tmp_path: Path) -> None:
    result = zooscope("serve", "--help", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--data-dir", "--no-bootstrap-models", "--shutdown-timeout"):
        assert option in result.stdout
    assert "127.0.0.1" in result.stdout  # local only unless told otherwise


def test_keys_passes_through_to_the_service_key_commands(tmp_path: Path) -> None:
    created = zooscope("keys", "create", "--name", "alice", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("zs_")
    listed = zooscope("keys", "list", data_dir=tmp_path)
    assert "alice" in listed.stdout and key not in listed.stdout  # only the prefix is ever shown
    missing = zooscope("keys", "revoke", "no-such-key", data_dir=tmp_path)
    assert missing.returncode == 1 and "no key" in missing.stderr
