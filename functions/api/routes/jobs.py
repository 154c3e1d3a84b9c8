"""Jobs: `POST /jobs`, `POST /jobs/{id}/start`, `GET /jobs/{id}`, `GET /jobs`, `DELETE /jobs/{id}`."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from functions.api.deps import ERRORS, ApiError, RuntimeDep, SessionDep, SettingsDep, _job_or_404
from functions.api.routes.speakers import check_known_speakers
from functions.api.routes.usage import _usage_of
from functions.api.schemas import (
    CreateJobRequest,
    CreateJobResponse,
    DeleteJobResponse,
    JobListResponse,
    JobResponse,
    JobStatus,
    JobStatusResponse,
    StepResponse,
    UsageResponse,
    WebhookDeliveryResponse,
    safe_filename,
)
from functions.api.security import (
    Principal,
    PrincipalDep,
    accept_upload_or_422,
)
from shared.bus import publish_committed
from shared.core.config import Settings, get_settings
from shared.core.errors import BlobNotFound
from shared.core.netsafety import (
    Resolver,
    UnsafeCallbackUrl,
    UnsafeFetchUrl,
    check_callback_url,
    check_fetch_url,
    system_resolver,
)
from shared.core.tracing import current_traceparent
from shared.domain.models import Job
from shared.domain.status import TERMINAL_STATUSES
from shared.domain.usage import Rates
from shared.domain.workflow import Event, WorkflowType
from shared.engines.speech.prompt_tokens import tokens_over_limit
from shared.engines.speech.transcriber import MAX_PROMPT_TOKENS
from shared.jobs.batches import close_batches
from shared.jobs.lifecycle import decide
from shared.jobs.retention import purge_job, request_purge
from shared.jobs.store import create_job, get_job, list_jobs, start_job, step_of
from shared.jobs.uploads import let_go, take_in
from shared.jobs.webhooks import deliver_now
from shared.runtime import Runtime
from shared.steps.fetch import filename_from_url, url_host

log = logging.getLogger(__name__)
router = APIRouter()


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
    """A job's options as answers show them: audio_url without its query, which may be a secret (a SAS);
    the OpenAI front's known-speaker references by name, not by where their clips lie."""
    shown = dict(stored or {})
    references = shown.get("speaker_references")
    if isinstance(references, list):
        shown["speaker_references"] = [
            {"name": reference.get("name")} for reference in references if isinstance(reference, dict)
        ]
    url = shown.get("audio_url")
    if isinstance(url, str):
        with contextlib.suppress(ValueError):
            shown["audio_url"] = urlsplit(url)._replace(query="", fragment="").geturl()
    return shown


def usage_of(job: Job, rates: Rates) -> UsageResponse:
    """The job's usage from its step rows (shared/domain/usage.py); kept when the job is purged."""
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
        webhooks=[WebhookDeliveryResponse.of(delivery) for delivery in job.webhook_deliveries],
        created_at=job.created_at,
        updated_at=job.updated_at,
        completed_at=job.completed_at,
        usage=usage_of(job, Rates.of(settings or get_settings())),
        audio_deleted_at=job.audio_deleted_at,
        purge_requested_at=job.purge_requested_at,
        purged_at=job.purged_at,
        batch_id=job.batch_id,
    )


def request_refusal(body: CreateJobRequest, settings: Settings) -> ApiError | None:
    """What the route refuses in a valid request beyond the model's rules (they need the settings or a
    tokenizer), or None. The address policies are checked apart (they resolve names)."""
    if (tokens := tokens_over_limit(body.prompt, body.hotwords)) is not None:
        return ApiError(
            422,
            "prompt_too_long",
            f"prompt and hotwords are {tokens} tokens together; Whisper reads at most {MAX_PROMPT_TOKENS}"
            f" ({MAX_PROMPT_TOKENS + 1} with its start-of-prompt token): shorten them",
        )
    if body.retention_seconds is not None and body.retention_seconds > settings.result_retention_seconds:
        return ApiError(
            422,
            "validation_error",
            f"retention_seconds {body.retention_seconds} is above this server's retention of"
            f" {settings.result_retention_seconds} seconds",
        )
    return None


def create_job_from(
    body: CreateJobRequest,
    *,
    settings: Settings,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    batch_id: uuid.UUID | None = None,
    resolver: Resolver = system_resolver,
) -> CreateJobResponse:
    """Create the job a POST /jobs body asks for, in the caller's transaction (not committed): with
    `audio_url` it is queued at once (its job_started event staged), otherwise it waits for its upload.
    Raises ApiError for a request refused; POST /batches creates each item through here."""
    if (refusal := request_refusal(body, settings)) is not None:
        raise refusal
    upload_name = body.audio_filename
    if body.callback_url is not None:
        try:
            check_callback_url(str(body.callback_url), settings)
        except UnsafeCallbackUrl as refused:
            raise ApiError(422, "validation_error", str(refused)) from None
    if body.audio_url is not None:
        try:
            check_fetch_url(body.audio_url, settings, resolver=resolver)
        except UnsafeFetchUrl as refused:
            raise ApiError(422, "validation_error", str(refused)) from None
        upload_name = upload_name or filename_from_url(body.audio_url)
    if body.known_speakers:
        check_known_speakers(session, principal, body.known_speakers)
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
        batch_id=batch_id,
    )
    if body.audio_url is not None:
        # Nothing to wait for: queued in the transaction that creates the job (the FETCH step runs first).
        queued = start_job(
            session=session,
            bus=runtime.bus,
            queue=settings.job_events_queue,
            job_id=job.id,
            traceparent=current_traceparent(),
        )
        if not queued:
            raise ApiError(409, "conflict", "the job could not be queued")
        return CreateJobResponse(job_id=job.id, status="queued", upload_url=None, upload_expires_at=None)
    upload_url, expires_at = None, None
    if blob_path is not None:
        upload_url, expires_at = runtime.blobs.upload_url(settings.audio_container, blob_path)
    return CreateJobResponse(
        job_id=job.id, status="pending_upload", upload_url=upload_url, upload_expires_at=expires_at
    )


@router.post("/jobs", status_code=201, response_model=CreateJobResponse, responses=ERRORS, tags=["jobs"])
def submit_job(
    settings: SettingsDep, body: CreateJobRequest, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep
) -> CreateJobResponse:
    """Create a job; upload the file to `upload_url`, then start it. With `audio_url` there is nothing
    to upload: the job is queued at once and its FETCH step brings the audio."""
    created = create_job_from(body, settings=settings, session=session, runtime=runtime, principal=principal)
    session.commit()
    if created.status == "queued":
        publish_committed(runtime.bus)
        host = url_host(body.audio_url or "")  # never the query: a SAS is a secret
        log.info("job queued to fetch from %s", host, extra={"action": "job_started", "job_id": str(created.job_id)})
    else:
        log.info("job created", extra={"action": "job_created", "job_id": str(created.job_id)})
    return created


@router.post("/jobs/{job_id}/start", status_code=202, response_model=JobStatusResponse, responses=ERRORS, tags=["jobs"])
def start(
    settings: SettingsDep, job_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep
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
    # server-side copy under a name no URL covers, accepted here and recorded with the start; the
    # upload goes once that has committed (shared/jobs/uploads.py).
    upload = taken = job.audio_blob_path
    if upload is not None:
        try:
            taken = job.audio_blob_path = take_in(runtime.blobs, settings.audio_container, job.id, upload)
        except BlobNotFound:
            raise ApiError(409, "upload_missing", "nothing has been uploaded to upload_url yet") from None
    try:
        accepted = accept_upload_or_422(blobs=runtime.blobs, settings=settings, job=job)
        if accepted is not None:
            for column, value in accepted.job_updates(job.options).items():
                setattr(job, column, value)
    except BaseException:
        # Refused: the job stays pending_upload, naming its upload; the client may upload again.
        if taken is not None and taken != upload:
            runtime.blobs.delete(settings.audio_container, taken)
        raise
    _queue(session, runtime, job, refused="job was started or cancelled meanwhile")
    if upload is not None and taken is not None:
        let_go(runtime.blobs, settings.audio_container, upload, taken, job_id=job.id)
    log.info("job started", extra={"action": "job_started", "job_id": str(job.id)})
    return JobStatusResponse(job_id=job.id, status="queued")


@router.get("/jobs/{job_id}", response_model=JobResponse, responses=ERRORS, tags=["jobs"])
def read_job(settings: SettingsDep, job_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> JobResponse:
    """The job's status with its steps."""
    return job_response(_job_or_404(session, job_id, principal), settings)


@router.get("/jobs", response_model=JobListResponse, responses=ERRORS, tags=["jobs"])
def read_jobs(
    settings: SettingsDep,
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


@router.delete(
    "/jobs/{job_id}",
    response_model=DeleteJobResponse,
    response_model_exclude_none=True,
    responses={**ERRORS, 202: {"model": DeleteJobResponse, "description": "Purge recorded, not finished yet"}},
    tags=["jobs"],
)
def cancel(
    settings: SettingsDep,
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
    batch_webhooks: list[uuid.UUID] = []
    if job.status in TERMINAL_STATUSES:
        purge = True
    else:
        applied = decide(session, settings=settings, job=job, event=Event(kind="cancel_requested"))
        if applied.decision.refused:
            raise ApiError(409, "conflict", applied.decision.reason)
        runtime.bus.stage_many(session, applied.messages)
        webhook_id = applied.webhook_id
        batch_webhooks = close_batches(session, settings=settings, batch_ids=[job.batch_id])
        log.info("job cancelled", extra={"action": "job_cancelled", "job_id": str(job.id)})
    if purge:
        # The intent commits first: whatever happens next, the retention pass finishes the purge.
        request_purge(job)
    status = job.status
    session.commit()
    deliver_now(runtime, [webhook_id, *batch_webhooks] if webhook_id is not None else batch_webhooks)
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
