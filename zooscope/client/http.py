"""ZooscopeClient: one method per public API operation, plus `wait` for a job to finish."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from zooscope.client.errors import ClientConnectionError, ClientError, ClientTimeoutError
from zooscope.client.problems import error_from_response

# Where the API lives: the service mounts its routes under it (app/main.py imports this one), and
# the dashboard's app/api/static/api.js repeats it (tests/app/test_api_prefix.py keeps them equal).
API_PREFIX = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
LONG_POLL_S = 20.0  # one long poll of wait(); the server caps it at 60 s
# How long wait() keeps asking through a service that cannot be reached or answers 503 (a
# restart, a database coming back) before it gives up with that error.
RECONNECT_FOR_S = 120.0
RECONNECT_PAUSE_S = 0.5
LONG_POLL_SLACK_S = 10.0  # read timeout beyond the wait, for a busy server

Id = int | str
JobProgressFn = Callable[[dict[str, Any]], None]


class ZooscopeClient:
    """A thin, typed face of the REST API. Every error becomes a ClientError or a TransportError."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX, headers=headers, timeout=timeout, transport=transport
        )

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ZooscopeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        # A connect timeout means nothing answered at all, so it is a connection problem, not a slow job.
        try:
            yield
        except httpx.ConnectTimeout as exc:
            raise ClientConnectionError(f"cannot reach {self.url}: connection timed out") from exc
        except httpx.TimeoutException as exc:
            raise ClientTimeoutError(f"{self.url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ClientConnectionError(f"cannot reach {self.url}: {exc}") from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._transport_errors():
            response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    # -- health -----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    # -- checkpoints ------------------------------------------------------------------------
    def upload(self, file: str | Path | bytes, name: str | None = None) -> dict[str, Any]:
        """Uploads a .safetensors or torch state_dict file; the service deduplicates by sha256."""
        if isinstance(file, bytes):
            content, filename = file, name or "checkpoint.safetensors"
        else:
            path = Path(file)
            content, filename = path.read_bytes(), name or path.name
        files = {"file": (filename, content, "application/octet-stream")}
        return self._json("POST", "/checkpoints", files=files)

    def list_checkpoints(
        self, limit: int = 50, offset: int = 0, architecture: str | None = None, kind: str | None = None
    ) -> dict[str, Any]:
        params = _drop_none({"limit": limit, "offset": offset, "architecture": architecture, "kind": kind})
        return self._json("GET", "/checkpoints", params=params)

    def get_checkpoint(self, checkpoint_id: Id) -> dict[str, Any]:
        return self._json("GET", f"/checkpoints/{checkpoint_id}")

    def delete_checkpoint(self, checkpoint_id: Id) -> None:
        self._request("DELETE", f"/checkpoints/{checkpoint_id}")

    def download(self, checkpoint_id: Id, out: str | Path, format: str = "safetensors") -> Path:
        """Streams a checkpoint to `out`; a partial file is removed if the transfer fails."""
        out = Path(out)
        partial = out.with_name(out.name + ".part")
        path = f"/checkpoints/{checkpoint_id}/download"
        try:
            with self._transport_errors(), self._http.stream("GET", path, params={"format": format}) as r:
                if r.is_error:
                    r.read()
                    raise error_from_response(r)
                with partial.open("wb") as fh:
                    for chunk in r.iter_bytes():
                        fh.write(chunk)
            partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)
        return out

    # -- zoos and autoencoders --------------------------------------------------------------
    def list_zoos(self) -> dict[str, Any]:
        return self._json("GET", "/zoos")

    def get_zoo(self, zoo_id: Id) -> dict[str, Any]:
        return self._json("GET", f"/zoos/{zoo_id}")

    def upload_zoo_archive(
        self,
        archive: str | Path,
        name: str | None = None,
        dataset: str | None = None,
        *,
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """Uploads a zoo archive (.zip or .tar.gz, public Model Zoos layout or ours), streamed from
        the file; returns the import_zoo job it became (202). The service checks and unpacks the
        whole archive before it answers, hence the longer read `timeout`."""
        path = Path(archive)
        fields = _drop_none({"name": name, "dataset": dataset})
        read = max(timeout, self._http.timeout.read or 0.0)
        read_timeout = httpx.Timeout(self._http.timeout.connect, read=read)
        with path.open("rb") as handle:
            files = {"file": (path.name, handle, "application/octet-stream")}
            return self._json("POST", "/zoos/archives", files=files, data=fields, timeout=read_timeout)

    def list_autoencoders(self) -> dict[str, Any]:
        return self._json("GET", "/autoencoders")

    def get_autoencoder(self, autoencoder_id: Id) -> dict[str, Any]:
        return self._json("GET", f"/autoencoders/{autoencoder_id}")

    def set_default_autoencoder(self, autoencoder_id: Id) -> dict[str, Any]:
        return self._json("POST", f"/autoencoders/{autoencoder_id}/default")

    # -- jobs -------------------------------------------------------------------------------
    def submit(
        self, kind: str, params: Mapping[str, Any] | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Enqueues a job (202). With an idempotency key a retried submit returns the same job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request(
            "POST", "/jobs", json={"kind": kind, "params": dict(params or {})}, headers=headers
        )
        body = response.json() if response.content else None
        if isinstance(body, dict) and "id" in body:
            return body
        # The contract promises a Location header; a body without the job is still usable through it.
        location = response.headers.get("Location")
        if not location:
            raise ClientError(
                response.status_code,
                "Unexpected response",
                "the job was accepted but neither its id nor a Location came back",
            )
        with self._transport_errors():
            followed = self._http.get(httpx.URL(self.url).join(location))
        if followed.is_error:
            raise error_from_response(followed)
        return followed.json()

    def get_job(self, job_id: Id, wait: float = 0.0) -> dict[str, Any]:
        """A job's state; with `wait` > 0 the server holds the answer until the job ends or
        `wait` seconds pass (a long poll, at most 60 s)."""
        if wait <= 0:
            return self._json("GET", f"/jobs/{job_id}")
        read_timeout = httpx.Timeout(self._http.timeout.connect, read=wait + LONG_POLL_SLACK_S)
        return self._json("GET", f"/jobs/{job_id}", params={"wait": wait}, timeout=read_timeout)

    def list_jobs(
        self, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        params = _drop_none({"state": state, "kind": kind, "limit": limit, "offset": offset})
        return self._json("GET", "/jobs", params=params)

    def cancel(self, job_id: Id) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def report(self, job_id: Id) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}/report")

    def _get_job_through_restarts(self, job_id: Id, wait: float, deadline: float | None) -> dict[str, Any]:
        """get_job, asked again while the service is unreachable or answers 503: a job outlives a
        restart of the API (the jobs table is the truth), so a waiting client should too. For
        at most RECONNECT_FOR_S (or the caller's timeout), then the error is raised."""
        gave_up_at = time.monotonic() + RECONNECT_FOR_S
        while True:
            try:
                return self.get_job(job_id, wait=wait)
            except (ClientConnectionError, ClientError) as error:
                if isinstance(error, ClientError) and error.status != 503:
                    raise
                now = time.monotonic()
                if now >= gave_up_at or (deadline is not None and now >= deadline):
                    raise
                time.sleep(RECONNECT_PAUSE_S)

    def wait(
        self,
        job_id: Id,
        timeout: float | None = None,
        progress: JobProgressFn | None = None,
        *,
        poll_initial: float = 0.2,
        poll_max: float = 2.0,
        backoff: float = 1.5,
    ) -> dict[str, Any]:
        """Waits for a job to be succeeded, failed or cancelled, and returns its last state.

        Without a progress callback this is a chain of long polls (the server answers the moment
        the job ends). With one, it polls, so progress can be shown: the interval grows from
        poll_initial to poll_max so a short job is seen finishing quickly while a long one does
        not hammer the API. Raises ClientTimeoutError after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if progress is None:
            while True:
                left = LONG_POLL_S if deadline is None else deadline - time.monotonic()
                wait = max(0.0, min(LONG_POLL_S, left))
                asked = time.monotonic()
                job = self._get_job_through_restarts(job_id, wait, deadline)
                if job.get("state") in TERMINAL_STATES:
                    return job
                if deadline is not None and time.monotonic() >= deadline:
                    raise ClientTimeoutError(f"job {job_id} still {job.get('state')} after {timeout:g} s")
                if time.monotonic() - asked < wait / 2:  # a server that does not hold: do not spin
                    time.sleep(min(poll_initial, max(0.0, wait / 2)))
        interval = poll_initial
        while True:
            job = self._get_job_through_restarts(job_id, 0.0, deadline)
            if progress is not None:
                progress(job)
            if job.get("state") in TERMINAL_STATES:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientTimeoutError(f"job {job_id} still {job.get('state')} after {timeout:g} s")
                interval = min(interval, left)
            time.sleep(interval)
            interval = min(interval * backoff, poll_max)


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
