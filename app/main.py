"""The FastAPI application factory.

    uvicorn app.main:create_app --factory      (or `zooscope serve`)

On start (lifespan) the database is migrated to the newest revision, so a fresh data directory
just works; the dashboard in app/api/static is served at / when it is there.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

import zooscope
from app.api.answers import AnswerCache, KeptAnswers
from app.api.conditional import RenderedBodies
from app.api.deps import SESSION_CLOSING_THREADS
from app.api.job_bodies import RENDERED_JOBS_CAPACITY
from app.api.job_events import JobEndListener
from app.api.problems import PROBLEM_RESPONSES, install_problem_handlers
from app.api.routes import autoencoders, checkpoints, defaults, embedding_maps, health, jobs, zoos
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker
from app.queue import CeleryJobQueue, JobQueue
from app.settings import Settings, get_settings
from app.storage import BlobStore, LocalBlobStore
from zooscope.client import API_PREFIX  # the client is the library's side of the HTTP contract

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "api" / "static"


def create_app(
    settings: Settings | None = None,
    *,
    queue: JobQueue | None = None,
    store: BlobStore | None = None,
    migrate: bool = True,
) -> FastAPI:
    """The API. `queue` and `store` replace the Celery client and the local blob folder (tests)."""
    settings = settings or get_settings()
    answers = AnswerCache(settings.listing_progress_lag_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate:
            await run_in_threadpool(upgrade_to_head, settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        # The threads that close request sessions (app/api/deps.py get_session), made in this loop.
        app.state.session_closing = anyio.CapacityLimiter(SESSION_CLOSING_THREADS)
        app.state.rendered_listings = RenderedBodies()
        app.state.rendered_jobs = RenderedBodies(RENDERED_JOBS_CAPACITY)
        app.state.store = store or LocalBlobStore.from_settings(settings)
        app.state.queue = queue or CeleryJobQueue(settings)
        app.state.answers = answers
        kept = answers if settings.keep_answers else None
        app.state.job_events = JobEndListener(settings.database_url, kept)
        await app.state.job_events.start()
        # What exists now (modules, torch, the app) lives as long as the process: kept out of the
        # cyclic collector's full passes, which walked all of it (~270,000 objects, 130 ms with
        # every request of the process waiting; docs/benchmarks.md, "Load").
        gc.freeze()
        try:
            yield
        finally:
            await app.state.job_events.stop()
            kept_hits, routed = answers.hits, answers.misses
            log.info("job polls answered from kept answers: %d, by the routes: %d", kept_hits, routed)
            engine.dispose()

    # FastAPIOffline: FastAPI with /docs (Swagger UI) served from the fastapi-offline package's own
    # files, not a CDN, so the API reference works on machines without internet. No ReDoc: its
    # page still fetches a logo from a CDN.
    app = FastAPIOffline(
        redoc_url=None,
        responses=PROBLEM_RESPONSES,
        title="zooscope",
        version=zooscope.__version__,
        description="Model-zoo analysis: upload checkpoints, encode, reconstruct, generate, and read "
        "fidelity reports. Errors are application/problem+json (RFC 9457).",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    # Outside the routing: a kept answer costs no routing, dependencies or session.
    app.add_middleware(KeptAnswers, cache=answers)
    for module in (checkpoints, zoos, autoencoders, defaults, embedding_maps, jobs):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(health.router)
    app.include_router(
        health.router, prefix=API_PREFIX, include_in_schema=False
    )  # the client's /api/v1/healthz
    _mount_dashboard(app)
    if not settings.auth_required:
        _document_no_authentication(app)
    return app


def _document_no_authentication(app: FastAPI) -> None:
    """Without ZOOSCOPE_AUTH_REQUIRED no route needs a key: the OpenAPI document says so (no
    bearer scheme, no per-route security) instead of declaring a key every client must send."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.pop("security", None)
            schema.get("components", {}).pop("securitySchemes", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _mount_dashboard(app: FastAPI) -> None:
    index = STATIC_DIR / "index.html"
    if not STATIC_DIR.is_dir():
        return
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if index.is_file():

        @app.get("/", include_in_schema=False)
        def dashboard() -> FileResponse:
            return FileResponse(index, media_type="text/html")


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` for tools that want a module attribute: built on first access, so importing
    # this module (tests, the worker) reads no settings and touches no database.
    if name == "app":
        return create_app()
    raise AttributeError(name)
