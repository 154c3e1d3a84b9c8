"""The FastAPI app factory: `create_app(settings)`. Routes stay thin; shared/ does the work."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.api.live_page import make_live_page_router
from functions.api.openai_audio import make_openai_audio_router
from functions.api.realtime import make_realtime_router
from functions.api.redacted_audio import redacted_audio_response
from functions.api.results import ResultUnavailable, load_results, render
from functions.api.schemas import (
    CreateJobRequest,
    CreateJobResponse,
    DeleteJobResponse,
    ErrorResponse,
    JobListResponse,
    JobResponse,
    JobStatus,
    JobStatusResponse,
    ResultFormat,
    ResultPart,
    ResultsResponse,
    StepResponse,
    SummaryPart,
    TranscriptPart,
    UsageResponse,
    UsageSummaryResponse,
    WebhookDeliveryResponse,
    safe_filename,
)
from functions.api.security import (
    Authenticator,
    Principal,
    PrincipalDep,
    SecurityError,
    check_upload,
    entra_token_verifier,
)
from shared.bus import publish_committed
from shared.config import Settings, get_settings
from shared.errors import BlobNotFound
from shared.health import install_state_metrics, readiness, worker_states
from shared.jobs import create_job, get_job, list_jobs, start_job, step_of, upload_refusal
from shared.lifecycle import decide
from shared.metrics import exposition
from shared.models import Job, utcnow
from shared.netsafety import UnsafeCallbackUrl, UnsafeFetchUrl, check_callback_url, check_fetch_url
from shared.options import JobOptions
from shared.pipeline.fetch import filename_from_url, url_host
from shared.purge import purge_job, request_purge
from shared.results import Summary, Transcript
from shared.runtime import Runtime
from shared.speech.prompt_tokens import tokens_over_limit
from shared.speech.transcriber import MAX_PROMPT_TOKENS
from shared.status import TERMINAL_STATUSES
from shared.storage.local import load_signing_key
from shared.subtitle_cues import CUE_SECONDS, LINE_CHARS, LINES, CueRules
from shared.tracing import configure_tracing, current_traceparent
from shared.uploads import let_go, take_in
from shared.usage import Rates, Usage, job_usage, total_usage
from shared.webhooks import deliver_now
from shared.workflow import Event, WorkflowType

log = logging.getLogger(__name__)

_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(status_code=status, content=body)


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


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A session per request; handlers that change state commit explicitly before answering."""
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON"},
    401: {"model": ErrorResponse, "description": "No API key, or one that is not valid"},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse, "description": "Too many requests for this key; see Retry-After"},
}


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
        from functions.api.blobs import make_blob_router

        authenticator: Authenticator = app.state.authenticator
        app.include_router(
            make_blob_router(
                settings,
                runtime.blobs,
                upload_gate=_upload_gate(runtime),
                write_limiter=authenticator.limiter.acquire,
            )
        )

    _add_job_routes(app, settings)
    app.include_router(make_openai_audio_router(settings))
    app.include_router(make_realtime_router(settings, load_signing_key(settings)))
    app.include_router(make_live_page_router())
    _add_health_routes(app)
    # FastAPI makes a server span per request (continuing a caller's traceparent) once a provider is set.
    configure_tracing(settings, service_name="speechflow-api")
    install_state_metrics(runtime)
    return app


def _upload_gate(runtime: Runtime) -> Callable[[str, str], str | None]:
    """Upload URLs write `{job_id}/{file}` in the audio container, and only while that job has not
    started (shared.jobs.upload_refusal); nothing else is written through a signed URL."""
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


def _job_or_404(session: Session, job_id: uuid.UUID, principal: Principal, *, for_update: bool = False) -> Job:
    """The caller's job; another key's job answers 404 exactly as a job that does not exist."""
    job = get_job(session=session, job_id=job_id, for_update=for_update)
    if job is None or not principal.owns(job):
        raise ApiError(404, "not_found", f"job {job_id} not found")
    return job


def _queue(session: Session, runtime: Runtime, job: Job, *, refused: str) -> None:
    """pending_upload → queued with its job_started event, committed and published; 409 if the job was
    not pending_upload any more."""
    queued = start_job(
        session=session,
        bus=runtime.bus,
        queue=runtime.settings.job_events_queue,
        job_id=job.id,
        traceparent=current_traceparent(),
    )
    if not queued:
        raise ApiError(409, "conflict", refused)
    session.commit()
    publish_committed(runtime.bus)


def shown_options(stored: dict[str, Any] | None) -> dict[str, Any]:
    """A job's options as answers show them: audio_url without its query, which may be a secret (a SAS)."""
    shown = dict(stored or {})
    url = shown.get("audio_url")
    if isinstance(url, str):
        with contextlib.suppress(ValueError):
            shown["audio_url"] = urlsplit(url)._replace(query="", fragment="").geturl()
    return shown


def usage_of(job: Job, rates: Rates) -> UsageResponse:
    """The job's usage from its step rows (shared/usage.py); kept when the job is purged."""
    return UsageResponse.model_validate(_usage_of(job, rates).as_dict())


def job_response(job: Job, settings: Settings | None = None) -> JobResponse:
    return JobResponse(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        workflow_type=job.workflow_type,  # type: ignore[arg-type]
        audio_filename=job.audio_filename,
        source_language=job.source_language,
        detected_language=job.detected_language,
        language_confidence=job.language_confidence,
        target_language=job.target_language,
        source_job_id=job.source_job_id,
        error_message=job.error_message,
        options=shown_options(job.options),
        steps=[
            StepResponse(
                step_type=step.step_type,
                status=step.status,  # type: ignore[arg-type]
                worker_id=step.worker_id,
                retry_count=step.retry_count,
                started_at=step.started_at,
                completed_at=step.completed_at,
                error_message=step.error_message,
                progress=step.progress,
                details=step.details,
            )
            for step in job.steps
        ],
        webhooks=[
            WebhookDeliveryResponse(
                webhook_id=delivery.id,
                event_type=delivery.event_type,
                status=delivery.status,  # type: ignore[arg-type]
                attempts=delivery.attempts,
                last_status_code=delivery.last_status_code,
                last_error=delivery.last_error,
                next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
                delivered_at=delivery.delivered_at,
            )
            for delivery in job.webhook_deliveries
        ],
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
        usage=usage_of(job, Rates.of(settings or get_settings())),
        audio_deleted_at=job.audio_deleted_at,
        purge_requested_at=job.purge_requested_at,
        purged_at=job.purged_at,
    )


def _add_job_routes(app: FastAPI, settings: Settings) -> None:
    @app.post("/jobs", status_code=201, response_model=CreateJobResponse, responses=ERRORS, tags=["jobs"])
    def submit_job(
        body: CreateJobRequest, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep
    ) -> CreateJobResponse:
        """Create a job; upload the file to `upload_url`, then start it. With `audio_url` there is nothing
        to upload: the job is queued at once and its FETCH step brings the audio."""
        upload_name = body.audio_filename
        if (tokens := tokens_over_limit(body.prompt, body.hotwords)) is not None:
            raise ApiError(
                422,
                "prompt_too_long",
                f"prompt and hotwords are {tokens} tokens together; Whisper reads at most {MAX_PROMPT_TOKENS}"
                f" ({MAX_PROMPT_TOKENS + 1} with its start-of-prompt token): shorten them",
            )
        if body.retention_seconds is not None and body.retention_seconds > settings.result_retention_seconds:
            raise ApiError(
                422,
                "validation_error",
                f"retention_seconds {body.retention_seconds} is above this server's retention of"
                f" {settings.result_retention_seconds} seconds",
            )
        if body.callback_url is not None:
            try:
                check_callback_url(str(body.callback_url), settings)
            except UnsafeCallbackUrl as refused:
                raise ApiError(422, "validation_error", str(refused)) from None
        if body.audio_url is not None:
            try:
                check_fetch_url(body.audio_url, settings)
            except UnsafeFetchUrl as refused:
                raise ApiError(422, "validation_error", str(refused)) from None
            upload_name = upload_name or filename_from_url(body.audio_url)
        filename = upload_name
        if body.source_job_id is not None:
            source = get_job(session=session, job_id=body.source_job_id)
            if source is None or not principal.owns(source):
                raise ApiError(422, "validation_error", f"source_job_id {body.source_job_id} not found")
            filename = filename or source.audio_filename
        job_id = uuid.uuid4()
        blob_path = f"{job_id}/{safe_filename(upload_name)}" if upload_name else None
        job = create_job(
            session=session,
            job_id=job_id,
            audio_filename=(filename or "transcript")[:255],
            workflow_type=body.workflow_type,
            source_language=body.source_language,
            target_language=body.target_language,
            callback_url=str(body.callback_url) if body.callback_url else None,
            source_job_id=body.source_job_id,
            audio_blob_path=blob_path,
            api_key_id=principal.id,
            options=body.options().stored(),
        )
        if body.audio_url is not None:
            # Nothing to wait for: queued in the transaction that creates the job (the FETCH step runs first).
            _queue(session, runtime, job, refused="the job could not be queued")
            host = url_host(body.audio_url)  # never the query: a SAS is a secret
            log.info("job queued to fetch from %s", host, extra={"action": "job_started", "job_id": str(job.id)})
            return CreateJobResponse(job_id=job.id, status="queued", upload_url=None, upload_expires_at=None)
        upload_url, expires_at = None, None
        if blob_path is not None:
            upload_url, expires_at = runtime.blobs.upload_url(settings.audio_container, blob_path)
        session.commit()
        log.info("job created", extra={"action": "job_created", "job_id": str(job.id)})
        return CreateJobResponse(
            job_id=job.id, status="pending_upload", upload_url=upload_url, upload_expires_at=expires_at
        )

    @app.post(
        "/jobs/{job_id}/start", status_code=202, response_model=JobStatusResponse, responses=ERRORS, tags=["jobs"]
    )
    def start(
        job_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep
    ) -> JobStatusResponse:
        """Queue the job for processing once its file is uploaded and checked (size; audio and its length)."""
        job = _job_or_404(session, job_id, principal, for_update=True)
        if job.status != "pending_upload":
            raise ApiError(409, "conflict", f"job is {job.status}, not pending_upload")
        if job.audio_blob_path and not runtime.blobs.exists(settings.audio_container, job.audio_blob_path):
            raise ApiError(409, "upload_missing", "nothing has been uploaded to upload_url yet")
        if job.source_job_id is not None:
            source = get_job(session=session, job_id=job.source_job_id)
            transcribed = source is not None and (step := step_of(source, "TRANSCRIBE")) is not None
            if not transcribed or step is None or step.status != "completed":
                raise ApiError(409, "source_not_ready", f"job {job.source_job_id} has no transcript yet")
        # The upload URL (on Azure a SAS, which cannot be withdrawn) writes `upload`; the job reads a
        # server-side copy under a name no URL covers, probed here and recorded with the start; the
        # upload goes once that has committed (shared/uploads.py).
        upload = accepted = job.audio_blob_path
        if upload is not None:
            try:
                accepted = job.audio_blob_path = take_in(runtime.blobs, settings.audio_container, job.id, upload)
            except BlobNotFound:
                raise ApiError(409, "upload_missing", "nothing has been uploaded to upload_url yet") from None
        try:
            info = check_upload(blobs=runtime.blobs, settings=settings, job=job)
            if info is not None:
                job.audio_duration_seconds = info.duration_seconds
                options = JobOptions.of(job.options)
                if options.split_channels and info.channels < 2:
                    raise ApiError(
                        422,
                        "not_multichannel",
                        f"channels=split needs one channel per speaker; the upload has {info.channels} channel",
                    )
                if options.split_channels:
                    job.options = {**(job.options or {}), "channel_count": info.channels}
        except BaseException:
            # Refused: the job stays pending_upload, naming its upload; the client may upload again.
            if accepted is not None and accepted != upload:
                runtime.blobs.delete(settings.audio_container, accepted)
            raise
        _queue(session, runtime, job, refused="job was started or cancelled meanwhile")
        if upload is not None and accepted is not None:
            let_go(runtime.blobs, settings.audio_container, upload, accepted, job_id=job.id)
        log.info("job started", extra={"action": "job_started", "job_id": str(job.id)})
        return JobStatusResponse(job_id=job.id, status="queued")

    @app.get("/jobs/{job_id}", response_model=JobResponse, responses=ERRORS, tags=["jobs"])
    def read_job(job_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> JobResponse:
        """The job's status with its steps."""
        return job_response(_job_or_404(session, job_id, principal), settings)

    @app.get("/jobs", response_model=JobListResponse, responses=ERRORS, tags=["jobs"])
    def read_jobs(
        *,
        session: SessionDep,
        principal: PrincipalDep,
        status: JobStatus | None = None,
        workflow_type: WorkflowType | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,  # bounded: the databases hold 64-bit ints
    ) -> JobListResponse:
        """The caller's jobs, newest first, filtered by status and workflow type."""
        jobs, total = list_jobs(
            session=session,
            status=status,
            workflow_type=workflow_type,
            limit=limit,
            offset=offset,
            api_key_id=principal.id,
        )
        return JobListResponse(items=[job_response(job, settings) for job in jobs], total=total)

    @app.delete(
        "/jobs/{job_id}",
        response_model=DeleteJobResponse,
        response_model_exclude_none=True,
        responses={**ERRORS, 202: {"model": DeleteJobResponse, "description": "Purge recorded, not finished yet"}},
        tags=["jobs"],
    )
    def cancel(
        *,
        job_id: uuid.UUID,
        session: SessionDep,
        runtime: RuntimeDep,
        principal: PrincipalDep,
        response: Response,
        purge: bool = False,
    ) -> DeleteJobResponse:
        """A job that has not ended is cancelled: steps already completed keep their results, a running
        step stops at its next segment or chunk boundary, no further step starts; with `purge=true` its
        data is deleted too once it has stopped (202 until then). A job that has ended is purged: its
        audio, every result and the transcript text are deleted and the job stays as a tombstone
        (statuses, timings, usage); its results answer 410. Deleting a purged job again is harmless."""
        job = _job_or_404(session, job_id, principal, for_update=True)
        webhook_id = None
        if job.status in TERMINAL_STATUSES:
            purge = True
        else:
            applied = decide(session, settings=settings, job=job, event=Event(kind="cancel_requested"))
            if applied.decision.refused:
                raise ApiError(409, "conflict", applied.decision.reason)
            runtime.bus.stage_many(session, applied.messages)
            webhook_id = applied.webhook_id
            log.info("job cancelled", extra={"action": "job_cancelled", "job_id": str(job.id)})
        if purge:
            # The intent commits first: whatever happens next, the retention pass finishes the purge.
            request_purge(job)
        status = job.status
        session.commit()
        if webhook_id is not None:
            deliver_now(runtime, [webhook_id])
        if not purge:
            return DeleteJobResponse(job_id=job.id, status=status)  # type: ignore[arg-type]
        try:
            purge_job(runtime, job.id)
        except Exception:
            log.exception("purge deferred", extra={"action": "purge_deferred", "job_id": str(job.id)})
        session.expire_all()
        job = _job_or_404(session, job_id, principal)
        if job.purged_at is None:
            response.status_code = 202
        return DeleteJobResponse(
            job_id=job.id,
            status=job.status,  # type: ignore[arg-type]
            purge_requested_at=job.purge_requested_at,
            purged_at=job.purged_at,
        )

    @app.get(
        "/jobs/{job_id}/results",
        response_model=ResultsResponse,
        responses={
            **ERRORS,
            200: {"content": {"text/plain": {}, "text/vtt": {}, "application/x-subrip": {}}},
            410: {"model": ErrorResponse, "description": "The job's data was deleted (DELETE, or its retention)"},
        },
        tags=["jobs"],
    )
    def results(
        *,
        job_id: uuid.UUID,
        session: SessionDep,
        runtime: RuntimeDep,
        principal: PrincipalDep,
        format: ResultFormat = "json",
        part: ResultPart = "transcript",
        max_line_chars: Annotated[int | None, Query(ge=LINE_CHARS[0], le=LINE_CHARS[1])] = None,
        max_lines: Annotated[int | None, Query(ge=LINES[0], le=LINES[1])] = None,
        max_cue_seconds: Annotated[float | None, Query(ge=CUE_SECONDS[0], le=CUE_SECONDS[1])] = None,
    ) -> Any:
        """Everything the job has produced so far; `format=srt|vtt|txt` gives subtitles or text.
        Subtitles are cut to `max_line_chars`, `max_lines` (a cue) and `max_cue_seconds` when any is
        given, the others then following broadcast practice (42 characters, 2 lines, 7 s)."""
        rules = CueRules.of(max_line_chars=max_line_chars, max_lines=max_lines, max_cue_seconds=max_cue_seconds)
        if rules is not None and format not in ("srt", "vtt"):
            raise ApiError(
                422, "validation_error", "max_line_chars, max_lines and max_cue_seconds apply to format=srt or vtt"
            )
        job = _job_or_404(session, job_id, principal)
        if job.purge_requested_at is not None:
            when = f"at {job.purged_at.isoformat()}" if job.purged_at else "(purge in progress)"
            raise ApiError(410, "purged", f"job {job.id}'s results were deleted {when}")
        found = load_results(runtime, job)
        if found.empty:
            raise ApiError(409, "not_ready", f"job is {job.status}; no results yet")
        if format != "json":
            try:
                return render(found, format, part=part, job_id=job.id, rules=rules)
            except ResultUnavailable as unavailable:
                raise ApiError(unavailable.status, unavailable.code, unavailable.message) from None
        language = found.language
        return ResultsResponse(
            job_id=job.id,
            status=job.status,  # type: ignore[arg-type]
            language=(language.language if language else None) or job.detected_language or job.source_language,
            transcript=_text_part(found.transcript),
            translation=_text_part(found.translation),
            summary=_summary_part(found.summary),
        )

    @app.get(
        "/jobs/{job_id}/redacted-audio",
        response_class=Response,
        responses={
            **ERRORS,
            200: {"content": {"audio/wav": {}}, "description": "The upload with masked PII beeped or silenced"},
            410: {"model": ErrorResponse, "description": "Deleted with the upload (retention) or by a purge"},
        },
        tags=["jobs"],
    )
    def redacted_audio(
        *, job_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep
    ) -> Response:
        """The upload as a WAV of the same length, sample rate and channels, with every stretch where
        masked PII was spoken replaced (`redact_pii_audio: true`; a 1 kHz beep or silence). 404 when
        not asked for, 409 until it is made, 410 once deleted."""
        job = _job_or_404(session, job_id, principal)
        try:
            return redacted_audio_response(runtime, job)
        except ResultUnavailable as unavailable:
            raise ApiError(unavailable.status, unavailable.code, unavailable.message) from None

    @app.get("/usage", response_model=UsageSummaryResponse, responses=ERRORS, tags=["jobs"])
    def usage(
        *,
        session: SessionDep,
        principal: PrincipalDep,
        from_: Annotated[datetime | None, Query(alias="from")] = None,
        to: datetime | None = None,
    ) -> UsageSummaryResponse:
        """The calling key's usage and estimated cost over the jobs it created in [from, to) (ISO 8601;
        a time without a zone is UTC). Defaults: the 30 days up to now; at most 366 days at once."""
        try:
            end = _utc(to) if to is not None else utcnow()
            begin = _utc(from_) if from_ is not None else end - timedelta(days=30)
        except OverflowError:
            # A time at the calendar's edge whose zone or default range carries it past year 1 or 9999.
            raise ApiError(
                422, "validation_error", "from and to must fall between the years 1 and 9999 in UTC"
            ) from None
        if begin >= end:
            raise ApiError(422, "validation_error", "from must be before to")
        if end - begin > MAX_USAGE_RANGE:
            raise ApiError(422, "validation_error", f"the range is at most {MAX_USAGE_RANGE.days} days")
        rates = Rates.of(settings)
        jobs = list_jobs_created(session=session, api_key_id=principal.id, begin=begin, end=end)
        total = total_usage([_usage_of(job, rates) for job in jobs], rates=rates)
        return UsageSummaryResponse.model_validate({**total.as_dict(), "from_": begin, "to": end, "jobs": len(jobs)})

    del submit_job, start, read_job, read_jobs, cancel, results, usage


MAX_USAGE_RANGE = timedelta(days=366)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def list_jobs_created(*, session: Session, api_key_id: str, begin: datetime, end: datetime) -> list[Job]:
    query = (
        select(Job)
        .where(Job.api_key_id == api_key_id, Job.created_at >= begin, Job.created_at < end)
        .options(selectinload(Job.steps))
    )
    return list(session.scalars(query))


def _usage_of(job: Job, rates: Rates) -> Usage:
    return job_usage(
        audio_seconds=job.audio_duration_seconds,
        steps=[(step.step_type, step.details) for step in job.steps],
        rates=rates,
    )


def _text_part(result: Transcript | None) -> TranscriptPart | None:
    if result is None:
        return None
    return TranscriptPart(text=result.full_text(), segments=result.segments, speakers=result.speakers)


def _summary_part(result: Summary | None) -> SummaryPart | None:
    if result is None:
        return None
    return SummaryPart(summary=result.summary, key_points=result.key_points)


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["health"], responses={503: {"model": ErrorResponse}})
    def ready(runtime: RuntimeDep) -> JSONResponse:
        """Readiness: the database, blob storage and the bus can be reached. Under `make up`, also each
        worker's warm-up state (`components`) and those still loading or warming (`warming`): jobs are
        taken meanwhile, and run once their step's worker has loaded."""
        healthy, checks = readiness(runtime)
        content: dict[str, Any] = {"status": "ok" if healthy else "unavailable", "checks": checks}
        if runtime.settings.worker_probes:
            components = worker_states(runtime.settings.worker_probes)
            content["components"] = components
            content["warming"] = sorted(name for name, state in components.items() if state != "ready")
        return JSONResponse(status_code=200 if healthy else 503, content=content)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def prometheus_metrics() -> Response:
        """Prometheus exposition: this process's speechflow_* counters, jobs by status, queue depths."""
        body, content_type = exposition()
        return Response(content=body, media_type=content_type)

    del health, ready, prometheus_metrics
