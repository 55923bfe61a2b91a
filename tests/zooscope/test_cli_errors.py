"""Every command group ends a failed command the same way: `error: ...` on stderr, nothing on
stdout, exit code 1 (ExitCode.FAILED); a bad option value is a usage error, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from zooscope.cli import app
from zooscope.cli.common import ExitCode


@pytest.mark.parametrize(
    "args",
    [
        ["zoo", "show", "{missing}"],
        ["ae", "show", "{missing}"],
        ["experiment", "ablation", "--configs", "nonsense", "--zoo", "{folder}"],
        ["encode", "{file}", "--ae", "{folder}"],
    ],
    ids=["zoo", "ae", "experiment", "encode"],
)
def test_a_failed_command_says_why_on_stderr_and_exits_1(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "not-a-checkpoint.pt").write_text("hello")
    paths = {"missing": tmp_path / "missing", "folder": tmp_path, "file": tmp_path / "not-a-checkpoint.pt"}
    result = CliRunner().invoke(app, [arg.format(**paths) for arg in args])
    assert result.exit_code == ExitCode.FAILED, result.output
    assert result.stderr.startswith("error: ") and result.stdout == ""


def test_a_bad_option_value_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ae", "evaluate", str(tmp_path), "--split", "everything"])
    assert result.exit_code == ExitCode.USAGE
    assert "--split" in result.stderr and result.stdout == ""


def test_the_ae_group_has_its_commands_without_an_import_side_effect() -> None:
    from zooscope.cli.autoencoder import app as ae_app

    assert {command.name for command in ae_app.registered_commands} == {"train", "show", "evaluate"}
