"""REDACT_AUDIO: the upload with every stretch where masked PII was spoken beeped or silenced
(`redact_pii_audio`; shared/engines/audio_redaction.py), written as `results/{job}/redact_audio.wav`.

It runs after TRANSCRIBE, whose stored result is already masked (shared/steps/outputs.py), on the
transcription workers' queue: decoding is light work, and no queue or deployment of its own is needed.
Its WAV is personal data like the upload: deleted with it by the audio retention and by a purge
(shared/jobs/retention.py; docs/SECURITY.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.core.errors import BlobNotFound, PermanentError
from shared.domain.options import JobOptions
from shared.domain.registry import StepSpec
from shared.domain.results import RedactedAudio, RedactedStretch, Transcript
from shared.steps.inputs import read_result

if TYPE_CHECKING:
    from shared.steps.context import StepContext

WAV_EXTENSION = "wav"


def process(step: StepContext) -> RedactedAudio:
    # lazy: PyAV and numpy load only in the worker that runs the step
    from shared.engines.audio_redaction import masked_stretches, redact_file

    method = JobOptions.of(step.job.options).redact_pii_audio_method
    try:
        transcript = read_result(step, "TRANSCRIBE", Transcript)
    except BlobNotFound as error:
        raise PermanentError("the job has no transcript to find the masked words in") from error
    stretches = masked_stretches(transcript.segments)
    with step.input_file() as path:
        redacted = redact_file(path, stretches, method=method)
    step.put_result_file(WAV_EXTENSION, redacted.data, content_type="audio/wav")
    step.details.update(stretches=len(stretches), method=method, audio_duration_seconds=redacted.duration)
    return RedactedAudio(
        method=method,
        sample_rate=redacted.sample_rate,
        channels=redacted.channels,
        duration=redacted.duration,
        stretches=[RedactedStretch(start=s.start, end=s.end, kind=s.kind) for s in stretches],
    )


SPEC = StepSpec(
    name="REDACT_AUDIO",
    title="Audio redaction",
    queue="whisper-jobs",
    queue_setting="whisper_queue",
    component="whisper",
    result=RedactedAudio,
    inputs=("audio", "TRANSCRIBE"),
    process=process,
)
