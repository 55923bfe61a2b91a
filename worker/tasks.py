"""One thin Celery task per job kind, registered as `zooscope.<kind>` with args [job_id].

Each body is: read the job's inputs, one call into the library with the job's progress callback,
record the outputs through app.db, return the report (stored on the job row by the runner).
The claim, heartbeat, cancellation and error policy live in worker/runner.py.

Every kind of app/job_kinds.py has exactly one body here (`job_task` refuses other kinds, and this
module fails to import, so the worker does not start, if a kind has none). Params are the API's
(app/job_kinds.py, validated there); the worker resolves what they leave as None (the default
autoencoder, the default zoo, the library's presets). Jobs the embedded mode makes for its
first-start build also carry `target: "default"` (write to the service's default zoo/autoencoder
folders).
Library imports are inside the bodies: the Celery main process forks its pool without loading
torch, and a process that never runs a kind never pays for its imports.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Task

from app.job_kinds import JOB_KINDS, job_kind
from app.queue import task_name
from worker import records
from worker.celery_app import app, settings
from worker.runner import TRANSIENT_ERRORS, JobContext, run_job

JobBody = Callable[[JobContext], dict[str, Any]]
BODIES: dict[str, JobBody] = {}  # kind -> body, to run a kind in-process (tests, benchmarks)


def job_task(kind: str) -> Callable[[JobBody], Task]:
    """Register `body` as the handler and Celery task of `kind`, with the kind's time limits."""
    job_kind(kind)  # refuses a kind app/job_kinds.py does not list

    def register(body: JobBody) -> Task:
        if kind in BODIES:
            raise ValueError(f"job kind {kind!r} has two handlers: {BODIES[kind].__name__}, {body.__name__}")
        BODIES[kind] = body
        soft, hard = settings.time_limits(kind)

        def task(self: Task, job_id: str) -> str:
            return run_job(job_id, body, settings)

        task.__name__ = task.__qualname__ = body.__name__
        task.__doc__ = body.__doc__
        return app.task(
            name=task_name(kind),
            bind=True,
            # Only errors of the claim reach Celery (runner.py): the job was not started yet.
            autoretry_for=TRANSIENT_ERRORS,
            retry_backoff=True,
            retry_backoff_max=60,
            max_retries=8,
            soft_time_limit=soft,
            time_limit=hard,
            acks_late=True,
            reject_on_worker_lost=True,
        )(task)

    return register


def _zoo_of(ctx: JobContext, ae_row: Any) -> Any:
    """The zoo an autoencoder was trained on: its data set scores reconstructions, its good
    checkpoints anchor generation."""
    if ae_row.zoo_id is None:
        raise ValueError(f"autoencoder {ae_row.id} has no zoo on record")
    return records.open_zoo(records.zoo_row(ctx, ae_row.zoo_id).path)


@job_task("encode")
def encode(ctx: JobContext) -> dict[str, Any]:
    """Embeddings (mean over token latents) of a batch of checkpoints."""
    ae_row, ae = records.load_autoencoder(ctx)
    ids = list(ctx.params["checkpoint_ids"])
    embeddings = ae.embed(records.load_checkpoints(ctx, ids))
    ctx.progress(1.0, "encoded")
    return {
        "autoencoder_id": ae_row.id,
        "dim": int(embeddings.shape[1]),
        "items": [
            {"checkpoint_id": i, "embedding": e.tolist()} for i, e in zip(ids, embeddings, strict=True)
        ],
    }


@job_task("reconstruct")
def reconstruct(ctx: JobContext) -> dict[str, Any]:
    """Reconstruct a batch of checkpoints, score each against its original, store the results."""
    from zooscope.analysis.embedding_map import reconstructions_on_map
    from zooscope.analysis.evaluation import reconstruct_and_evaluate
    from zooscope.networks.parameters import unstack
    from zooscope.progress import scaled

    with ctx.phase("load"):
        ae_row, ae = records.load_autoencoder(ctx)
        ids = list(ctx.params["checkpoint_ids"])
        state_dicts, activations = records.load_checkpoints_and_activations(ctx, ids)
        dataset = records.zoo_dataset(_zoo_of(ctx, ae_row))
    with ctx.phase("reconstruct_and_evaluate"):
        result = reconstruct_and_evaluate(
            ae,
            state_dicts,
            dataset,
            ids=ids,
            progress=scaled(ctx.progress, 0.0, 0.9),
            activations=activations,
        )
    report = result.to_dict()
    items = report["items"]
    # A reconstruction computes its original's function: it keeps its original's activation.
    architectures = [ae.architecture.with_activation(activation) for activation in activations]
    # Written after the evaluation, not on a thread beside it: on a 2-core machine a writer
    # thread slowed the evaluation by more than it saved (docs/benchmarks.md).
    with ctx.phase("store_blobs"):
        blobs = records.write_blobs(ctx, unstack(result.reconstructed), "reconstructed", architectures)
    with ctx.phase("store_rows"):
        made = records.store_checkpoints(
            ctx,
            blobs,
            kind="reconstructed",
            names=[f"reconstruction of {item['checkpoint_id']}" for item in items],
            architecture=architectures,
            accuracies=[item["reconstructed_accuracy"] for item in items],
            extras=[{"original_id": item["checkpoint_id"], "autoencoder_id": ae_row.id} for item in items],
        )
    for item, reconstruction_id in zip(items, made, strict=True):
        item["reconstruction_id"] = reconstruction_id
    placed = _on_latest_map(
        ctx,
        ae_row.id,
        lambda projection: {
            "items": reconstructions_on_map(ae, projection, ae.stack(state_dicts), result.reconstructed, ids)
        },
    )
    if placed is not None:
        report["embedding_map"] = placed
    report["autoencoder_id"] = ae_row.id
    return report


@job_task("generate")
def generate(ctx: JobContext) -> dict[str, Any]:
    """Sample new models from the latent density of the autoencoder's zoo's good checkpoints."""
    from zooscope.analysis.embedding_map import generation_on_map
    from zooscope.analysis.generation import generate as generate_models
    from zooscope.networks.parameters import unstack
    from zooscope.progress import scaled

    ae_row, ae = records.load_autoencoder(ctx)
    zoo = _zoo_of(ctx, ae_row)
    p = ctx.params
    seed = int(p.get("seed", 0))
    result = generate_models(
        ae,
        zoo,
        records.zoo_dataset(zoo),
        n_samples=int(p.get("n_samples") or 10),
        accuracy_threshold=p.get("threshold"),
        bandwidth=p.get("bandwidth") or "scott",
        seed=seed,
        progress=scaled(ctx.progress, 0.0, 0.9),
    )
    report = result.to_dict()
    n = len(result.accuracies)
    # Each generated model runs with its anchor's activation (the zoo may mix them).
    architectures = [ae.architecture.with_activation(activation) for activation in result.activations]
    report["generated_ids"] = records.store_checkpoints(
        ctx,
        records.write_blobs(ctx, unstack(result.params), "generated", architectures),
        kind="generated",
        names=[f"generated #{index} (seed {seed})" for index in range(n)],
        architecture=architectures,
        accuracies=list(result.accuracies),
        extras=[{"index": index, "seed": seed, "autoencoder_id": ae_row.id} for index in range(n)],
    )
    placed = _on_latest_map(
        ctx, ae_row.id, lambda projection: generation_on_map(ae, projection, result, report["generated_ids"])
    )
    if placed is not None:
        report["embedding_map"] = placed
    report["autoencoder_id"] = ae_row.id
    return report


@job_task("embedding_map")
def embedding_map(ctx: JobContext) -> dict[str, Any]:
    """Every checkpoint of the autoencoder's zoo on a 2-D PCA of its embeddings, and predicted
    against true test accuracy on the zoo's test split (embedding probe and weight statistics)."""
    from zooscope.analysis.embedding_map import build_embedding_map

    ae_row, ae = records.load_autoencoder(ctx)
    report = build_embedding_map(ae, _zoo_of(ctx, ae_row), progress=ctx.progress).to_dict()
    report["autoencoder_id"] = ae_row.id
    report["zoo_id"] = ae_row.zoo_id
    return report


def _on_latest_map(
    ctx: JobContext, autoencoder_id: str, place: Callable[[Any], dict[str, Any]]
) -> dict[str, Any] | None:
    """What `place` puts on the autoencoder's newest embedding map (given the map's projection),
    with the map's id; None while the autoencoder has no map (an embedding_map job makes one)."""
    from zooscope.analysis.embedding_map import Projection

    found = records.latest_embedding_map(ctx, autoencoder_id)
    if found is None:
        return None
    map_id, projection = found
    with ctx.phase("embedding_map"):
        return {"map_id": map_id, **place(Projection.from_dict(projection))}


@job_task("evaluate")
def evaluate(ctx: JobContext) -> dict[str, Any]:
    """Reconstruct and score the given checkpoints, or the test split of the autoencoder's zoo
    (or of params.zoo_id)."""
    from zooscope.analysis.evaluation import evaluate_autoencoder, reconstruct_and_evaluate
    from zooscope.errors import ZooscopeError

    ae_row, ae = records.load_autoencoder(ctx)
    if ctx.params.get("zoo_id"):
        zoo = records.open_zoo(records.zoo_row(ctx, ctx.params["zoo_id"]).path)
        if zoo.architecture.name != ae.architecture.name:
            raise ZooscopeError(
                f"zoo {ctx.params['zoo_id']} holds {zoo.architecture.name} checkpoints; "
                f"autoencoder {ae_row.id} reads {ae.architecture.name}"
            )
    else:
        zoo = _zoo_of(ctx, ae_row)
    ids = ctx.params.get("checkpoint_ids")
    if ids:
        states, activations = records.load_checkpoints_and_activations(ctx, list(ids))
        dataset = records.zoo_dataset(zoo)
        result = reconstruct_and_evaluate(
            ae, states, dataset, ids=list(ids), progress=ctx.progress, activations=activations
        )
    else:
        result = evaluate_autoencoder(ae, zoo, "test", ctx.progress)
    report = result.to_dict()
    report["autoencoder_id"] = ae_row.id
    return report


@job_task("train_autoencoder")
def train_autoencoder(ctx: JobContext) -> dict[str, Any]:
    """Train an autoencoder on a zoo, evaluate it on the zoo's test split, register it."""
    from zooscope.analysis.evaluation import evaluate_autoencoder
    from zooscope.autoencoder.config import (
        DEFAULT_AUTOENCODER_PRESET,
        TRAINING_OVERRIDES,
        AutoencoderConfig,
        TrainingConfig,
    )
    from zooscope.autoencoder.training import train_autoencoder as train
    from zooscope.progress import scaled

    p = ctx.params
    zoo_row = records.zoo_row(ctx, p.get("zoo_id")) if p.get("zoo_id") else records.default_zoo_row(ctx)
    zoo = records.open_zoo(zoo_row.path)
    preset = p.get("preset") or DEFAULT_AUTOENCODER_PRESET
    ae_config = AutoencoderConfig.preset(preset)
    # The params are named as the library's overrides; None (or absent) keeps the preset's value.
    training_config = TrainingConfig.preset(preset).with_overrides(
        {name: p.get(name) for name in TRAINING_OVERRIDES}
    )
    out_dir = _artefact_dir(ctx, "autoencoders", ctx.settings.default_autoencoder_dir)
    evaluating = bool(p.get("evaluate", True))
    trained = train(
        zoo,
        ae_config,
        training_config,
        out_dir,
        progress=scaled(ctx.progress, 0.0, 0.9 if evaluating else 1.0),
        # A re-run after a dead worker continues from the last training checkpoint.
        resume=ctx.attempt > 1,
    )
    evaluation: dict[str, Any] = {}
    if evaluating:
        evaluation = evaluate_autoencoder(trained, zoo, "test", scaled(ctx.progress, 0.9, 1.0)).to_dict()
        trained.save_evaluation(evaluation)
    ae_id = records.record_autoencoder(
        ctx,
        trained,
        name=p.get("name") or f"{zoo_row.name} autoencoder",
        zoo_id=zoo_row.id,
        evaluation=evaluation.get("aggregate", {}),
        make_default=bool(p.get("make_default", False)),
    )
    return {"autoencoder_id": ae_id, "zoo_id": zoo_row.id, "evaluation": evaluation, "path": str(out_dir)}


@job_task("build_zoo")
def build_zoo(ctx: JobContext) -> dict[str, Any]:
    """Train a population of small CNNs over a hyperparameter grid and register the zoo."""
    from zooscope.zoo.grid import ZooConfig
    from zooscope.zoo.presets import DEFAULT_ZOO_PRESET
    from zooscope.zoo.store import build_zoo as build

    p = ctx.params
    overrides: dict[str, Any] = {"dataset": p["dataset"]} if p.get("dataset") else {}
    if p.get("seeds"):
        overrides["n_seeds"] = int(p["seeds"])
    config = ZooConfig.preset(p.get("preset") or DEFAULT_ZOO_PRESET, **overrides)
    if p.get("epochs"):
        config = config.with_epochs(int(p["epochs"]))
    out_dir = _artefact_dir(ctx, "zoos", ctx.settings.default_zoo_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        zoo = records.open_zoo(str(out_dir))  # an earlier attempt wrote it (zoos are written whole)
    else:
        zoo = build(config, out_dir, progress=ctx.progress)
    zoo_id = records.record_zoo(ctx, zoo, p.get("name") or f"{config.dataset} zoo ({config.n_models} models)")
    return {"zoo_id": zoo_id, "path": str(out_dir), "n_models": config.n_models, "config": config.to_dict()}


@job_task("import_zoo")
def import_zoo(ctx: JobContext) -> dict[str, Any]:
    """Convert a public Model Zoos folder into a zoo; report the models it had to skip. The folder
    is one on the worker's machine (params.path) or an uploaded archive the API unpacked
    (params.archive_id, app/archives.py), which may also hold a zoo in our own format."""
    from app.import_roots import check_import_path
    from zooscope.zoo.import_public import import_public_zoo

    archive = None
    layout = "public"
    out_dir = _artefact_dir(ctx, "zoos", None)
    done = out_dir.is_dir() and any(out_dir.iterdir())  # an earlier attempt wrote it (written whole)
    if ctx.params.get("archive_id"):
        from app.archives import archive_folder, locate_zoo_in

        archive = archive_folder(ctx.settings.archive_dir, ctx.params["archive_id"])
        # Only this job reads the unpacked upload, and the zoo it makes is a copy in out_dir:
        # removed when the job ends, succeeded or not (the sweep removes what a dead worker left).
        ctx.when_ended(functools.partial(shutil.rmtree, archive, ignore_errors=True))
        if done:
            source = archive  # an earlier attempt copied it into out_dir: not read again
        elif not archive.is_dir():
            raise ValueError(f"the uploaded archive's folder {archive} is gone; upload the archive again")
        else:
            source, layout = locate_zoo_in(archive)
    else:
        source = check_import_path(ctx.settings, ctx.params["path"])  # again: the folder may have changed
        if not source.is_dir():
            raise ValueError(f"import source {source} is not a folder on the worker's machine")
    name = ctx.params.get("name") or source.name
    skipped: list[tuple[str, str]] = []
    if done:
        zoo = records.open_zoo(str(out_dir))
    elif layout == "zooscope":
        zoo = _copy_own_zoo(ctx, source, out_dir)
    else:
        result = import_public_zoo(source, out_dir, progress=ctx.progress, dataset=ctx.params.get("dataset"))
        zoo, skipped = result.zoo, result.skipped
    zoo_id = records.record_zoo(ctx, zoo, name)
    return {
        "zoo_id": zoo_id,
        "path": str(out_dir),
        "layout": layout,
        "skipped": [{"model": model, "reason": reason} for model, reason in skipped],
    }


def _copy_own_zoo(ctx: JobContext, source: Path, out_dir: Path) -> Any:
    """A zoo in our format from an upload: opened (its files checked), every checkpoint read with
    the safe loader, then copied into place whole (through a hidden partial folder)."""
    from zooscope.networks.checkpoints import load_checkpoint
    from zooscope.zoo.store import Zoo

    zoo = Zoo.open(source)
    checkpoints = zoo.checkpoints()
    base = source.resolve()
    for i, record in enumerate(checkpoints):
        # models.json came with the upload: a model id such as "../x" must not lead the reads out
        if not record.path.resolve().is_relative_to(base):
            raise ValueError(f"model id {record.model_id!r} leads outside the uploaded zoo")
        ctx.progress(0.9 * i / max(1, len(checkpoints)), f"checking {record.model_id} epoch {record.epoch}")
        load_checkpoint(record.path)  # raises InvalidCheckpointError naming what is wrong
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, symlinks=True)
    partial.rename(out_dir)
    ctx.progress(1.0, f"imported {len(zoo.models)} models")
    return Zoo.open(out_dir)


def _artefact_dir(ctx: JobContext, folder: str, default: Path | None) -> Path:
    """Where a job writes its zoo or autoencoder: the service default (first-start build, asked
    for with params.target = "default"), else a folder named after the job (a re-run reuses it)."""
    if ctx.params.get("target") == "default" and default is not None:
        return Path(default).resolve()
    return (ctx.settings.data_dir / folder / ctx.job_id).resolve()


def check_handlers() -> None:
    """Raise unless every kind of app/job_kinds.py has a body (a kind the API accepts but no worker
    runs would wait in its queue forever)."""
    missing = [kind for kind in JOB_KINDS if kind not in BODIES]
    if missing:
        raise RuntimeError(f"job kinds without a task in worker/tasks.py: {', '.join(missing)}")


check_handlers()  # at import: a worker missing a kind's task does not start
