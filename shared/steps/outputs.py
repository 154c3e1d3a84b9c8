"""What happens to every step's typed result before it is stored: PII masked when the job asked for it
(`redact_pii`), and a transcript's subtitles and text written beside its JSON. Done here, once, so that
no step can forget either and the side files are made from what is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.domain import subtitles
from shared.domain.options import JobOptions
from shared.domain.results import ResultModel, Segment, Summary, Transcript, Translation
from shared.domain.workflow import split_part

if TYPE_CHECKING:
    from shared.steps.context import StepContext


def finish_result(step: StepContext, result: ResultModel) -> ResultModel:
    """The result as it is to be stored, with its side files written."""
    if JobOptions.of(step.job.options).redact_pii:
        result = redact(result, language=_language(step, result))
    if split_part(step.step_type)[1] is None and isinstance(result, Transcript):
        write_side_files(step, result)
    return result


def redact(result: ResultModel, *, language: str) -> ResultModel:
    """The result with card and phone numbers, other identifying numbers, e-mail addresses and (where a
    packaged model finds them) names masked, timings kept (shared/engines/pii.py)."""
    # lazy: the PII recogniser takes seconds to import; only jobs that mask PII pay it
    from shared.engines.pii import redact_text, redact_transcript

    if isinstance(result, Transcript):
        segments = redact_transcript(
            [segment.model_dump(mode="json", exclude_none=True) for segment in result.segments], language=language
        )
        redacted = result.model_copy(update={"segments": [Segment.model_validate(s) for s in segments]})
        text = " ".join(segment.text for segment in redacted.segments if segment.text)
        if not redacted.segments:
            text = redact_text(result.text, language=language)[0]
        return redacted.model_copy(update={"text": text})
    if isinstance(result, Summary):
        return result.model_copy(
            update={
                "summary": redact_text(result.summary, language=language)[0],
                "key_points": [redact_text(point, language=language)[0] for point in result.key_points],
            }
        )
    return result


def write_side_files(step: StepContext, transcript: Transcript) -> None:
    """results/{job}/{step}.srt, .vtt (when timed) and .txt beside the JSON."""
    for extension, text, content_type in side_files(transcript):
        step.put_result_file(extension, text, content_type=content_type)


def side_files(transcript: Transcript) -> list[tuple[str, str, str]]:
    """The files written beside a transcript's JSON: (extension, text, content type)."""
    files: list[tuple[str, str, str]] = []
    if transcript.timed:
        files.append(("srt", subtitles.to_srt(transcript.segments), "application/x-subrip"))
        files.append(("vtt", subtitles.to_vtt(transcript.segments), "text/vtt"))
    if not isinstance(transcript, Translation) or transcript.segments:
        files.append(("txt", subtitles.to_txt(transcript), "text/plain; charset=utf-8"))
    return files


def _language(step: StepContext, result: ResultModel) -> str:
    if isinstance(result, Translation):
        return result.target_language or "en"
    if isinstance(result, Transcript) and result.language:
        return result.language
    if isinstance(result, Summary):
        # A summary is written in the language of what it summarises (or in English, when extractive
        # summaries quote the translation): the job's language is the best guess there is.
        return step.job.language or "en"
    return step.job.language or "en"
