"""The FastAPI app factory, `create_app(settings)`: the error shape, the middleware, and the routers of
functions/api/routes/ (with the OpenAI front and the local upload URL). Routes stay thin; shared/ does the
work."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.api.blobs import make_blob_router
from functions.api.deps import _ERROR_CODES, ApiError, _error
from functions.api.live_page import make_live_page_router
from functions.api.openai_audio import make_openai_audio_router
from functions.api.realtime import make_realtime_router
from functions.api.routes import batches, health, jobs, results, speakers, usage
from functions.api.security import (
    Authenticator,
    SecurityError,
    entra_token_verifier,
)
from shared.core.config import Settings, get_settings
from shared.core.tracing import configure_tracing
from shared.domain.models import Job
from shared.jobs.store import upload_refusal
from shared.runtime import Runtime
from shared.storage.signing import load_signing_key
from shared.worker.health import install_state_metrics

log = logging.getLogger(__name__)


class AnswerUnexpectedErrors:
    """An exception no handler took is answered here, in the one error shape (500, the cause in the log,
    not in the answer), and goes no further.

    Left to Starlette's outermost middleware, the exception is answered and then raised again, and
    uvicorn closes a connection whose application raised: the client's next request on that keep-alive
    connection failed with ECONNRESET. Answered here, the connection stays usable. Only when part of a
    response has already gone out is the exception passed on, so the connection is closed rather than
    left with half an answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            log.error(
                "unexpected error in %s %s",
                scope.get("method"),
                scope.get("path"),
                exc_info=error,
                extra={"action": "api_unexpected_error"},
            )
            if started:
                raise
            answer = _error(500, "internal_error", "the server could not answer this request; it has been logged")
            await answer(scope, receive, send)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()
    runtime = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime.blobs.ensure_containers()
        except Exception:
            log.exception("could not create the blob containers", extra={"action": "ensure_containers_failed"})
        yield

    app = FastAPI(
        title="SpeechFlow",
        version="0.1.0",
        summary="Spoken language, transcript, translation and summary from audio.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.settings = settings

    def open_session() -> Session:
        return runtime.sessions()  # looked up per call: the runtime connects lazily

    app.state.authenticator = Authenticator(
        settings=settings, sessions=open_session, token_verifier=entra_token_verifier(settings)
    )

    @app.exception_handler(SecurityError)
    async def _security_error(_request: Request, error: SecurityError) -> JSONResponse:
        response = _error(error.status, error.code, error.message)
        response.headers.update(error.headers)
        return response

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type", "")}
            for item in error.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, p['loc'][1:])) or 'body'}: {p['msg']}" for p in problems)
        return _error(422, "validation_error", message or "invalid request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, _ERROR_CODES.get(error.status_code, "error"), str(error.detail))

    app.add_middleware(AnswerUnexpectedErrors)

    if not settings.uses_azure_blob:
        authenticator: Authenticator = app.state.authenticator
        app.include_router(
            make_blob_router(
                settings,
                runtime.blobs,
                upload_gate=_upload_gate(runtime),
                write_limiter=authenticator.limiter.acquire,
            )
        )

    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(results.router)
    app.include_router(usage.router)
    app.include_router(speakers.router)
    app.include_router(make_openai_audio_router(settings))
    app.include_router(make_realtime_router(settings, load_signing_key(settings)))
    app.include_router(make_live_page_router())
    app.include_router(health.router)
    # FastAPI makes a server span per request (continuing a caller's traceparent) once a provider is set.
    configure_tracing(settings, service_name="speechflow-api")
    install_state_metrics(runtime)
    return app


def _upload_gate(runtime: Runtime) -> Callable[[str, str], str | None]:
    """Upload URLs write `{job_id}/{file}` in the audio container, and only while that job has not
    started (shared.jobs.store.upload_refusal); nothing else is written through a signed URL."""
    audio = runtime.settings.audio_container

    def refusal(container: str, blob: str) -> str | None:
        if container != audio:
            return f"signed URLs do not write to {container}"
        try:
            job_id = uuid.UUID(blob.split("/", 1)[0])
        except ValueError:
            return "the upload URL names no job"
        with runtime.sessions() as session:
            return upload_refusal(session.get(Job, job_id))

    return refusal
