"""TRANSCRIBE: faster-whisper with word timestamps and VAD, with the job's vocabulary (prompt, hotwords).

A long recording is fanned out (shared/domain/workflow.py `transcription_parts`): part i of n transcribes its
own window of the file — cut in a pause near i/n of the way, overlapping its neighbours around each
cut — decoding only that window, so any idle worker takes a part and none holds the whole file. With
`channels: split`, part i transcribes channel i. The join (the TRANSCRIBE step itself, once every part
has completed) stitches the chunks in order with no word lost or doubled at a seam, or merges the
channels in time order with each channel as its speaker.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.core.errors import Cancelled, ShutdownRequested
from shared.domain.options import JobOptions
from shared.domain.registry import StepSpec, per_process
from shared.domain.results import LanguageTalk, SpeakerTalk, Transcript
from shared.domain.speaker_turns import language_time, merge_channels, talk_time
from shared.domain.workflow import part_name, split_part
from shared.steps.inputs import read_result

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.engines.speech.transcriber import Transcriber
    from shared.steps.context import StepContext


def _build_transcriber(settings: Settings) -> Transcriber:
    # lazy: the Whisper model loads only in the worker that runs the step
    from shared.engines.speech.model_cache import transcription_model

    # lazy: faster-whisper loads only in the worker that runs the step
    from shared.engines.speech.transcriber import Transcriber

    return Transcriber(settings.whisper, settings.model_cache_dir, model=transcription_model(settings))


transcriber = per_process(_build_transcriber)
"""The process's Transcriber, over the process's one Whisper model."""


def warm_up(settings: Settings) -> None:
    # No CUDA where CUDA is configured is a clear error now, not a crash in the middle of a job.
    engine = transcriber(settings)
    engine.check_device()
    engine.load()


def process(step: StepContext) -> Transcript:
    _, part = split_part(step.step_type)
    parts = step.parts
    options = JobOptions.of(step.job.options)
    if part is None and parts > 1:
        return _join(step, parts, options)
    with step.input_file() as path:
        if part is None:
            found = _transcribe(step, path, options)
        elif options.split_channels:
            found = _transcribe(step, path, options, channel=part - 1)
            found["channel"] = part - 1
        else:
            start, end = chunk_window(step, path, part=part, parts=parts)
            found = _transcribe(step, path, options, window=(start, end))
            found["offset"] = start
    transcript = Transcript.model_validate(found)
    if part is None:
        step.job_updates.setdefault("audio_duration_seconds", transcript.duration)
        transcript = with_languages(transcript)
    step.details.update(
        model=found["model"],
        device=found["device"],
        compute_type=found["compute_type"],
        batch_size=found.get("batch_size"),
        audio_duration_seconds=transcript.duration,
        model_seconds=found["processing_seconds"],
        language=transcript.language,
    )
    if part is not None:
        step.details.update(part=part, parts=parts, offset=found.get("offset"), channel=found.get("channel"))
    return transcript


def _transcribe(
    step: StepContext,
    path: Path,
    options: JobOptions,
    *,
    channel: int | None = None,
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import decode, decode_window

    # lazy: faster-whisper loads only in the worker that runs the step
    from shared.engines.speech.transcriber import TranscriptionCancelled

    max_seconds = step.settings.max_audio_seconds
    if window is not None:
        audio: Any = decode_window(path, window[0], window[1] - window[0])
    elif channel is not None:
        audio = decode(path, max_seconds=max_seconds, channel=channel)
    else:
        audio = path
    try:
        if options.code_switching:
            result = _transcribe_code_switching(step, audio, options)
        else:
            result = transcriber(step.settings).transcribe(
                audio,
                language=step.job.language,
                on_progress=step.report_progress,
                should_stop=step.should_stop,
                max_seconds=max_seconds,
                prompt=options.prompt,
                hotwords=options.hotwords,
            )
    except TranscriptionCancelled as error:
        if step.shutting_down:
            raise ShutdownRequested("the worker is shutting down") from error
        raise Cancelled("job cancelled during transcription") from error
    return result


def _transcribe_code_switching(step: StepContext, audio: Any, options: JobOptions) -> dict[str, Any]:
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import decode

    # lazy: faster-whisper loads only in the worker that runs the step
    from shared.engines.speech.code_switching import transcribe_code_switching

    samples = decode(audio, max_seconds=step.settings.max_audio_seconds) if isinstance(audio, (str, Path)) else audio
    found = transcribe_code_switching(
        transcriber(step.settings),
        samples,
        languages=options.languages,
        on_progress=step.report_progress,
        should_stop=step.should_stop,
        prompt=options.prompt,
        hotwords=options.hotwords,
    )
    step.details.update(stretches=found["stretches"], runs=found["runs"])
    return found


def chunk_window(step: StepContext, path: Path, *, part: int, parts: int) -> tuple[float, float]:
    """The seconds of the file part `part` of `parts` transcribes: from the cut before it to the cut after
    it, each in the pause nearest its ideal place, widened by half the overlap on each inner side. Every
    part finds the same cuts from the same audio, so neighbours agree on their seam."""
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import probe

    # lazy: PyAV and numpy stay out of start-up (the registry imports this module)
    from shared.engines.speech.audio_chunks import DEFAULT_OVERLAP_SECONDS

    duration = probe(path).duration_seconds
    start = _cut(path, duration, index=part - 1, parts=parts)
    end = _cut(path, duration, index=part, parts=parts)
    half = DEFAULT_OVERLAP_SECONDS / 2
    return (max(0.0, start - half) if part > 1 else 0.0, min(duration, end + half) if part < parts else duration)


def _cut(path: Path, duration: float, *, index: int, parts: int) -> float:
    # lazy: PyAV and numpy stay out of the router's start-up (it reads the registry)
    from shared.engines.audio import decode_window

    # lazy: PyAV and numpy stay out of start-up (the registry imports this module)
    from shared.engines.speech.audio_chunks import PAUSE_SEARCH_SECONDS, choose_cut, find_pauses

    if index <= 0:
        return 0.0
    if index >= parts:
        return duration
    length = duration / parts
    ideal = index * length
    search = min(PAUSE_SEARCH_SECONDS, length / 2)
    low, high = max(0.0, ideal - search), min(duration, ideal + search)
    stretch = decode_window(path, low, high - low)
    return choose_cut(find_pauses(stretch, offset=low), ideal=ideal, low=low, high=high)


def _join(step: StepContext, parts: int, options: JobOptions) -> Transcript:
    """One transcript of the file from its parts' results."""
    # lazy: PyAV and numpy stay out of start-up (the registry imports this module)
    from shared.engines.speech.audio_chunks import stitch

    # lazy: numpy stays out of start-up (the registry imports this module)
    from shared.engines.speech.channels import channel_levels, drop_crosstalk

    found = [read_result(step, part_name("TRANSCRIBE", n), Transcript) for n in range(1, parts + 1)]
    if step.should_stop():
        raise Cancelled("job cancelled before the transcript was joined")
    if options.split_channels:
        by_channel = {
            n: [s.model_dump(mode="json", exclude_none=True) for s in part.segments] for n, part in enumerate(found)
        }
        with step.input_file() as path:
            # Each microphone hears the other party faintly: those words belong to the other channel.
            by_channel = drop_crosstalk(by_channel, channel_levels(path, parts))
        segments = merge_channels(by_channel)
        joined = Transcript.model_validate(
            {
                "language": _most_common([part.language for part in found]),
                "duration": max((part.duration or 0.0) for part in found),
                "text": " ".join(str(segment["text"]) for segment in segments if segment.get("text")),
                "segments": segments,
                "channels": parts,
            }
        )
        joined.speakers = [SpeakerTalk.model_validate(entry) for entry in talk_time(segments)]
    else:
        chunks = [part.model_dump(mode="json", exclude_none=True) for part in found]
        offsets = [float(chunk.get("offset") or 0.0) for chunk in chunks]
        joined = Transcript.model_validate(stitch(chunks, offsets))
    step.job_updates.setdefault("audio_duration_seconds", joined.duration)
    step.details.update(parts=parts, joined="channels" if options.split_channels else "chunks")
    return with_languages(joined)


def with_languages(transcript: Transcript) -> Transcript:
    """Where the segments say their languages (code_switching), the languages heard with their talk time,
    and the transcript's language the one spoken longest."""
    talk = language_time(segment.model_dump(include={"start", "end", "language"}) for segment in transcript.segments)
    if not talk:
        return transcript
    return transcript.model_copy(
        update={
            "language": talk[0]["language"],
            "languages": [LanguageTalk.model_validate(entry) for entry in talk],
        }
    )


def _most_common(languages: list[str | None]) -> str | None:
    named = [language for language in languages if language]
    return max(set(named), key=named.count) if named else None


SPEC = StepSpec(
    name="TRANSCRIBE",
    title="Transcription",
    queue="whisper-jobs",
    queue_setting="whisper_queue",
    component="whisper",
    result=Transcript,
    inputs=("audio",),
    process=process,
    warm_up=warm_up,
)
