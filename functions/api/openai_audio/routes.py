"""The routes, `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`: create the job, write
and accept the upload, start it, wait for the part the answer needs."""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from functions.api.openai_audio.errors import OpenAIError, OpenAIErrorResponse, OpenAIErrorRoute
from functions.api.openai_audio.forms import (
    _MULTIPART_OVERHEAD,
    MAX_FILE_BYTES,
    AudioRequest,
    Task,
    _form_schema,
    _read_form,
    parse_request,
)
from functions.api.openai_audio.rendering import (
    OpenAIDiarized,
    OpenAIText,
    OpenAIVerbose,
    _step_views,
    answer_source,
    render_answer,
    wait_outcome,
)
from functions.api.results import load_results
from functions.api.schemas import safe_filename
from functions.api.security import Principal, PrincipalDep, accept_upload_or_422
from shared.bus import publish_committed
from shared.core.config import Settings
from shared.core.tracing import current_traceparent
from shared.domain.models import Job
from shared.domain.speaker_match import MAX_CLIP_SECONDS
from shared.engines.audio import AudioError, probe
from shared.jobs.store import create_job, get_job, start_job
from shared.jobs.uploads import input_blob_path
from shared.runtime import Runtime
from shared.storage.local import LocalBlobStore

log = logging.getLogger("functions.api.openai_audio")


_FIRST_POLL_S, _MAX_POLL_S, _POLL_GROWTH = 0.2, 2.0, 1.5


_ERROR = {"model": OpenAIErrorResponse}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The text in the response_format asked for (json and verbose_json as JSON)",
        "model": OpenAIText | OpenAIVerbose | OpenAIDiarized,
        "content": {"text/plain": {}, "text/vtt": {}, "application/x-subrip": {}, "text/event-stream": {}},
    },
    400: {**_ERROR, "description": "A field or the file cannot be used"},
    401: {**_ERROR, "description": "No API key (Authorization: Bearer), or one that is not valid"},
    409: {**_ERROR, "description": "The job was cancelled while the request waited"},
    413: {**_ERROR, "description": f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"},
    429: {**_ERROR, "description": "Too many requests for this key; see Retry-After"},
    503: {**_ERROR, "description": "The job failed after its retries, or identities cannot be checked now"},
    504: {**_ERROR, "description": "Not finished within OPENAI_WAIT_SECONDS: poll GET /jobs/{job_id}"},
}


def make_openai_audio_router(settings: Settings) -> APIRouter:
    """The two OpenAI-compatible routes; create_app includes them."""
    router = APIRouter(route_class=OpenAIErrorRoute, tags=["openai"])

    @router.post(
        "/v1/audio/transcriptions",
        responses=RESPONSES,
        openapi_extra=_form_schema("transcribe"),
        response_model=None,
    )
    async def transcriptions(request: Request, principal: PrincipalDep) -> Response:
        """OpenAI-compatible transcription: the text in the spoken language, synchronously."""
        return await _serve(request, principal, settings, "transcribe")

    @router.post(
        "/v1/audio/translations",
        responses=RESPONSES,
        openapi_extra=_form_schema("translate"),
        response_model=None,
    )
    async def translations(request: Request, principal: PrincipalDep) -> Response:
        """OpenAI-compatible translation: the speech as English text, synchronously."""
        return await _serve(request, principal, settings, "translate")

    del transcriptions, translations
    return router


async def _serve(request: Request, principal: Principal, settings: Settings, task: Task) -> Response:
    limit = min(MAX_FILE_BYTES, settings.max_upload_bytes)
    declared = request.headers.get("content-length", "")
    # Refuse before reading: a body this large cannot hold a file within the limit.
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise OpenAIError(413, f"the file is larger than the {limit} bytes allowed here", param="file")
    form = await _read_form(request, limit)
    try:
        parsed = parse_request(form, task)
        runtime: Runtime = request.app.state.runtime
        job_id = await run_in_threadpool(_create_and_start, runtime, settings, principal, parsed, limit)
    finally:
        await form.close()
    log.info(
        "openai %s job started",
        task,
        extra={"action": "openai_audio_started", "job_id": str(job_id), "model": parsed.model},
    )
    job = await _wait(request, runtime, settings, job_id, task, diarize=parsed.diarize)
    results = await run_in_threadpool(load_results, runtime, job)
    source = answer_source(results, task)
    if source is None:
        raise OpenAIError(503, "the job finished without the text asked for", code="job_failed", job_id=job_id)
    language = job.detected_language or job.source_language or source.language
    return render_answer(source, parsed, language=language, job_id=job_id)


def _create_and_start(
    runtime: Runtime, settings: Settings, principal: Principal, request: AudioRequest, limit: int
) -> uuid.UUID:
    """Create the job, write the upload to its audio blob, probe it and start the job — one transaction,
    so a file that is refused leaves no job behind (and its blob is removed)."""
    job_id = uuid.uuid4()
    references = tuple(f"{job_id}/references/{index}{ref.extension}" for index, ref in enumerate(request.references))
    options = request.job_options(references)
    filename = safe_filename(request.upload.filename or "audio")
    # No upload URL is made for this job; its file goes straight to where a started job's upload is read.
    blob_path = input_blob_path(job_id, filename)
    container = settings.audio_container
    session: Session
    with runtime.sessions() as session:
        job = create_job(
            session=session,
            job_id=job_id,
            audio_filename=filename[:255],
            workflow_type="transcribe_only" if request.task == "transcribe" and request.language else "full_pipeline",
            source_language=request.language,
            target_language="en",
            callback_url=None,
            source_job_id=None,
            audio_blob_path=blob_path,
            api_key_id=principal.id,
            options=options,
        )
        try:
            _write_upload(runtime, container, blob_path, request.upload, limit)
            accepted = accept_upload_or_422(blobs=runtime.blobs, settings=settings, job=job)
            for reference, blob in zip(request.references, references, strict=True):
                _check_reference(reference.audio, reference.extension)
                runtime.blobs.put(container, blob, reference.audio)
        except BaseException:
            session.rollback()
            runtime.blobs.delete(container, blob_path)
            runtime.blobs.delete_prefix(container, f"{job_id}/references/")
            raise
        if accepted is not None:
            job.audio_duration_seconds = accepted.info.duration_seconds
        session.flush()
        if not start_job(
            session=session,
            bus=runtime.bus,
            queue=settings.job_events_queue,
            job_id=job_id,
            traceparent=current_traceparent(),
        ):
            raise OpenAIError(409, "the job could not be started", code="conflict", job_id=job_id)
        session.commit()
    publish_committed(runtime.bus)
    return job_id


def _check_reference(audio: bytes, extension: str) -> None:
    """A reference clip is audio PyAV can read, of at most MAX_CLIP_SECONDS."""
    with tempfile.TemporaryDirectory(prefix="speechflow-reference-") as folder:
        path = Path(folder) / f"reference{extension}"
        path.write_bytes(audio)
        try:
            seconds = probe(path).duration_seconds
        except AudioError as error:
            message = f"known_speaker_references: a reference cannot be used: {error}"
            raise OpenAIError(400, message, param="known_speaker_references", code="invalid_audio") from None
    if not math.isfinite(seconds) or seconds > MAX_CLIP_SECONDS:
        message = f"known_speaker_references: a reference lasts {seconds:.0f} s; at most {MAX_CLIP_SECONDS:g} s"
        raise OpenAIError(400, message, param="known_speaker_references")


def _write_upload(runtime: Runtime, container: str, blob: str, upload: UploadFile, limit: int) -> None:
    """Copy the form's file (already spooled by the parser) to the blob, refusing past `limit` bytes."""
    source = upload.file
    source.seek(0, 2)
    size = source.tell()
    source.seek(0)
    if size == 0:
        raise OpenAIError(400, "the file is empty", param="file", code="invalid_audio")
    if size > limit:
        raise OpenAIError(413, f"the file is {size} bytes; at most {limit} are allowed here", param="file")
    blobs = runtime.blobs
    if isinstance(blobs, LocalBlobStore):
        with blobs.staged_write(container, blob) as target:  # streamed: no copy of the file in memory
            while chunk := source.read(1024 * 1024):
                target.write(chunk)
    else:
        blobs.put(container, blob, source.read())


async def _wait(
    request: Request, runtime: Runtime, settings: Settings, job_id: uuid.UUID, task: Task, *, diarize: bool
) -> Job:
    """Poll the job with growing pauses until its parts are ready, they cannot come, or the wait limit."""
    deadline = time.monotonic() + settings.openai_wait_seconds
    pause = _FIRST_POLL_S
    while True:
        job = await run_in_threadpool(_read_job, runtime, job_id)
        outcome = wait_outcome(
            task=task,
            job_status=job.status,
            steps=_step_views(job),
            max_retries=settings.max_retries,
            job_error=job.error_message,
            diarize=diarize,
        )
        if outcome == "ready":
            return job
        if isinstance(outcome, OpenAIError):
            outcome.job_id = job_id
            raise outcome
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OpenAIError(
                504,
                f"job {job_id} has not finished within {settings.openai_wait_seconds:g} s; it goes on: "
                f"poll GET /jobs/{job_id} and read GET /jobs/{job_id}/results",
                code="timeout",
                error_type="timeout",
                job_id=job_id,
            )
        if await request.is_disconnected():
            # Nobody is waiting any more; the job goes on and its results stay readable.
            log.info("openai client gone", extra={"action": "openai_audio_disconnected", "job_id": str(job_id)})
            raise OpenAIError(499, "the client closed the request", code="client_closed", job_id=job_id)
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * _POLL_GROWTH, _MAX_POLL_S)


def _read_job(runtime: Runtime, job_id: uuid.UUID) -> Job:
    with runtime.sessions() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:  # deleted under us (retention): as good as cancelled
            raise OpenAIError(409, f"job {job_id} no longer exists", code="job_cancelled", job_id=job_id)
        session.expunge(job)
        return job
