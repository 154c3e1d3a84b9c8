"""Rendering a job's results: JSON parts, subtitles and text. They are read by the typed reader
(shared/jobs/results.py), only from completed steps; the routes stay thin."""

from __future__ import annotations

import logging
import uuid

from fastapi.responses import PlainTextResponse

from shared.domain import subtitles
from shared.domain.results import Transcript
from shared.domain.subtitle_cues import CueRules
from shared.jobs.results import JobResults, load_results

log = logging.getLogger(__name__)

MEDIA_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt", "txt": "text/plain"}


class ResultUnavailable(Exception):
    """The part asked for cannot be given (yet, or in that format)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


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


__all__ = ["MEDIA_TYPES", "JobResults", "ResultUnavailable", "load_results", "render"]
