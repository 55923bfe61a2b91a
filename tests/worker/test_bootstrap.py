"""The first-start build (worker/bootstrap.py) with tiny presets, every job run in-process by the
real task bodies on SQLite: the quick default serves while the full one is prepared, and the full
one replaces it only when it evaluates better on the same checkpoints."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from app.db import artefacts, default_builds
from app.db.models import Autoencoder, Job
from app.db.session import session_scope
from worker.bootstrap import DefaultPlan, bootstrap_default_models, plans_from_environment
from worker.runner import JobContext, run_job
from worker.settings import WorkerSettings
from worker.tasks import BODIES

# The tiny zoo for both zoos (one seed, 2 epochs: 4 models, 2 of them to train on) and the tiny
# autoencoder for both defaults: seconds each.
PLAN = DefaultPlan(
    zoo_preset="tiny",
    preset="tiny",
    quick_zoo_preset="tiny",
    quick_preset="tiny",
    zoo_params={"seeds": 1, "epochs": 2},
)


class InProcessQueue:
    """Runs each job when its task is sent, in this process, with the real task body (or the one
    `bodies` puts in its place); `before` is called with the kind first."""

    def __init__(
        self,
        settings: WorkerSettings,
        before: Callable[[str], None] = lambda kind: None,
        bodies: dict[str, Callable[[JobContext], dict[str, Any]]] | None = None,
    ) -> None:
        self.settings, self.before, self.bodies = settings, before, {**BODIES, **(bodies or {})}
        self.sent: list[str] = []

    def send(self, kind: str, job_id: str) -> None:
        self.before(kind)
        self.sent.append(kind)
        assert run_job(job_id, self.bodies[kind], self.settings) == "succeeded", self._error(job_id)

    def _error(self, job_id: str) -> str:
        with session_scope(self.settings.database_url) as session:
            return str(session.get(Job, job_id).error)


def quick_scored_at(agreement: float) -> Callable[[JobContext], dict[str, Any]]:
    """The evaluate body, with the quick autoencoder's mean agreement on the full zoo's test split
    set to `agreement`: the comparison's outcome, chosen by the test (the tiny autoencoders'
    own scores are near chance, too close to order reliably)."""

    def evaluate(ctx: JobContext) -> dict[str, Any]:
        report = BODIES["evaluate"](ctx)
        report["aggregate"]["agreement"]["mean"] = agreement
        return report

    return evaluate


def defaults(settings: WorkerSettings) -> dict[str, str]:
    """architecture -> the name of its default autoencoder."""
    with session_scope(settings.database_url) as session:
        return {row.architecture_name: row.name for row in artefacts.default_autoencoders(session)}


def build_of(settings: WorkerSettings) -> tuple[str, str, list[str]]:
    with session_scope(settings.database_url) as session:
        build = default_builds.get_build(session, "tiny")
        return build.state, build.outcome or "", [s["name"] for s in build.stages if s.get("job_id")]


@pytest.mark.parametrize(("quick_agreement", "replaced"), [(0.0, True), (1.0, False)])
def test_the_quick_default_serves_until_the_full_one_evaluates_better(
    sqlite_settings: WorkerSettings, quick_agreement: float, replaced: bool
) -> None:
    serving_while_preparing: list[dict[str, str]] = []

    def before(kind: str) -> None:
        if len(queue.sent) == 2:  # the full zoo's build: the quick stages are done
            serving_while_preparing.append(defaults(sqlite_settings))

    queue = InProcessQueue(sqlite_settings, before, {"evaluate": quick_scored_at(quick_agreement)})
    messages: list[str] = []
    bootstrap_default_models(sqlite_settings, threading.Event(), messages.append, [PLAN], queue)

    assert queue.sent == ["build_zoo", "train_autoencoder", "build_zoo", "train_autoencoder", "evaluate"]
    quick = "quick default autoencoder (tiny, tiny zoo)"
    full = "default autoencoder (tiny, tiny zoo)"
    assert serving_while_preparing == [{"cnn_digits-1x8x8": quick}]
    assert defaults(sqlite_settings) == {"cnn_digits-1x8x8": full if replaced else quick}
    state, outcome, with_jobs = build_of(sqlite_settings)
    assert state == "done" and with_jobs == [stage["name"] for stage in PLAN.stages()]
    assert ("replaced the quick default" in outcome) is replaced, outcome
    assert ("the quick default stays" in outcome) is not replaced, outcome
    assert outcome in messages

    # A later start finds the build done and submits nothing.
    bootstrap_default_models(sqlite_settings, threading.Event(), messages.append, [PLAN], queue)
    assert len(queue.sent) == 5


def test_a_default_chosen_meanwhile_is_not_replaced(sqlite_settings: WorkerSettings) -> None:
    def before(kind: str) -> None:
        if kind == "evaluate":  # while the comparison runs, someone chooses another default
            with session_scope(sqlite_settings.database_url) as session:
                chosen = artefacts.add_autoencoder(
                    session, name="chosen", path="/ae", architecture_name="cnn_digits-1x8x8"
                )
                artefacts.set_default_autoencoder(session, chosen.id)

    queue = InProcessQueue(sqlite_settings, before, {"evaluate": quick_scored_at(0.0)})
    bootstrap_default_models(sqlite_settings, threading.Event(), lambda _: None, [PLAN], queue)
    assert defaults(sqlite_settings) == {"cnn_digits-1x8x8": "chosen"}
    state, outcome, _ = build_of(sqlite_settings)
    assert state == "done" and "chosen meanwhile (chosen) stays" in outcome


def test_an_architecture_with_a_default_already_gets_no_build(sqlite_settings: WorkerSettings) -> None:
    with session_scope(sqlite_settings.database_url) as session:
        artefacts.add_autoencoder(session, name="mine", path="/ae", architecture_name="cnn_digits-1x8x8")
    queue = InProcessQueue(sqlite_settings)
    bootstrap_default_models(sqlite_settings, threading.Event(), lambda _: None, [PLAN], queue)
    assert queue.sent == []
    state, outcome, _ = build_of(sqlite_settings)
    assert state == "done" and "had a default autoencoder already" in outcome
    with session_scope(sqlite_settings.database_url) as session:
        assert list(session.scalars(select(Autoencoder.name))) == ["mine"]


def test_the_environment_names_the_defaults() -> None:
    (digits,) = plans_from_environment({})
    assert (digits.zoo_preset, digits.preset, digits.quick_zoo_preset, digits.quick_preset) == (
        "digits",
        "cpu",
        "digits-quick",
        "quick",
    )
    assert digits.primary and digits.has_quick_stage
    tiny, cnn_s = plans_from_environment(
        {"ZOOSCOPE_DEFAULT_PRESET": "tiny", "ZOOSCOPE_DEFAULT_ZOOS": "tiny, tiny-cnn-s"}
    )
    assert (tiny.zoo_preset, tiny.preset, tiny.has_quick_stage, tiny.primary) == ("tiny", "tiny", False, True)
    assert (cnn_s.zoo_preset, cnn_s.has_quick_stage, cnn_s.primary) == ("tiny-cnn-s", False, False)
    assert [s["name"] for s in tiny.stages()] == ["zoo", "autoencoder"]
    with pytest.raises(ValueError, match="ZOOSCOPE_DEFAULT_ZOOS"):
        plans_from_environment({"ZOOSCOPE_DEFAULT_ZOOS": "digits,imagenet"})
    with pytest.raises(ValueError, match="ZOOSCOPE_DEFAULT_PRESET"):
        plans_from_environment({"ZOOSCOPE_DEFAULT_PRESET": "huge"})
