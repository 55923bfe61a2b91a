"""Reading a job's inputs from, and writing its outputs to, the database and blob store.

Everything a re-run of the same job writes twice is deduplicated: checkpoints by the sha256 of
their bytes (a re-run reconstructs the same bytes), zoos and autoencoders by the job that made
them. So a job that a dead worker left half-recorded is completed, not doubled, by its re-run.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.db import artefacts
from app.db.embedding_maps import latest_map
from app.db.models import Autoencoder, Checkpoint, Zoo
from app.db.session import session_scope
from app.storage import LocalBlobStore
from worker.autoencoders import AutoencoderCache
from worker.runner import JobContext
from worker.settings import get_worker_settings
from zooscope.errors import InvalidCheckpointError, ZooscopeError

if TYPE_CHECKING:
    from app.ingest import StoredBlob

_autoencoders: AutoencoderCache | None = None
_zoos: OrderedDict[str, Any] = OrderedDict()  # opened zoos by path
_datasets: dict[str, Any] = {}  # a zoo's data set by zoo path, alive as long as the zoo is cached
ZOO_CACHE_SIZE = 2  # a zoo holds its data set in memory; workers usually serve one or two


class NotFoundError(ZooscopeError):
    """A job refers to a row that does not exist (deleted after the job was submitted)."""


def autoencoder_cache() -> AutoencoderCache:
    global _autoencoders
    if _autoencoders is None:
        _autoencoders = AutoencoderCache(get_worker_settings().autoencoder_cache_size)
    return _autoencoders


def blob_store(ctx: JobContext) -> LocalBlobStore:
    return LocalBlobStore.from_settings(ctx.settings)


# ---- inputs ------------------------------------------------------------------------------------
def autoencoder_row(ctx: JobContext) -> Autoencoder:
    """The job's autoencoder (params.autoencoder_id), or the service's one default. The API fills
    in the default of the checkpoints' architecture at submission; a job made without the API
    and without an id gets the default only while one architecture has one."""
    wanted = ctx.params.get("autoencoder_id")
    with session_scope(ctx.settings.database_url) as session:
        row = session.get(Autoencoder, wanted) if wanted else artefacts.get_default_autoencoder(session)
        if row is None:
            raise NotFoundError(
                f"autoencoder {wanted} not found"
                if wanted
                else "no single default autoencoder (none yet, or one for each of several "
                "architectures): pass params.autoencoder_id, train one (POST /jobs "
                "kind=train_autoencoder) or wait for the first-start build"
            )
        session.expunge(row)
        return row


def load_autoencoder(ctx: JobContext) -> tuple[Autoencoder, Any]:
    row = autoencoder_row(ctx)
    return row, autoencoder_cache().get(row.id, row.path)


def latest_embedding_map(ctx: JobContext, autoencoder_id: str) -> tuple[str, dict[str, Any]] | None:
    """(map id, stored projection) of the autoencoder's newest map the job's owner may see; None
    when it has none yet."""
    with session_scope(ctx.settings.database_url) as session:
        job = latest_map(session, autoencoder_id, ctx.owner_id)
        return None if job is None else (job.id, job.report["projection"])


def zoo_row(ctx: JobContext, zoo_id: str | None) -> Zoo:
    with session_scope(ctx.settings.database_url) as session:
        row = session.get(Zoo, zoo_id) if zoo_id else None
        if row is None:
            raise NotFoundError(f"zoo {zoo_id} not found")
        session.expunge(row)
        return row


def default_zoo_row(ctx: JobContext) -> Zoo:
    """The zoo in the service's default folder (built on first start)."""
    path = str(Path(ctx.settings.default_zoo_dir or "").resolve())
    with session_scope(ctx.settings.database_url) as session:
        row = artefacts.find_zoo_by_path(session, path)
        if row is None:
            raise NotFoundError("no default zoo yet; build one (kind build_zoo) or pass params.zoo_id")
        session.expunge(row)
        return row


def open_zoo(path: str) -> Any:
    """Zoo.open, kept per process: opening reads the manifest and the data set."""
    from zooscope.zoo.store import Zoo as ZooStore

    if path in _zoos:
        _zoos.move_to_end(path)
        return _zoos[path]
    zoo = ZooStore.open(path)
    _zoos[path] = zoo
    while len(_zoos) > ZOO_CACHE_SIZE:
        evicted, _ = _zoos.popitem(last=False)
        _datasets.pop(evicted, None)
    return zoo


def zoo_dataset(zoo: Any) -> Any:
    """`zoo.dataset()`, loaded once per process: reloading it per job costs more than a small
    reconstruction (a data set is read, split and normalised on every call)."""
    key = str(zoo.path)
    if key not in _datasets:
        _datasets[key] = zoo.dataset()
    return _datasets[key]


def load_checkpoints(ctx: JobContext, ids: list[str]) -> list[dict[str, Any]]:
    """The state_dicts of the job's checkpoints, in the order of `ids` (see
    `load_checkpoints_and_activations`)."""
    return load_checkpoints_and_activations(ctx, ids)[0]


def load_checkpoints_and_activations(
    ctx: JobContext, ids: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The state_dicts of the job's checkpoints and the activation each runs with (its row's
    architecture: a checkpoint of a zoo that mixes activations keeps its own), in the order of `ids`.

    Every blob was written by `checkpoint_bytes` after its upload passed `load_checkpoint` (or is a
    job's output), and is verified against its sha256 here, so it is read without that audit again
    (it cost three times the read: benchmarks/storage_microbenchmarks.py); NaN and inf are still
    refused, for the whole batch in one scan (a reconstruction can hold them).
    """
    from zooscope.networks.checkpoints import first_non_finite, load_own_checkpoint

    if not ids:
        raise ValueError("the job names no checkpoints (params.checkpoint_ids is empty)")
    store = blob_store(ctx)
    with session_scope(ctx.settings.database_url) as session:
        # Three columns, not whole rows: a batch job reads up to 1,000, and their other JSON is unused.
        query = select(Checkpoint.id, Checkpoint.blob_key, Checkpoint.architecture).where(
            Checkpoint.id.in_(ids)
        )
        found = {row.id: row for row in session.execute(query)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"checkpoints not found: {', '.join(missing)}")
    state_dicts = [load_own_checkpoint(store.read_verified(found[i].blob_key)) for i in ids]
    bad = first_non_finite(state_dicts)
    if bad is not None:
        raise InvalidCheckpointError(
            f"checkpoint {ids[bad]} holds NaN or infinite values; it cannot be scored or encoded"
        )
    return state_dicts, [found[i].architecture["activation"] for i in ids]


# ---- outputs -----------------------------------------------------------------------------------
# Made checkpoints are stored as uploads are (app/ingest.py): the same blob metadata (the
# architecture) and the same rows, without the upload's audit of bytes made just now. Imported
# in the bodies: app/ingest.py imports torch, which the Celery main process does not load.
def write_blobs(
    ctx: JobContext, state_dicts: list[dict[str, Any]], kind: str, architecture: Any
) -> list[StoredBlob]:
    """Made checkpoints (reconstructed, generated) as blobs; their rows come after, from
    `store_checkpoints` (given the same `architecture`: one for all, or one each). Touches no
    database."""
    from app.ingest import write_checkpoint_blobs

    # The header also says where a blob came from; no timestamp, so a re-run writes the same bytes.
    provenance = {"zooscope_kind": kind, "zooscope_job": ctx.job_id}
    return write_checkpoint_blobs(blob_store(ctx), state_dicts, architecture, provenance=provenance)


def store_checkpoints(
    ctx: JobContext,
    blobs: list[StoredBlob],
    *,
    kind: str,
    names: list[str],
    architecture: Any,
    accuracies: list[float | None],
    extras: list[dict[str, Any]],
) -> list[str]:
    """The rows of written blobs (`write_blobs`), in one transaction; their checkpoint ids, in order
    (a re-run finds the rows of its first run: deduplicated by sha256)."""
    from app.ingest import add_checkpoint_rows

    each = [{"accuracy": acc, "extra": extra} for acc, extra in zip(accuracies, extras, strict=True)]
    with session_scope(ctx.settings.database_url) as session:
        made = add_checkpoint_rows(
            session,
            blobs,
            architecture,
            kind=kind,
            names=names,
            owner_id=ctx.owner_id,
            each=each,
            source_job_id=ctx.job_id,
        )
    return [checkpoint_id for checkpoint_id, _ in made]


def existing_zoo(ctx: JobContext) -> Zoo | None:
    with session_scope(ctx.settings.database_url) as session:
        row = session.scalars(select(Zoo).where(Zoo.source_job_id == ctx.job_id)).first()
        if row is not None:
            session.expunge(row)
        return row


def record_zoo(ctx: JobContext, zoo: Any, name: str) -> str:
    """The zoo row of a build/import job (the existing one when a re-run gets here again)."""
    done = existing_zoo(ctx)
    if done is not None:
        return done.id
    manifest = dict(zoo.manifest)
    dataset = manifest.get("dataset")
    with session_scope(ctx.settings.database_url) as session:
        row = artefacts.add_zoo(
            session,
            name=name,
            path=str(Path(zoo.path).resolve()),
            manifest=manifest,
            summary=zoo.summary(),
            dataset=dataset.get("name") if isinstance(dataset, dict) else dataset,
            architecture=zoo.architecture.to_dict(),
            n_models=len(zoo.models),
            owner_id=ctx.owner_id,
            source_job_id=ctx.job_id,
        )
        return row.id


def record_autoencoder(
    ctx: JobContext, trained: Any, *, name: str, zoo_id: str, evaluation: dict[str, Any], make_default: bool
) -> str:
    with session_scope(ctx.settings.database_url) as session:
        row = session.scalars(select(Autoencoder).where(Autoencoder.source_job_id == ctx.job_id)).first()
        if row is not None:
            return row.id
        row = artefacts.add_autoencoder(
            session,
            name=name,
            path=str(Path(trained.directory).resolve()),
            architecture_name=trained.architecture.name,
            zoo_id=zoo_id,
            config=trained.describe(),
            training_log={"epochs": trained.training_log},
            evaluation=evaluation,
            owner_id=ctx.owner_id,
            source_job_id=ctx.job_id,
            make_default=make_default,
        )
        return row.id
