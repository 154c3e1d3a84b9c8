"""A job's results: `GET /jobs/{id}/results`, as JSON or rendered (srt, vtt, txt)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from functions.api.deps import ERRORS, ApiError, RuntimeDep, SessionDep, _job_or_404
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

router = APIRouter()


def _text_part(result: Transcript | None) -> TranscriptPart | None:
    if result is None:
        return None
    return TranscriptPart(text=result.full_text(), segments=result.segments, speakers=result.speakers)


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
) -> Any:
    """Everything the job has produced so far; `format=srt|vtt|txt` gives subtitles or text."""
    job = _job_or_404(session, job_id, principal)
    if job.purge_requested_at is not None:
        when = f"at {job.purged_at.isoformat()}" if job.purged_at else "(purge in progress)"
        raise ApiError(410, "purged", f"job {job.id}'s results were deleted {when}")
    found = load_results(runtime, job)
    if found.empty:
        raise ApiError(409, "not_ready", f"job is {job.status}; no results yet")
    if format != "json":
        try:
            return render(found, format, part=part, job_id=job.id)
        except ResultUnavailable as unavailable:
            raise ApiError(unavailable.status, unavailable.code, unavailable.message) from None
    language = found.language
    return ResultsResponse(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        language=(language.language if language else None) or job.detected_language or job.source_language,
        transcript=_text_part(found.transcript),
        translation=_text_part(found.translation),
        summary=_summary_part(found.summary),
    )
