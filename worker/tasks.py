"""One thin Celery task per job kind, registered as `zooscope.<kind>` with args [job_id].

Each body is: read the job's inputs, one call into the library with the job's progress callback,
record the outputs through app.db, return the report (stored on the job row by the runner).
The claim, heartbeat, cancellation and error policy live in worker/runner.py.

Params are the API's (app/api/job_params.py, validated there); the worker resolves what they
leave as None (the default autoencoder, the default zoo, the library's presets). Jobs the
embedded mode makes for its first-start build also carry `target: "default"` (write to the
service's default zoo/autoencoder folders) and may name the `tiny` presets.
Library imports are inside the bodies: the Celery main process forks its pool without loading
torch, and a process that never runs a kind never pays for its imports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Task

from app.queue import task_name
from worker import records
from worker.celery_app import app, settings
from worker.runner import TRANSIENT_ERRORS, JobContext, run_job

JobBody = Callable[[JobContext], dict[str, Any]]
BODIES: dict[str, JobBody] = {}  # kind -> body, to run a kind in-process (tests, benchmarks)


def job_task(kind: str) -> Callable[[JobBody], Task]:
    """Register `body` as the Celery task of `kind`, with the kind's time limits."""

    def register(body: JobBody) -> Task:
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
    embeddings = ae.encode(records.load_checkpoints(ctx, ids))
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
    from zooscope.analysis.evaluation import reconstruct_and_evaluate
    from zooscope.networks.parameters import unstack
    from zooscope.progress import scaled

    with ctx.phase("load"):
        ae_row, ae = records.load_autoencoder(ctx)
        ids = list(ctx.params["checkpoint_ids"])
        state_dicts = records.load_checkpoints(ctx, ids)
        dataset = records.zoo_dataset(_zoo_of(ctx, ae_row))
    with ctx.phase("reconstruct_and_evaluate"):
        result = reconstruct_and_evaluate(
            ae, state_dicts, dataset, ids=ids, progress=scaled(ctx.progress, 0.0, 0.9)
        )
    report = result.to_dict()
    items = report["items"]
    # Written after the evaluation, not on a thread beside it: on a 2-core machine a writer
    # thread slowed the evaluation by more than it saved (docs/benchmarks.md).
    with ctx.phase("store_blobs"):
        blobs = records.write_blobs(ctx, unstack(result.reconstructed), "reconstructed")
    with ctx.phase("store_rows"):
        made = records.store_checkpoints(
            ctx,
            blobs,
            kind="reconstructed",
            names=[f"reconstruction of {item['checkpoint_id']}" for item in items],
            architecture=ae.architecture,
            n_tokens=ae.token_layout.n_tokens,
            accuracies=[item["reconstructed_accuracy"] for item in items],
            extras=[{"original_id": item["checkpoint_id"], "autoencoder_id": ae_row.id} for item in items],
        )
    for item, reconstruction_id in zip(items, made, strict=True):
        item["reconstruction_id"] = reconstruction_id
    report["autoencoder_id"] = ae_row.id
    return report


@job_task("generate")
def generate(ctx: JobContext) -> dict[str, Any]:
    """Sample new models from the latent density of the autoencoder's zoo's good checkpoints."""
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
    report["generated_ids"] = records.store_checkpoints(
        ctx,
        records.write_blobs(ctx, unstack(result.params), "generated"),
        kind="generated",
        names=[f"generated #{index} (seed {seed})" for index in range(n)],
        architecture=ae.architecture,
        n_tokens=ae.token_layout.n_tokens,
        accuracies=list(result.accuracies),
        extras=[{"index": index, "seed": seed, "autoencoder_id": ae_row.id} for index in range(n)],
    )
    report["autoencoder_id"] = ae_row.id
    return report


@job_task("evaluate")
def evaluate(ctx: JobContext) -> dict[str, Any]:
    """Reconstruct and score the given checkpoints, or the test split of the autoencoder's zoo."""
    from zooscope.analysis.evaluation import evaluate_autoencoder, reconstruct_and_evaluate

    ae_row, ae = records.load_autoencoder(ctx)
    zoo = _zoo_of(ctx, ae_row)
    ids = ctx.params.get("checkpoint_ids")
    if ids:
        states = records.load_checkpoints(ctx, list(ids))
        result = reconstruct_and_evaluate(
            ae, states, records.zoo_dataset(zoo), ids=list(ids), progress=ctx.progress
        )
    else:
        result = evaluate_autoencoder(ae, zoo, "test", ctx.progress)
    report = result.to_dict()
    report["autoencoder_id"] = ae_row.id
    return report


@job_task("train_autoencoder")
def train_autoencoder(ctx: JobContext) -> dict[str, Any]:
    """Train an autoencoder on a zoo, evaluate it on the zoo's test split, register it."""
    from worker.presets import DEFAULT_PRESET, training_configs
    from zooscope.analysis.evaluation import evaluate_autoencoder
    from zooscope.autoencoder.training import train_autoencoder as train
    from zooscope.progress import scaled

    p = ctx.params
    zoo_row = records.zoo_row(ctx, p.get("zoo_id")) if p.get("zoo_id") else records.default_zoo_row(ctx)
    zoo = records.open_zoo(zoo_row.path)
    # API names -> TrainingConfig fields; None means "the preset's value".
    fields = {
        "gamma": "gamma",
        "beta": "beta",
        "query_source": "query_source",
        "epochs": "epochs",
        "learning_rate": "lr",
        "seed": "seed",
    }
    overrides = {field: p[name] for name, field in fields.items() if p.get(name) is not None}
    ae_config, training_config = training_configs(p.get("preset", DEFAULT_PRESET), overrides)
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
    from worker.presets import zoo_config
    from zooscope.zoo.store import build_zoo as build

    p = ctx.params
    overrides: dict[str, Any] = {"dataset": p.get("dataset") or "digits"}
    if p.get("seeds"):
        overrides["n_seeds"] = int(p["seeds"])
    if p.get("epochs"):
        epochs = int(p["epochs"])
        base = zoo_config(p.get("preset") or "default_digits")
        # Keep the checkpoint epochs that still exist, and always the last one.
        kept = tuple(e for e in base.checkpoint_epochs if e < epochs) + (epochs,)
        overrides.update(epochs=epochs, checkpoint_epochs=kept)
    config = zoo_config(p.get("preset") or "default_digits", overrides)
    out_dir = _artefact_dir(ctx, "zoos", ctx.settings.default_zoo_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        zoo = records.open_zoo(str(out_dir))  # an earlier attempt wrote it (zoos are written whole)
    else:
        zoo = build(config, out_dir, progress=ctx.progress)
    zoo_id = records.record_zoo(ctx, zoo, p.get("name") or f"{config.dataset} zoo ({config.n_models} models)")
    return {"zoo_id": zoo_id, "path": str(out_dir), "n_models": config.n_models, "config": config.to_dict()}


@job_task("import_zoo")
def import_zoo(ctx: JobContext) -> dict[str, Any]:
    """Convert a public Model Zoos folder into a zoo; report the models it had to skip."""
    from app.import_roots import check_import_path
    from zooscope.zoo.import_public import import_public_zoo

    source = check_import_path(ctx.settings, ctx.params["path"])  # again: the folder may have changed
    if not source.is_dir():
        raise ValueError(f"import source {source} is not a folder on the worker's machine")
    out_dir = _artefact_dir(ctx, "zoos", None)
    name = ctx.params.get("name") or source.name
    if out_dir.is_dir() and any(out_dir.iterdir()):  # an earlier attempt wrote it (written whole)
        zoo_id = records.record_zoo(ctx, records.open_zoo(str(out_dir)), name)
        return {"zoo_id": zoo_id, "path": str(out_dir), "skipped": []}
    result = import_public_zoo(source, out_dir, progress=ctx.progress, dataset=ctx.params.get("dataset"))
    zoo_id = records.record_zoo(ctx, result.zoo, name)
    return {
        "zoo_id": zoo_id,
        "path": str(out_dir),
        "skipped": [{"model": model, "reason": reason} for model, reason in result.skipped],
    }


def _artefact_dir(ctx: JobContext, folder: str, default: Path | None) -> Path:
    """Where a job writes its zoo or autoencoder: the service default (first-start build, asked
    for with params.target = "default"), else a folder named after the job (a re-run reuses it)."""
    if ctx.params.get("target") == "default" and default is not None:
        return Path(default).resolve()
    return (ctx.settings.data_dir / folder / ctx.job_id).resolve()
