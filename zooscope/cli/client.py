"""`zooscope client ...`: drive a running service from the shell, over its public API.

Exit codes scripts can trust (docs/client.md):
0 ok, 1 job failed or cancelled, 2 usage error, 3 HTTP/API error, 4 connection error, 5 timeout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from zooscope.cli import client_tables
from zooscope.cli.common import ExitCode, err, fail, out
from zooscope.client import ClientConnectionError, ClientError, ClientTimeoutError, ZooscopeClient
from zooscope.client.http import DEFAULT_URL

app = typer.Typer(no_args_is_help=True)


@app.callback()
def main(
    ctx: typer.Context,
    url: str = typer.Option(DEFAULT_URL, "--url", envvar="ZOOSCOPE_URL", help="Service base URL."),
    key: str | None = typer.Option(None, "--key", envvar="ZOOSCOPE_API_KEY", help="API key (Bearer)."),
    timeout: float = typer.Option(30.0, "--http-timeout", help="Seconds to wait for one HTTP answer."),
) -> None:
    """Talk to a running zooscope service over HTTP."""
    ctx.obj = {"url": url, "key": key, "timeout": timeout}


@contextmanager
def _client(ctx: typer.Context) -> Iterator[ZooscopeClient]:
    """A client whose errors become a message on stderr and the documented exit code."""
    try:
        with ZooscopeClient(ctx.obj["url"], ctx.obj["key"], ctx.obj["timeout"]) as client:
            yield client
    except ClientError as exc:
        raise fail(exc, ExitCode.API_ERROR) from exc
    except ClientConnectionError as exc:
        raise fail(exc, ExitCode.CONNECTION, label="connection error") from exc
    except ClientTimeoutError as exc:
        raise fail(exc, ExitCode.TIMEOUT, label="timeout") from exc


def _print_json(data: Any) -> None:
    # print(), not rich: rich would wrap long lines and break `| jq`.
    print(json.dumps(data, indent=2))


def _parse_param(text: str) -> tuple[str, Any]:
    """k=v; v is read as JSON when it parses (numbers, true, lists) and as a string otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="--param")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


@app.command()
def upload(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Checkpoint files."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's answers as JSON."),
) -> None:
    """Upload checkpoints (.safetensors or torch state_dict files)."""
    with _client(ctx) as client:
        uploaded = [client.upload(path) for path in files]
    if as_json:
        _print_json(uploaded)
    else:
        out.print(client_tables.checkpoints_table(uploaded))


zoos_app = typer.Typer(no_args_is_help=True, help="Zoos: list them, upload an archive of one.")
app.add_typer(zoos_app, name="zoos")


@zoos_app.command("upload")
def zoos_upload(
    ctx: typer.Context,
    archive: Path = typer.Argument(..., exists=True, dir_okay=False, help="A .zip or .tar.gz of a zoo."),
    name: str | None = typer.Option(None, "--name", help="The zoo's name (default: the file's)."),
    dataset: str | None = typer.Option(None, "--dataset", help="The data set, if params.json does not tell."),
    wait_: bool = typer.Option(False, "--wait", help="Wait for the import and exit with its outcome."),
    wait_timeout: float | None = typer.Option(None, "--timeout", help="Seconds to wait with --wait."),
) -> None:
    """Upload a zoo archive; it becomes an import_zoo job, whose id is printed on stdout."""
    with _client(ctx) as client:
        job = client.upload_zoo_archive(archive, name=name, dataset=dataset)
        print(job["id"])
        if wait_:
            _wait_with_bar(client, job["id"], wait_timeout)
            zoo_id = (client.report(job["id"]) or {}).get("zoo_id")
            err.print(f"zoo {zoo_id}")


@zoos_app.command("list")
def zoos_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the zoos (id, name, models, data set)."""
    with _client(ctx) as client:
        page = client.list_zoos()
    if as_json:
        _print_json(page)
        return
    for zoo in page.get("items", []):
        out.print(f"{zoo['id']}  {zoo.get('name')}  {zoo.get('n_models')} models  {zoo.get('dataset') or ''}")


@app.command()
def checkpoints(
    ctx: typer.Context,
    limit: int = typer.Option(50, min=1),
    offset: int = typer.Option(0, min=0),
    architecture: str | None = typer.Option(None),
    kind: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List checkpoints."""
    with _client(ctx) as client:
        page = client.list_checkpoints(limit, offset, architecture, kind)
    if as_json:
        _print_json(page)
    else:
        out.print(client_tables.checkpoints_table(page.get("items", [])))
        err.print(f"{len(page.get('items', []))} of {page.get('total', '?')}")


@app.command()
def jobs(
    ctx: typer.Context,
    state: str | None = typer.Option(None),
    kind: str | None = typer.Option(None),
    limit: int = typer.Option(20, min=1),
    offset: int = typer.Option(0, min=0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List recent jobs."""
    with _client(ctx) as client:
        page = client.list_jobs(state, kind, limit, offset)
    if as_json:
        _print_json(page)
    else:
        out.print(client_tables.jobs_table(page.get("items", [])))


@app.command()
def submit(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="encode, reconstruct, generate, evaluate, ..."),
    checkpoint: list[str] = typer.Option([], "--checkpoint", "-c", help="Checkpoint id (repeat)."),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE job parameter (repeat)."),
    idempotency_key: str | None = typer.Option(None, help="Retries with the same key make one job."),
    wait_: bool = typer.Option(False, "--wait", help="Wait for the job and exit with its outcome."),
    wait_timeout: float | None = typer.Option(None, "--timeout", help="Seconds to wait with --wait."),
) -> None:
    """Submit a job; prints its id on stdout (JOB=$(zooscope client submit ...))."""
    params = dict(_parse_param(p) for p in param)
    if checkpoint:
        params["checkpoint_ids"] = checkpoint
    with _client(ctx) as client:
        job = client.submit(kind, params, idempotency_key)
        print(job["id"])
        if wait_:
            _wait_with_bar(client, job["id"], wait_timeout)


@app.command()
def wait(
    ctx: typer.Context,
    job_id: str,
    timeout: float | None = typer.Option(None, "--timeout", help="Give up after this many seconds."),
) -> None:
    """Wait for a job with a progress bar; exit 0 if it succeeded, 1 if it failed or was cancelled."""
    with _client(ctx) as client:
        _wait_with_bar(client, job_id, timeout)


def seconds_text(seconds: float) -> str:
    """12.3 s, 4 min 5 s, 2.5 h: the service's ETA as the dashboard writes it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {round(seconds % 60)} s"
    return f"{seconds / 3600:.1f} h"


def _wait_with_bar(client: ZooscopeClient, job_id: str, timeout: float | None) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(f"job {job_id}", total=1.0)

        def on_poll(job: dict[str, Any]) -> None:
            label = job.get("message") or job.get("state") or ""
            if job.get("state") == "running" and job.get("eta_s") is not None:
                label += f" ({seconds_text(job['eta_s'])} left)"
            bar.update(
                task, completed=float(job.get("progress") or 0.0), description=f"job {job_id}: {label}"
            )

        job = client.wait(job_id, timeout=timeout, progress=on_poll)
    state = job.get("state")
    if state != "succeeded":
        err.print(f"[red]job {job_id} {state}[/red]: {job.get('error') or job.get('message') or ''}")
        raise typer.Exit(ExitCode.FAILED)
    err.print(f"[green]job {job_id} succeeded[/green]")


@app.command()
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Ask the service to cancel a job."""
    with _client(ctx) as client:
        job = client.cancel(job_id)
    err.print(f"job {job_id}: {(job or {}).get('state', 'cancel requested')}")


@app.command()
def report(
    ctx: typer.Context, job_id: str, as_json: bool = typer.Option(False, "--json", help="Raw JSON.")
) -> None:
    """Show a finished job's report (tables, or the raw JSON with --json)."""
    with _client(ctx) as client:
        data = client.report(job_id)
    if as_json:
        _print_json(data)
        return
    for table in client_tables.report_tables(data):
        out.print(table)


@app.command()
def download(
    ctx: typer.Context,
    checkpoint_id: str,
    out_path: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="Where to write the file."),
    format_: str = typer.Option("safetensors", "--format", help="safetensors or pt."),
) -> None:
    """Download a checkpoint (an upload, a reconstruction or a generated model)."""
    if format_ not in ("safetensors", "pt"):
        raise typer.BadParameter("must be safetensors or pt", param_hint="--format")
    with _client(ctx) as client:
        path = client.download(checkpoint_id, out_path, format_)
    err.print(f"wrote {path} ({path.stat().st_size} bytes)")
