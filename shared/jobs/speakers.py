"""The voice library's rows: enrolled speakers, owned by the key that enrolled them like jobs, and their
voiceprints (docs/SECURITY.md, "Voiceprints"). Enrolling is an internal job (workflow `enroll_speaker`)
whose ENROLL step computes the voiceprint on the diarize worker (shared/steps/enroll.py); deleting a
speaker or its retention ending deletes the row, voiceprint and all, and purges that job (its clip)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.bus import publish_committed
from shared.core.db import transaction
from shared.core.errors import PermanentError
from shared.core.tracing import current_traceparent
from shared.domain.models import Speaker
from shared.domain.speaker_match import MAX_CLIP_SECONDS, MIN_CLIP_SECONDS, EnrolledVoice
from shared.engines.audio import AudioError, probe
from shared.jobs.retention import purge_job
from shared.jobs.store import create_job, get_job, start_job
from shared.jobs.uploads import input_blob_path
from shared.runtime import Runtime

log = logging.getLogger(__name__)

ENROLL_WORKFLOW = "enroll_speaker"


@dataclass(frozen=True)
class SpeakerView:
    """A speaker as the API shows it: never its voiceprint. `status` counts an enrollment whose job
    ended without a voiceprint (a crash past its retries) as failed."""

    id: uuid.UUID
    name: str
    status: str
    audio_seconds: float | None
    error_message: str | None
    created_at: datetime
    refused: bool = False
    """Failed because of the clip (no speech, two voices, too little speech), not of the service."""


class ClipRefused(PermanentError):
    """the clip cannot be enrolled"""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def start_enrollment(
    runtime: Runtime, *, name: str, clip: Path, filename: str, api_key_id: str | None
) -> tuple[uuid.UUID, uuid.UUID]:
    """Check the clip (audio, 2–60 s), create the speaker (pending) and its enrollment job, write the
    clip as the job's audio and queue the job. Returns (speaker id, job id).

    The job's own retention (60 s) purges it, clip and all, soon after it ends however it ends, even
    if nobody waits for it; ENROLL deletes the clip as soon as the voiceprint is kept."""
    settings = runtime.settings
    try:
        info = probe(clip)
    except AudioError as error:
        raise ClipRefused("invalid_audio", f"the clip cannot be used: {error}") from None
    if not MIN_CLIP_SECONDS <= info.duration_seconds <= MAX_CLIP_SECONDS:
        raise ClipRefused(
            "clip_length",
            f"the clip lasts {info.duration_seconds:.1f} s; a voice is enrolled from {MIN_CLIP_SECONDS:g} to"
            f" {MAX_CLIP_SECONDS:g} s of it",
        )
    speaker_id, job_id = uuid.uuid4(), uuid.uuid4()
    blob = input_blob_path(job_id, filename)
    # First the rows, committed before the clip is written: a process that dies after writing it leaves
    # a job that never started, which its 60 s retention purges (clip and all), never a clip no row names.
    with transaction(runtime.sessions) as session:
        job = create_job(
            session=session,
            job_id=job_id,
            audio_filename=filename,
            workflow_type=ENROLL_WORKFLOW,
            source_language=None,
            target_language="en",
            callback_url=None,
            source_job_id=None,
            audio_blob_path=blob,
            api_key_id=api_key_id,
            options={"speaker_id": str(speaker_id), "retention_seconds": 60},
        )
        job.audio_duration_seconds = info.duration_seconds
        session.add(Speaker(id=speaker_id, name=name, api_key_id=api_key_id, status="pending", enroll_job_id=job_id))
    try:
        with clip.open("rb") as source:
            runtime.blobs.put(settings.audio_container, blob, source.read())
        with runtime.sessions() as session:
            queued = start_job(
                session=session,
                bus=runtime.bus,
                queue=settings.job_events_queue,
                job_id=job_id,
                traceparent=current_traceparent(),
            )
            if not queued:
                raise RuntimeError(f"enrollment job {job_id} could not be queued")
            session.commit()
    except BaseException:
        runtime.blobs.delete(settings.audio_container, blob)
        delete_speaker(runtime, speaker_id)
        raise
    publish_committed(runtime.bus)
    log.info("speaker enrollment queued", extra={"action": "speaker_enroll", "job_id": str(job_id)})
    return speaker_id, job_id


def get_speaker(*, session: Session, speaker_id: uuid.UUID, for_update: bool = False) -> Speaker | None:
    query = select(Speaker).where(Speaker.id == speaker_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def view_of(session: Session, speaker: Speaker) -> SpeakerView:
    status, error = speaker.status, speaker.error_message
    if status == "pending" and speaker.enroll_job_id is not None:
        job = get_job(session=session, job_id=speaker.enroll_job_id)
        ended = ("failed", "cancelled", "partial_complete", "completed")
        if job is None or job.status in ended or job.purged_at is not None:
            # The job ended and the step never recorded a voiceprint: it will not come any more.
            status = "failed"
            error = (job.error_message if job else None) or "the enrollment did not finish; enroll the voice again"
    return SpeakerView(
        speaker.id, speaker.name, status, speaker.audio_seconds, error, speaker.created_at, speaker.status == "failed"
    )


def list_speakers(
    *, session: Session, api_key_id: str | None, limit: int = 50, offset: int = 0
) -> tuple[list[Speaker], int]:
    """A page of the key's speakers, newest first, and how many it has."""
    owned = Speaker.api_key_id.is_(None) if api_key_id is None else Speaker.api_key_id == api_key_id
    total = session.scalar(select(func.count()).select_from(Speaker).where(owned)) or 0
    rows = session.scalars(
        select(Speaker).where(owned).order_by(Speaker.created_at.desc(), Speaker.id).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def record_voiceprint(*, session: Session, speaker_id: uuid.UUID, embedding: list[float], audio_seconds: float) -> bool:
    """Keep the voiceprint of a pending speaker; False when the speaker was deleted meanwhile."""
    speaker = get_speaker(session=session, speaker_id=speaker_id, for_update=True)
    if speaker is None:
        return False
    speaker.embedding = embedding
    speaker.audio_seconds = round(audio_seconds, 3)
    speaker.status = "ready"
    speaker.error_message = None
    return True


def record_refusal(*, session: Session, speaker_id: uuid.UUID, reason: str, audio_seconds: float | None) -> None:
    speaker = get_speaker(session=session, speaker_id=speaker_id, for_update=True)
    if speaker is not None and speaker.status == "pending":
        speaker.status = "failed"
        speaker.error_message = reason
        speaker.audio_seconds = None if audio_seconds is None else round(audio_seconds, 3)


def enrolled_voices(*, session: Session, speaker_ids: list[str]) -> list[EnrolledVoice]:
    """The ready voiceprints among `speaker_ids`, in their order (one deleted since is left out)."""
    wanted = [uuid.UUID(value) for value in speaker_ids]
    rows = {row.id: row for row in session.scalars(select(Speaker).where(Speaker.id.in_(wanted))).all()}
    return [
        EnrolledVoice(name=row.name, embedding=list(row.embedding), speaker_id=str(row.id))
        for speaker_id in wanted
        if (row := rows.get(speaker_id)) is not None and row.status == "ready" and row.embedding
    ]


def delete_speaker(runtime: Runtime, speaker_id: uuid.UUID) -> None:
    """Delete the row (its voiceprint with it), then purge its enrollment job (the clip, if still there).
    The row goes first: once it is gone nothing can use the voice; a purge that fails is finished by
    the enrollment job's own retention."""
    with transaction(runtime.sessions) as session:
        speaker = get_speaker(session=session, speaker_id=speaker_id, for_update=True)
        if speaker is None:
            return
        job_id = speaker.enroll_job_id
        session.delete(speaker)
    if job_id is not None:
        try:
            purge_job(runtime, job_id)
        except Exception:
            log.exception("enrollment purge deferred", extra={"action": "purge_deferred", "job_id": str(job_id)})
    log.info("speaker deleted", extra={"action": "speaker_deleted", "speaker_id": str(speaker_id)})
