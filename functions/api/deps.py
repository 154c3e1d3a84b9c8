"""What the routes depend on, in one place: the process's Runtime and Settings, a database session
per request, the calling principal, a job of the caller's (404 for anyone else's), and the API's error
shape (ApiError, ERRORS for the OpenAPI description)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from functions.api.schemas import (
    ErrorResponse,
)
from functions.api.security import (
    Principal,
)
from shared.core.config import Settings
from shared.domain.models import Job
from shared.domain.workflow import INTERNAL_WORKFLOWS
from shared.jobs.store import get_job
from shared.runtime import Runtime

_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(status_code=status, content=body)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A session per request; handlers that change state commit explicitly before answering."""
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON"},
    401: {"model": ErrorResponse, "description": "No API key, or one that is not valid"},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse, "description": "Too many requests for this key; see Retry-After"},
}


def _job_or_404(session: Session, job_id: uuid.UUID, principal: Principal, *, for_update: bool = False) -> Job:
    """The caller's job; another key's job answers 404 exactly as a job that does not exist."""
    job = get_job(session=session, job_id=job_id, for_update=for_update)
    if job is None or not principal.owns(job) or job.workflow_type in INTERNAL_WORKFLOWS:
        raise ApiError(404, "not_found", f"job {job_id} not found")
    return job


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
