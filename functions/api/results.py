"""Reading a job's results and rendering them: JSON parts, subtitles and text. The routes in app.py stay
thin; the result kinds are the step registry's typed models (shared/results.py)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from shared import subtitles
from shared.errors import BlobNotFound
from shared.messages import result_blob_path
from shared.models import Job
from shared.pipeline import known, spec_of
from shared.pipeline.speakers import with_speakers
from shared.results import Diarization, LanguageResult, ResultModel, Summary, Transcript, Translation
from shared.runtime import Runtime
from shared.subtitle_cues import CueRules
from shared.workflow import split_part

log = logging.getLogger(__name__)

MEDIA_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt", "txt": "text/plain"}


class ResultUnavailable(Exception):
    """The part asked for cannot be given (yet, or in that format)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class JobResults:
    """The results of a job's completed steps, typed; skipped steps and parts of fanned-out steps are
    not results of their own."""

    found: dict[str, ResultModel] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.found and not self.skipped

    def get(self, step_type: str, model: type[Any]) -> Any:
        result = self.found.get(step_type)
        return result if isinstance(result, model) else None

    @property
    def language(self) -> LanguageResult | None:
        return self.get("LID", LanguageResult)

    @property
    def transcript(self) -> Transcript | None:
        """The transcript, with its speakers where the job was diarized."""
        found = self.found.get("TRANSCRIBE")
        if not isinstance(found, Transcript):
            return None
        return with_speakers(found, self.get("DIARIZE", Diarization))

    @property
    def translation(self) -> Translation | None:
        return self.get("TRANSLATE", Translation)

    @property
    def summary(self) -> Summary | None:
        return self.get("SUMMARIZE", Summary)


def load_results(runtime: Runtime, job: Job) -> JobResults:
    """Read each completed step's result blob as its registered result model. A result that cannot be
    read is logged and left out rather than failing the whole answer."""
    results = JobResults()
    for step in job.steps:
        if step.status != "completed" or split_part(step.step_type)[1] is not None or not known(step.step_type):
            continue
        if step.details and step.details.get("skipped"):
            results.skipped.add(step.step_type)
            continue
        path = step.result_blob_path or result_blob_path(job.id, step.step_type)
        try:
            data = runtime.blobs.get(runtime.settings.results_container, path)
            results.found[step.step_type] = spec_of(step.step_type).result.model_validate_json(data)
        except BlobNotFound:
            log.warning("result blob missing", extra={"action": "result_missing", "job_id": str(job.id)})
        except ValidationError as error:
            log.error(
                "result blob is not a valid %s result: %s",
                step.step_type,
                error.errors()[:1],
                extra={"action": "result_invalid", "job_id": str(job.id), "step_type": step.step_type},
            )
    return results


def render(
    results: JobResults, fmt: str, *, part: str, job_id: uuid.UUID, rules: CueRules | None = None
) -> PlainTextResponse:
    """A transcript part as subtitles (srt, vtt; cues cut to `rules` when given) or text (txt)."""
    source: Transcript | None = results.transcript if part == "transcript" else results.translation
    if source is None or (not source.segments and not source.text):
        raise ResultUnavailable(409, "not_ready", f"no {part} for this job")
    if fmt in ("srt", "vtt") and not source.timed:
        raise ResultUnavailable(
            422,
            "untimed_transcript",
            f"the {part} has no timings (it was made from an uploaded text), so it has no {fmt.upper()} subtitles;"
            " ask for format=txt or json",
        )
    if fmt == "srt":
        body = subtitles.to_srt(source.segments, rules=rules)
    elif fmt == "vtt":
        body = subtitles.to_vtt(source.segments, rules=rules)
    else:
        body = subtitles.to_txt(source)
    return PlainTextResponse(
        body,
        media_type=f"{MEDIA_TYPES[fmt]}; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{job_id}-{part}.{fmt}"'},
    )
