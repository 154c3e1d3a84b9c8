"""The voice library: `POST /speakers` (enroll a voice from a 2–60 s clip), `GET /speakers`,
`GET /speakers/{id}`, `DELETE /speakers/{id}`; and the check of `known_speakers` on POST /jobs.

A speaker belongs to the key that enrolled it, as a job does: another key's answers 404. The clip is
enrolled by the diarize worker (shared/steps/enroll.py); POST waits for it up to
SPEAKER_ENROLL_WAIT_SECONDS and answers 201 (ready), 422 (the clip was refused, and why) or 202
(still pending: poll GET /speakers/{id})."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from functions.api.deps import ERRORS, ApiError, RuntimeDep, SessionDep, SettingsDep
from functions.api.openai_audio.errors import OpenAIError
from functions.api.openai_audio.forms import _read_form
from functions.api.schemas import SpeakerListResponse, SpeakerResponse, safe_filename
from functions.api.security import Principal, PrincipalDep
from shared.domain.models import Speaker
from shared.jobs.retention import purge_job
from shared.jobs.speakers import (
    ClipRefused,
    SpeakerView,
    delete_speaker,
    get_speaker,
    list_speakers,
    start_enrollment,
    view_of,
)
from shared.runtime import Runtime

router = APIRouter()

MAX_CLIP_BYTES = 25 * 1024 * 1024
"""A minute of audio is far less even as 48 kHz stereo WAV (11 MB)."""

_FIRST_POLL_S, _MAX_POLL_S = 0.2, 1.0
_PURGE_GRACE_S = 5.0
"""How long a finished enrollment waits for its job to stop, to purge it before answering."""


def _response(view: SpeakerView) -> SpeakerResponse:
    return SpeakerResponse(
        speaker_id=view.id,
        name=view.name,
        status=view.status,  # type: ignore[arg-type]
        audio_seconds=view.audio_seconds,
        error_message=view.error_message,
        created_at=view.created_at,
    )


def _owned(session: Session, speaker_id: uuid.UUID, principal: Principal) -> Speaker:
    speaker = get_speaker(session=session, speaker_id=speaker_id)
    if speaker is None or speaker.api_key_id != principal.id:
        raise ApiError(404, "not_found", f"speaker {speaker_id} not found")
    return speaker


def check_known_speakers(session: Session, principal: Principal, speaker_ids: Sequence[uuid.UUID]) -> None:
    """known_speakers on POST /jobs: each the caller's and enrolled, no name twice (422 otherwise)."""
    names: dict[str, uuid.UUID] = {}
    for speaker_id in speaker_ids:
        speaker = get_speaker(session=session, speaker_id=speaker_id)
        if speaker is None or speaker.api_key_id != principal.id:
            raise ApiError(422, "unknown_speaker", f"known_speakers: speaker {speaker_id} not found")
        if speaker.status != "ready":
            raise ApiError(422, "speaker_not_ready", f"known_speakers: speaker {speaker_id} is {speaker.status}")
        if speaker.name in names:
            raise ApiError(
                422,
                "validation_error",
                f"known_speakers: {names[speaker.name]} and {speaker_id} are both named {speaker.name!r};"
                " the names must differ to tell the speakers apart",
            )
        names[speaker.name] = speaker_id


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, "validation_error", "name: give the speaker's name as a form field")
    name = value.strip()
    if len(name) > 100 or "\x00" in name:
        raise ApiError(422, "validation_error", "name: at most 100 characters, and no NUL character")
    return name


@router.post(
    "/speakers",
    status_code=201,
    response_model=SpeakerResponse,
    response_model_exclude_none=True,
    responses={
        **ERRORS,
        202: {"model": SpeakerResponse, "description": "Still being enrolled: poll GET /speakers/{id}"},
        413: {"description": f"The clip is larger than {MAX_CLIP_BYTES // (1024 * 1024)} MiB"},
        503: {"description": "The enrollment failed for a reason other than the clip; enroll again"},
    },
    tags=["speakers"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["name", "file"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 100},
                            "file": {"type": "string", "format": "binary", "description": "2 to 60 s of the voice"},
                        },
                    }
                }
            },
        }
    },
)
async def enroll(
    request: Request, settings: SettingsDep, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> SpeakerResponse:
    """Enroll a voice from a multipart form: `name`, and `file`, 2 to 60 s of that one voice speaking.
    Only its voiceprint is kept; the clip is deleted once enrolled (docs/SECURITY.md)."""
    try:
        form = await _read_form(request, min(MAX_CLIP_BYTES, settings.max_upload_bytes))
    except OpenAIError as error:
        code = "upload_too_large" if error.status == 413 else "validation_error"
        raise ApiError(413 if error.status == 413 else 422, code, error.message) from None
    try:
        name = _name(form.get("name"))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "validation_error", "file: send the clip as the form's file field")
        speaker_id, job_id = await run_in_threadpool(_start, runtime, principal, name, upload)
    finally:
        await form.close()
    deadline = time.monotonic() + settings.speaker_enroll_wait_seconds
    view = await _wait(runtime, speaker_id, deadline)
    if view.status == "pending":
        response.status_code = 202
        response.headers["Location"] = f"/speakers/{speaker_id}"
        return _response(view)
    # Ended, either way: its job (and the clip, if a refusal left it) need not wait for their retention.
    await _purge(runtime, job_id, time.monotonic() + _PURGE_GRACE_S)
    if view.status == "failed":
        await run_in_threadpool(delete_speaker, runtime, speaker_id)
        reason = view.error_message or "the clip could not be enrolled"
        if view.refused:
            raise ApiError(422, "clip_refused", reason)
        raise ApiError(503, "enroll_failed", f"the enrollment failed: {reason}; enroll the voice again")
    return _response(view)


def _start(runtime: Runtime, principal: Principal, name: str, upload: UploadFile) -> tuple[uuid.UUID, uuid.UUID]:
    filename = safe_filename(upload.filename or "clip")
    with tempfile.TemporaryDirectory(prefix="speechflow-clip-") as folder:
        clip = Path(folder) / filename
        upload.file.seek(0)
        with clip.open("wb") as target:
            while chunk := upload.file.read(1024 * 1024):
                target.write(chunk)
        if clip.stat().st_size == 0:
            raise ApiError(422, "invalid_audio", "file: the clip is empty")
        try:
            return start_enrollment(runtime, name=name, clip=clip, filename=filename, api_key_id=principal.id)
        except ClipRefused as refused:
            raise ApiError(422, refused.code, refused.message) from None


async def _wait(runtime: Runtime, speaker_id: uuid.UUID, deadline: float) -> SpeakerView:
    pause = _FIRST_POLL_S
    while True:
        view = await run_in_threadpool(_view, runtime, speaker_id)
        if view.status != "pending" or time.monotonic() >= deadline:
            return view
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, _MAX_POLL_S)


async def _purge(runtime: Runtime, job_id: uuid.UUID, deadline: float) -> None:
    """Purge the enrollment's job once it has stopped. The voiceprint is kept by the ENROLL step a router
    hop before its job ends, so the job may still be finishing: wait for that a little; if it takes longer,
    the purge's recorded intent lets a retention pass finish it."""
    while await run_in_threadpool(purge_job, runtime, job_id) == "waiting" and time.monotonic() < deadline:
        await asyncio.sleep(_FIRST_POLL_S / 2)


def _view(runtime: Runtime, speaker_id: uuid.UUID) -> SpeakerView:
    with runtime.sessions() as session:
        speaker = get_speaker(session=session, speaker_id=speaker_id)
        if speaker is None:
            raise ApiError(404, "not_found", f"speaker {speaker_id} was deleted while it was enrolled")
        return view_of(session, speaker)


@router.get(
    "/speakers",
    response_model=SpeakerListResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    tags=["speakers"],
)
def read_speakers(
    *,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> SpeakerListResponse:
    """The caller's enrolled voices, newest first."""
    rows, total = list_speakers(session=session, api_key_id=principal.id, limit=limit, offset=offset)
    return SpeakerListResponse(items=[_response(view_of(session, row)) for row in rows], total=total)


@router.get(
    "/speakers/{speaker_id}",
    response_model=SpeakerResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    tags=["speakers"],
)
def read_speaker(*, speaker_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> SpeakerResponse:
    """One enrolled voice: its name, status and how much speech its clip held."""
    return _response(view_of(session, _owned(session, speaker_id, principal)))


@router.delete("/speakers/{speaker_id}", status_code=204, responses=ERRORS, tags=["speakers"])
def remove_speaker(
    *, speaker_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    """Delete the voice and its voiceprint now (and its clip, if its enrollment had not finished). Jobs
    that named speakers after it keep the names they gave."""
    _owned(session, speaker_id, principal)
    session.rollback()
    delete_speaker(runtime, speaker_id)
    return Response(status_code=204)
