"""The first-start build of the embedded mode: a default autoencoder for each default zoo.

Every step is an ordinary job (visible in the API and dashboard, re-run if the worker dies); this
thread only submits them one after the other, follows them, prints their progress on the
console, and records the build in `default_builds` (app/db/default_builds.py), which the API reads
to say which default is in use and what is being prepared (GET /api/v1/defaults).

ZOOSCOPE_DEFAULT_ZOOS names the zoo presets to make defaults from (comma-separated; one default
per architecture, so one preset per architecture), ZOOSCOPE_DEFAULT_PRESET the autoencoder preset
trained on them: "cpu" and the "digits" zoo unless set, "tiny" and the "tiny" zoo for tests. A
zoo with a quick stand-in (zooscope.zoo.presets.QUICK_ZOO_PRESETS: digits) is preceded by it:

1. the quick zoo and the quick autoencoder, made the default at once (a minute or two);
2. the full zoo and the full autoencoder (tens of minutes), evaluated on the full zoo's test split;
3. the quick autoencoder evaluated on the same checkpoints: the full one becomes the default only
   if its mean agreement there is higher, and only if the quick one is still the default (a
   default someone chose meanwhile stays).

A build that is done is skipped at later starts; one interrupted goes on where it stopped (the
jobs of finished stages are kept, a stage whose job failed is submitted again). A zoo preset
whose architecture has a default already, and no build on record, is left alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from app.db import artefacts, default_builds, jobs
from app.db.models import Job, Zoo
from app.db.session import session_scope
from app.queue import CeleryJobQueue, JobQueue
from worker.settings import WorkerSettings
from zooscope.autoencoder.config import (
    AUTOENCODER_PRESETS,
    DEFAULT_AUTOENCODER_PRESET,
    QUICK_AUTOENCODER_PRESET,
)
from zooscope.zoo.presets import DEFAULT_ZOO_PRESET, QUICK_ZOO_PRESETS, ZOO_PRESETS

POLL_S = 1.0
PRINT_STEP = 0.05  # print progress when it moved by this much (or the message changed)
REUSABLE = ("queued", "running", "succeeded")  # a stage's job in these states is not submitted again

Say = Callable[[str], None]


@dataclass(frozen=True)
class DefaultPlan:
    """One default to make: an autoencoder of `preset` trained on a zoo of `zoo_preset`, after a
    quick one (`quick_preset` on `quick_zoo_preset`) when there is a quick stand-in.

    `primary`: its zoo and autoencoder go to the service's default folders (the zoo that
    train_autoencoder jobs without a zoo_id use). `zoo_params` are added to both build_zoo jobs'
    params (seeds, epochs), `training` to the full train_autoencoder's (the recipe's overrides),
    `quick_training` to the quick one's."""

    zoo_preset: str
    preset: str
    quick_zoo_preset: str | None = None
    quick_preset: str | None = None
    primary: bool = False
    zoo_params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    quick_training: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.zoo_preset

    @property
    def has_quick_stage(self) -> bool:
        return self.quick_zoo_preset is not None and self.quick_preset is not None

    def title(self) -> str:
        full = f"the {self.preset} autoencoder on the {self.zoo_preset} zoo"
        if not self.has_quick_stage:
            return full
        return f"{full}, after a quick one ({self.quick_preset} on the {self.quick_zoo_preset} zoo)"

    def stages(self) -> list[dict[str, str]]:
        """The stages in order, as recorded on the build (app/db/default_builds.py)."""
        quick = [
            ("quick-zoo", "build_zoo", f"build the {self.quick_zoo_preset} zoo"),
            ("quick-autoencoder", "train_autoencoder", f"train the {self.quick_preset} autoencoder"),
        ]
        full = [
            ("zoo", "build_zoo", f"build the {self.zoo_preset} zoo"),
            ("autoencoder", "train_autoencoder", f"train the {self.preset} autoencoder"),
        ]
        compare = [("comparison", "evaluate", "score the quick autoencoder on the same test split")]
        chosen = quick + full + compare if self.has_quick_stage else full
        return [{"name": name, "kind": kind, "title": title} for name, kind, title in chosen]


def plans_from_environment(environ: dict[str, str] | None = None) -> list[DefaultPlan]:
    """The defaults ZOOSCOPE_DEFAULT_ZOOS and ZOOSCOPE_DEFAULT_PRESET ask for."""
    env = os.environ if environ is None else environ
    preset = env.get("ZOOSCOPE_DEFAULT_PRESET") or DEFAULT_AUTOENCODER_PRESET
    if preset not in AUTOENCODER_PRESETS:
        raise ValueError(f"ZOOSCOPE_DEFAULT_PRESET={preset!r}; known: {', '.join(AUTOENCODER_PRESETS)}")
    listed = env.get("ZOOSCOPE_DEFAULT_ZOOS") or ("tiny" if preset == "tiny" else DEFAULT_ZOO_PRESET)
    zoos = [name.strip() for name in listed.split(",") if name.strip()]
    unknown = [name for name in zoos if name not in ZOO_PRESETS]
    if unknown or not zoos:
        raise ValueError(f"ZOOSCOPE_DEFAULT_ZOOS={listed!r}; known zoo presets: {', '.join(ZOO_PRESETS)}")
    plans = []
    for index, zoo in enumerate(dict.fromkeys(zoos)):
        quick_zoo = QUICK_ZOO_PRESETS.get(zoo)
        plans.append(
            DefaultPlan(
                zoo_preset=zoo,
                preset=preset,
                quick_zoo_preset=quick_zoo,
                quick_preset=QUICK_AUTOENCODER_PRESET if quick_zoo else None,
                primary=index == 0,
            )
        )
    return plans


def start_bootstrap(stop: threading.Event, say: Say) -> threading.Thread:
    thread = threading.Thread(target=_bootstrap_safely, args=(stop, say), name="bootstrap", daemon=True)
    thread.start()
    return thread


def _bootstrap_safely(stop: threading.Event, say: Say) -> None:
    try:
        bootstrap_default_models(WorkerSettings(), stop, say)
    except Exception as exc:  # the service still serves; say why the defaults are missing
        say(f"first-start build stopped: {type(exc).__name__}: {exc}")


def bootstrap_default_models(
    settings: WorkerSettings,
    stop: threading.Event,
    say: Say,
    plans: list[DefaultPlan] | None = None,
    queue: JobQueue | None = None,
) -> None:
    """Make every planned default, one after the other (the first is the one a newcomer needs)."""
    plans = plans_from_environment() if plans is None else plans
    queue = queue or CeleryJobQueue(settings)
    for plan in plans:
        if stop.is_set():
            return
        _DefaultBuildRun(settings, queue, plan, stop, say).run()


class _Stopped(Exception):
    """The service is stopping: leave the build where it is (the next start goes on with it)."""


class _DefaultBuildRun:
    def __init__(
        self, settings: WorkerSettings, queue: JobQueue, plan: DefaultPlan, stop: threading.Event, say: Say
    ) -> None:
        self.settings, self.queue, self.plan, self.stop, self.say = settings, queue, plan, stop, say
        self.url = settings.database_url
        self.architecture = ""

    def run(self) -> None:
        plan = self.plan
        with session_scope(self.url) as session:
            build = default_builds.get_build(session, plan.key)
            if build is not None and build.state == "done":
                return
        architecture = self.architecture = _zoo_config(plan.zoo_preset).architecture.name
        with session_scope(self.url) as session:
            if build is None and artefacts.get_default_autoencoder(session, architecture) is not None:
                default_builds.record_existing_default(
                    session,
                    key=plan.key,
                    architecture_name=architecture,
                    outcome=f"{architecture} had a default autoencoder already: nothing was built",
                )
                return
            default_builds.start_build(
                session,
                key=plan.key,
                architecture_name=architecture,
                title=plan.title(),
                stages=plan.stages(),
            )
        self.say(f"preparing the default for {architecture}: {plan.title()}")
        try:
            state, outcome = self._stages()
        except _Stopped:
            return
        with session_scope(self.url) as session:
            default_builds.finish_build(session, plan.key, state, outcome)
        self.say(outcome)

    def _stages(self) -> tuple[str, str]:
        """Run the stages; (the build's end state, what it decided)."""
        plan = self.plan
        quick_id, quick_note = None, ""
        if plan.has_quick_stage:
            quick_id, quick_note = self._quick_default()
        zoo_params = {"preset": plan.zoo_preset, "name": f"default {plan.zoo_preset} zoo", **plan.zoo_params}
        zoo = self._stage("zoo", zoo_params)
        if zoo is None:
            return "failed", self._failed("zoo")
        params = {
            "zoo_id": zoo["zoo_id"],
            "preset": plan.preset,
            "name": f"default autoencoder ({plan.preset}, {plan.zoo_preset} zoo)",
            # It replaces a quick default only after the comparison below.
            "make_default": quick_id is None,
            **plan.training,
        }
        trained = self._stage("autoencoder", params)
        if trained is None:
            return "failed", self._failed("autoencoder") + quick_note
        full_id = trained["autoencoder_id"]
        if quick_id is None:
            return "done", f"the {plan.preset} autoencoder {full_id} is the default{quick_note}"
        scored = self._stage("comparison", {"autoencoder_id": quick_id, "zoo_id": zoo["zoo_id"]})
        if scored is None:
            return "failed", self._failed("comparison")
        return "done", self._choose(quick_id, full_id, trained["evaluation"], scored, zoo["zoo_id"])

    def _quick_default(self) -> tuple[str | None, str]:
        """The quick stages: (the quick autoencoder's id, a note when they failed)."""
        plan = self.plan
        params = {"preset": plan.quick_zoo_preset, "name": f"quick {plan.zoo_preset} zoo", **plan.zoo_params}
        zoo = self._stage("quick-zoo", params)
        if zoo is None:
            return None, "; the quick default failed: " + self._failed("quick-zoo")
        self._estimate_full_zoo(zoo)
        params = {
            "zoo_id": zoo["zoo_id"],
            "preset": plan.quick_preset,
            "name": f"quick default autoencoder ({plan.quick_preset}, {plan.quick_zoo_preset} zoo)",
            "make_default": True,
            **plan.quick_training,
        }
        trained = self._stage("quick-autoencoder", params)
        if trained is None:
            return None, "; the quick default failed: " + self._failed("quick-autoencoder")
        self.say(
            f"the quick default autoencoder {trained['autoencoder_id']} is ready; preparing the full one"
        )
        return trained["autoencoder_id"], ""

    def _choose(
        self,
        quick_id: str,
        full_id: str,
        full_report: dict[str, Any],
        quick_report: dict[str, Any],
        zoo_id: str,
    ) -> str:
        """Make the full autoencoder the default if it agrees more with the originals of the full
        zoo's test split than the quick one does; what was decided."""
        full = _mean_agreement(full_report.get("aggregate", {}))
        quick = _mean_agreement(quick_report.get("aggregate", {}))
        n = quick_report.get("aggregate", {}).get("n")
        with session_scope(self.url) as session:
            zoo = session.get(Zoo, zoo_id)
            on = f"on the {n} test checkpoints of {zoo.name if zoo else 'the full zoo'}"
            scores = f"mean agreement {_percent(full)} against {_percent(quick)} {on}"
            current = artefacts.get_default_autoencoder(session, self.architecture)
            if current is not None and current.id not in (quick_id, full_id):
                return f"the default chosen meanwhile ({current.name}) stays; {self.plan.preset}: {scores}"
            if full is not None and (quick is None or full > quick):
                artefacts.set_default_autoencoder(session, full_id)
                return f"the {self.plan.preset} autoencoder replaced the quick default: {scores}"
            return f"the quick default stays: the {self.plan.preset} autoencoder evaluated worse, {scores}"

    def _estimate_full_zoo(self, quick_zoo: dict[str, Any]) -> None:
        """The full zoo stage's estimate, from the quick zoo's build on this machine: training a
        population costs in proportion to its models x epochs."""
        with session_scope(self.url) as session:
            build = default_builds.get_build(session, self.plan.key)
            job_id = next((s["job_id"] for s in build.stages if s["name"] == "quick-zoo"), None)
            job = session.get(Job, job_id) if job_id else None
            if job is None or job.started_at is None or job.finished_at is None:
                return
            seconds = (job.finished_at - job.started_at).total_seconds()
        quick = quick_zoo.get("config", {})
        full = _zoo_config(self.plan.zoo_preset)
        quick_work = quick.get("epochs", 0) * quick_zoo.get("n_models", 0)
        if quick_work > 0:
            estimate = seconds * full.n_models * full.epochs / quick_work
            with session_scope(self.url) as session:
                default_builds.update_stage(session, self.plan.key, "zoo", estimate_s=round(estimate, 1))

    def _stage(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run one stage's job (the one of an earlier start when it is live or succeeded); its
        report, or None when it failed or was cancelled."""
        kind = next(s["kind"] for s in self.plan.stages() if s["name"] == name)
        if self.plan.primary and kind in ("build_zoo", "train_autoencoder") and not name.startswith("quick"):
            params = {**params, "target": "default"}  # into the service's default folders
        job_id = self._submit(name, kind, params)
        return self._follow(job_id)

    def _submit(self, name: str, kind: str, params: dict[str, Any]) -> str:
        """The stage's job: the one recorded for it when it is live or succeeded, else a new one,
        recorded before its task is sent (a job that is never sent is re-sent by the sweep)."""
        created = False
        with session_scope(self.url) as session:
            build = default_builds.get_build(session, self.plan.key)
            recorded = next((s.get("job_id") for s in build.stages if s["name"] == name), None)
            job = session.get(Job, recorded) if recorded else None
            if job is None and params.get("target") == "default":
                job = _live_default_job(session, kind)  # started before builds were recorded
            if job is None or job.state not in REUSABLE:
                job, created = jobs.create_job(session, kind=kind, params=params)
            job_id = job.id
            default_builds.update_stage(session, self.plan.key, name, job_id=job_id)
        if created:
            self.queue.send(kind, job_id)
        return job_id

    def _failed(self, name: str) -> str:
        with session_scope(self.url) as session:
            build = default_builds.get_build(session, self.plan.key)
            job_id = next(s.get("job_id") for s in build.stages if s["name"] == name)
            job = session.get(Job, job_id) if job_id else None
            why = (job.error or job.message or job.state) if job is not None else "not submitted"
        return f"stage {name} ({job_id}) did not succeed: {why}; it is submitted again at the next start"

    def _follow(self, job_id: str) -> dict[str, Any] | None:
        """Print the job's progress until it ends; its report if it succeeded."""
        shown = (-1.0, "")
        while not self.stop.is_set():
            with session_scope(self.url) as session:
                job = session.get(Job, job_id)
                state, progress, message, kind = job.state, job.progress, job.message, job.kind
                report, error = job.report, job.error
            if state == "succeeded":
                self.say(f"job {job_id} ({kind}) succeeded")
                return report
            if state in ("failed", "cancelled"):
                self.say(f"job {job_id} ({kind}) {state}: {error or message}")
                return None
            if progress - shown[0] >= PRINT_STEP or message != shown[1]:
                self.say(f"job {job_id} ({kind}) {state} {100 * progress:3.0f}% {message}")
                shown = (progress, message)
            time.sleep(POLL_S)
        raise _Stopped


def _live_default_job(session: Any, kind: str) -> Job | None:
    for job in session.scalars(select(Job).where(Job.kind == kind, Job.state.in_(REUSABLE))):
        if (job.params or {}).get("target") == "default":
            return job
    return None


def _zoo_config(preset: str) -> Any:
    """A zoo preset's ZooConfig. The library (and torch) is imported here, in the bootstrap
    thread, and only while there is a build to do."""
    from zooscope.zoo.grid import ZooConfig

    return ZooConfig.preset(preset)


def _mean_agreement(aggregate: dict[str, Any]) -> float | None:
    value = aggregate.get("agreement", {})
    return value.get("mean") if isinstance(value, dict) else None


def _percent(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1%}"
