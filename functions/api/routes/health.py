"""Liveness, readiness and metrics: `GET /health`, `GET /ready`, `GET /metrics` (no key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from functions.api.deps import RuntimeDep, SettingsDep
from functions.api.schemas import (
    ErrorResponse,
)
from shared.runtime.metrics import exposition
from shared.worker.health import readiness, worker_states

router = APIRouter()


@router.get("/health", tags=["health"])
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", tags=["health"], responses={503: {"model": ErrorResponse}})
def ready(settings: SettingsDep, runtime: RuntimeDep) -> JSONResponse:
    """Readiness: the database, blob storage and the bus can be reached. Under `make up`, also each
    worker's warm-up state (`components`) and those still loading or warming (`warming`): jobs are
    taken meanwhile, and run once their step's worker has loaded."""
    healthy, checks = readiness(runtime)
    content: dict[str, Any] = {"status": "ok" if healthy else "unavailable", "checks": checks}
    if runtime.settings.worker_probes:
        components = worker_states(runtime.settings.worker_probes)
        content["components"] = components
        content["warming"] = sorted(name for name, state in components.items() if state != "ready")
    return JSONResponse(status_code=200 if healthy else 503, content=content)


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
def prometheus_metrics() -> Response:
    """Prometheus exposition: this process's speechflow_* counters, jobs by status, queue depths."""
    body, content_type = exposition()
    return Response(content=body, media_type=content_type)
