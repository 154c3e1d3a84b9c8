"""Batches: `POST /batches`, `GET /batches/{id}`, `GET /batches/{id}/results`, `DELETE /batches/{id}`.

Each item becomes an ordinary job of the calling key, created by POST /jobs's own path
(functions/api/routes/jobs.py, `create_job_from`) with the batch's fields and the item's. The whole
request is refused (4xx, nothing created) when it is malformed, when the batch's own fields would make no
valid job, or when its container cannot be listed; an item that is refused on its own (its URL, a
language, an option its workflow does not take) becomes a job `failed` at once with the reason, and the
others go ahead. The batch, its jobs and their first events commit together.
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from functions.api.batch_schemas import (
    BatchItemCreated,
    BatchResponse,
    BatchResultItem,
    BatchResultsResponse,
    CreateBatchRequest,
    CreateBatchResponse,
)
from functions.api.deps import ERRORS, ApiError, RuntimeDep, SessionDep, SettingsDep
from functions.api.routes.jobs import create_job_from, request_refusal, shown_options
from functions.api.schemas import CreateJobRequest, WebhookDeliveryResponse
from functions.api.security import Authenticator, Principal, PrincipalDep
from shared.bus import publish_committed
from shared.core.config import Settings
from shared.core.netsafety import (
    UnsafeCallbackUrl,
    UnsafeFetchUrl,
    check_callback_url,
    check_fetch_url,
    host_allowed,
    system_resolver,
)
from shared.domain.batches import MAX_BATCH_ITEMS
from shared.domain.models import Batch, WebhookDelivery, utcnow
from shared.domain.status import JOB_STATUSES
from shared.jobs.batches import (
    batch_jobs,
    cancel_batch,
    close_batches,
    create_batch,
    get_batch,
    status_of,
)
from shared.jobs.store import create_job
from shared.jobs.webhooks import deliver_now
from shared.runtime import Runtime
from shared.steps.fetch import filename_from_url
from shared.storage.client_container import ContainerRefused, audio_blob_urls, is_azure_blob_host

log = logging.getLogger(__name__)
router = APIRouter()


def _batch_or_404(session: Session, batch_id: uuid.UUID, principal: Principal) -> Batch:
    """The caller's batch; another key's batch answers 404 exactly as one that does not exist."""
    batch = get_batch(session=session, batch_id=batch_id)
    if batch is None or batch.api_key_id != principal.id:
        raise ApiError(404, "not_found", f"batch {batch_id} not found")
    return batch


def _validation_message(problems: list[Any]) -> str:
    return "; ".join(
        f"{'.'.join(map(str, problem['loc'])) or 'item'}: {problem['msg'].removeprefix('Value error, ')}"
        for problem in problems
    )


def _check_batch_fields(body: CreateBatchRequest, settings: Settings) -> None:
    """A mistake in the batch's own fields is the whole request's, a 422: a field of its own that no job
    would take (checked as one uploaded item), a prompt too long, a callback the policy refuses. What the
    items may still set right (transcribe_only's source_language, given item by item) is left to them."""
    common = body.job_fields()
    try:
        sample = CreateJobRequest.model_validate({**common, "audio_filename": "item"})
    except ValidationError as error:
        own = [problem for problem in error.errors() if problem["loc"] and problem["loc"][0] in common]
        if own:
            raise ApiError(422, "validation_error", _validation_message(own)) from None
        sample = None
    if sample is not None and (refusal := request_refusal(sample, settings)) is not None:
        raise refusal
    if body.callback_url is not None:
        try:
            check_callback_url(str(body.callback_url), settings)
        except UnsafeCallbackUrl as refused:
            raise ApiError(422, "validation_error", str(refused)) from None


def _items_of(body: CreateBatchRequest, settings: Settings) -> list[dict[str, Any]]:
    """Each item's own fields: as given, or one `audio_url` for each audio blob of the container."""
    if body.container_url is None:
        return body.item_fields()
    try:
        host = urlsplit(body.container_url).hostname or ""
    except ValueError:
        host = ""
    if not (is_azure_blob_host(host) or host_allowed(host, settings.fetch_allowed_hosts)):
        raise ApiError(
            422,
            "validation_error",
            "container_url must name an Azure Blob Storage container:"
            " https://<account>.blob.core.windows.net/<container>?<SAS with list and read>",
        )
    try:
        check_fetch_url(body.container_url, settings, field="container_url")
    except UnsafeFetchUrl as refused:
        raise ApiError(422, "validation_error", str(refused)) from None
    try:
        urls = audio_blob_urls(body.container_url, limit=MAX_BATCH_ITEMS)
    except ContainerRefused as refused:
        raise ApiError(422, "container_refused", str(refused)) from None
    return [{"audio_url": url} for url in urls]


def _without_query(url: object) -> str | None:
    """An item's URL as answers may show it (never its query, which may be a SAS), or None."""
    if not isinstance(url, str):
        return None
    shown = shown_options({"audio_url": url})["audio_url"]
    return shown if isinstance(shown, str) and "?" not in shown else None


def _failed_item(
    session: Session, *, batch: Batch, principal: Principal, fields: dict[str, Any], reason: str
) -> BatchItemCreated:
    """A refused item as a job that has failed at once, so that the batch's list of jobs is its list of
    items and the reason is where a job's reason is read."""
    url = _without_query(fields.get("audio_url"))
    name = fields.get("audio_filename") or (filename_from_url(url) if url else None) or "item"
    job = create_job(
        session=session,
        audio_filename=str(name)[:255],
        workflow_type=batch.workflow_type,
        source_language=None,
        target_language="en",
        callback_url=None,
        source_job_id=None,
        audio_blob_path=None,
        api_key_id=principal.id,
        options={"audio_url": url} if url else None,
        batch_id=batch.id,
    )
    job.status = "failed"
    job.error_message = f"item refused: {reason}"[:2000]
    job.completed_at = utcnow()
    return BatchItemCreated(
        job_id=job.id, status="failed", upload_url=None, upload_expires_at=None, error_message=job.error_message
    )


@router.post("/batches", status_code=201, response_model=CreateBatchResponse, responses=ERRORS, tags=["batches"])
def submit_batch(
    *,
    request: Request,
    settings: SettingsDep,
    body: CreateBatchRequest,
    session: SessionDep,
    runtime: RuntimeDep,
    principal: PrincipalDep,
) -> CreateBatchResponse:
    """Create a job for each item (1 to 1,000), or for each audio blob of `container_url`. Items with
    `audio_url` are queued at once; items with `audio_filename` answer an `upload_url` each (upload, then
    POST /jobs/{id}/start). An item refused on its own is a `failed` job with the reason. The batch
    counts as its items against the key's rate limit."""
    _check_batch_fields(body, settings)
    items = _items_of(body, settings)
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.charge(principal, len(items) - 1)  # this request itself was counted once already
    common = body.job_fields()
    batch = create_batch(
        session=session,
        batch_id=uuid.uuid4(),
        api_key_id=principal.id,
        workflow_type=body.workflow_type,
        callback_url=str(body.callback_url) if body.callback_url else None,
        item_count=len(items),
        source="items" if body.container_url is None else "container",
    )
    # The items of a batch are mostly on one host or two: resolve each name once for the whole request.
    resolver = functools.lru_cache(maxsize=64)(system_resolver)
    created: list[BatchItemCreated] = []
    for fields in items:
        try:
            job_request = CreateJobRequest.model_validate({**common, **fields})
            job = create_job_from(
                job_request,
                settings=settings,
                session=session,
                runtime=runtime,
                principal=principal,
                batch_id=batch.id,
                resolver=resolver,
            )
            created.append(BatchItemCreated.model_validate(job.model_dump()))
        except ValidationError as error:
            reason = _validation_message(error.errors())
            created.append(_failed_item(session, batch=batch, principal=principal, fields=fields, reason=reason))
        except ApiError as refused:
            created.append(
                _failed_item(session, batch=batch, principal=principal, fields=fields, reason=refused.message)
            )
    session.flush()
    # A batch whose every item was refused has ended already: it is closed, and its webhook staged, now.
    staged = close_batches(session, settings=settings, batch_ids=[batch.id])
    session.commit()
    publish_committed(runtime.bus)
    deliver_now(runtime, staged)
    status, _counts = status_of(session=session, batch=batch)
    log.info(
        "batch created",
        extra={"action": "batch_created", "batch_id": str(batch.id), "items": len(items), "source": batch.source},
    )
    return CreateBatchResponse(
        batch_id=batch.id,
        job_ids=[item.job_id for item in created],
        status=status,  # type: ignore[arg-type]
        items=created,
    )


def batch_response(session: Session, batch: Batch) -> BatchResponse:
    status, counts = status_of(session=session, batch=batch)
    deliveries = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.batch_id == batch.id).order_by(WebhookDelivery.created_at)
    ).all()
    return BatchResponse(
        batch_id=batch.id,
        status=status,  # type: ignore[arg-type]
        workflow_type=batch.workflow_type,
        source=batch.source,
        total=sum(counts.values()),
        counts={name: counts.get(name, 0) for name in JOB_STATUSES},
        created_at=batch.created_at,
        cancel_requested_at=batch.cancel_requested_at,
        completed_at=batch.completed_at,
        webhooks=[WebhookDeliveryResponse.of(delivery) for delivery in deliveries],
    )


@router.get("/batches/{batch_id}", response_model=BatchResponse, responses=ERRORS, tags=["batches"])
def read_batch(batch_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> BatchResponse:
    """The batch's status and its jobs counted by status."""
    return batch_response(session, _batch_or_404(session, batch_id, principal))


@router.get("/batches/{batch_id}/results", response_model=BatchResultsResponse, responses=ERRORS, tags=["batches"])
def read_batch_results(
    settings: SettingsDep, batch_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> BatchResultsResponse:
    """Every item's job, in the items' order: its audio_url, status, error and where its results are."""
    batch = _batch_or_404(session, batch_id, principal)
    status, _counts = status_of(session=session, batch=batch)
    items = [
        BatchResultItem(
            job_id=job.id,
            audio_url=_without_query((job.options or {}).get("audio_url")),
            audio_filename=job.audio_filename,
            status=job.status,  # type: ignore[arg-type]
            error_message=job.error_message,
            results_url=f"{settings.public_base_url}/jobs/{job.id}/results",
        )
        for job in batch_jobs(session=session, batch_id=batch.id)
    ]
    return BatchResultsResponse(batch_id=batch.id, status=status, items=items)  # type: ignore[arg-type]


@router.delete("/batches/{batch_id}", response_model=BatchResponse, responses=ERRORS, tags=["batches"])
def cancel(batch_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, principal: PrincipalDep) -> BatchResponse:
    """Cancel every job of the batch that has not ended, as DELETE /jobs/{id} cancels one (a running
    step stops at its next boundary; results already made stay readable); answers the batch's state.
    A batch that has ended is left as it is."""
    batch = _batch_or_404(session, batch_id, principal)
    applied, staged = _cancel(session, runtime, batch)
    session.commit()
    publish_committed(runtime.bus)
    deliver_now(runtime, staged)
    log.info(
        "batch cancelled", extra={"action": "batch_cancelled", "batch_id": str(batch.id), "jobs_cancelled": applied}
    )
    session.expire_all()
    return batch_response(session, _batch_or_404(session, batch_id, principal))


def _cancel(session: Session, runtime: Runtime, batch: Batch) -> tuple[int, list[uuid.UUID]]:
    applied, staged = cancel_batch(session, settings=runtime.settings, batch=batch)
    runtime.bus.stage_many(session, [message for done in applied for message in done.messages])
    return len(applied), staged
