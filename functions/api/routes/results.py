"""A job's results: `GET /jobs/{id}/results`, as JSON or rendered (srt, vtt, txt)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from functions.api.deps import ERRORS, ApiError, RuntimeDep, SessionDep, _job_or_404
from functions.api.redacted_audio import redacted_audio_response
from functions.api.results import ResultUnavailable, load_results, render
from functions.api.schemas import (
    ErrorResponse,
    ResultFormat,
    ResultPart,
    ResultsResponse,
    SummaryPart,
    TranscriptPart,
)
from functions.api.security import (
    PrincipalDep,
)
from shared.domain.results import Summary, Transcript
from shared.domain.subtitle_cues import CUE_SECONDS, LINE_CHARS, LINES, CueRules

router = APIRouter()


def _text_part(result: Transcript | None) -> TranscriptPart | None:
    if result is None:
        return None
    return TranscriptPart(
        text=result.full_text(), segments=result.segments, speakers=result.speakers, languages=result.languages
    )


def _summary_part(result: Summary | None) -> SummaryPart | None:
    if result is None:
        return None
    return SummaryPart(summary=result.summary, key_points=result.key_points)


@router.get(
    "/jobs/{job_id}/results",
    response_model=ResultsResponse,
    responses={
        **ERRORS,
        200: {"content": {"text/plain": {}, "text/vtt": {}, "application/x-subrip": {}}},
        410: {"model": ErrorResponse, "description": "The job's data was deleted (DELETE, or its retention)"},
    },
    tags=["jobs"],
)
def results(
    *,
    job_id: uuid.UUID,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    format: ResultFormat = "json",
    part: ResultPart = "transcript",
    max_line_chars: Annotated[int | None, Query(ge=LINE_CHARS[0], le=LINE_CHARS[1])] = None,
    max_lines: Annotated[int | None, Query(ge=LINES[0], le=LINES[1])] = None,
    max_cue_seconds: Annotated[float | None, Query(ge=CUE_SECONDS[0], le=CUE_SECONDS[1])] = None,
) -> Any:
    """Everything the job has produced so far; `format=srt|vtt|txt` gives subtitles or text.
    Subtitles are cut to `max_line_chars`, `max_lines` (a cue) and `max_cue_seconds` when any is
    given, the others then following broadcast practice (42 characters, 2 lines, 7 s)."""
    rules = CueRules.of(max_line_chars=max_line_chars, max_lines=max_lines, max_cue_seconds=max_cue_seconds)
    if rules is not None and format not in ("srt", "vtt"):
        raise ApiError(
            422, "validation_error", "max_line_chars, max_lines and max_cue_seconds apply to format=srt or vtt"
        )
    job = _job_or_404(session, job_id, principal)
    if job.purge_requested_at is not None:
        when = f"at {job.purged_at.isoformat()}" if job.purged_at else "(purge in progress)"
        raise ApiError(410, "purged", f"job {job.id}'s results were deleted {when}")
    found = load_results(runtime, job)
    if found.empty:
        raise ApiError(409, "not_ready", f"job is {job.status}; no results yet")
    if format != "json":
        try:
            return render(found, format, part=part, job_id=job.id, rules=rules)
        except ResultUnavailable as unavailable:
            raise ApiError(unavailable.status, unavailable.code, unavailable.message) from None
    language = found.language
    return ResultsResponse(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        language=(language.language if language else None)
        or job.detected_language
        or job.source_language
        or (found.transcript.language if found.transcript else None),
        transcript=_text_part(found.transcript),
        translation=_text_part(found.translation),
        summary=_summary_part(found.summary),
    )


@router.get(
    "/jobs/{job_id}/redacted-audio",
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"audio/wav": {}}, "description": "The upload with masked PII beeped or silenced"},
        410: {"model": ErrorResponse, "description": "Deleted with the upload (retention) or by a purge"},
    },
    tags=["jobs"],
)
def redacted_audio(*, job_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """The upload as a WAV of the same length, sample rate and channels, with every stretch where
    masked PII was spoken replaced (`redact_pii_audio: true`; a 1 kHz beep or silence). 404 when
    not asked for, 409 until it is made, 410 once deleted."""
    job = _job_or_404(session, job_id, principal)
    try:
        return redacted_audio_response(runtime, job)
    except ResultUnavailable as unavailable:
        raise ApiError(unavailable.status, unavailable.code, unavailable.message) from None
