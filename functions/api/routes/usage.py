"""Usage and estimated cost of the calling key's jobs: `GET /usage`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from functions.api.deps import ERRORS, ApiError, SessionDep, SettingsDep
from functions.api.schemas import (
    UsageSummaryResponse,
)
from functions.api.security import (
    PrincipalDep,
)
from shared.domain.models import Job, utcnow
from shared.domain.usage import Rates, Usage, job_usage, total_usage

router = APIRouter()


MAX_USAGE_RANGE = timedelta(days=366)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def list_jobs_created(*, session: Session, api_key_id: str, begin: datetime, end: datetime) -> list[Job]:
    query = (
        select(Job)
        .where(Job.api_key_id == api_key_id, Job.created_at >= begin, Job.created_at < end)
        .options(selectinload(Job.steps))
    )
    return list(session.scalars(query))


def _usage_of(job: Job, rates: Rates) -> Usage:
    return job_usage(
        audio_seconds=job.audio_duration_seconds,
        steps=[(step.step_type, step.details) for step in job.steps],
        rates=rates,
    )


@router.get("/usage", response_model=UsageSummaryResponse, responses=ERRORS, tags=["jobs"])
def usage(
    settings: SettingsDep,
    *,
    session: SessionDep,
    principal: PrincipalDep,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
) -> UsageSummaryResponse:
    """The calling key's usage and estimated cost over the jobs it created in [from, to) (ISO 8601;
    a time without a zone is UTC). Defaults: the 30 days up to now; at most 366 days at once."""
    try:
        end = _utc(to) if to is not None else utcnow()
        begin = _utc(from_) if from_ is not None else end - timedelta(days=30)
    except OverflowError:
        # A time at the calendar's edge whose zone or default range carries it past year 1 or 9999.
        raise ApiError(422, "validation_error", "from and to must fall between the years 1 and 9999 in UTC") from None
    if begin >= end:
        raise ApiError(422, "validation_error", "from must be before to")
    if end - begin > MAX_USAGE_RANGE:
        raise ApiError(422, "validation_error", f"the range is at most {MAX_USAGE_RANGE.days} days")
    rates = Rates.of(settings)
    jobs = list_jobs_created(session=session, api_key_id=principal.id, begin=begin, end=end)
    total = total_usage([_usage_of(job, rates) for job in jobs], rates=rates)
    return UsageSummaryResponse.model_validate({**total.as_dict(), "from_": begin, "to": end, "jobs": len(jobs)})
