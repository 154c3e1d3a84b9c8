"""Batches: jobs submitted together (POST /batches) and the one `batch.completed` webhook when every one
of them has ended.

Ending a batch is exactly-once under crashes and concurrency because it is decided where its jobs end:
whoever ends a job of a batch (the router, a cancel, the dead-letter consumer) calls `close_batches` in
that same transaction, after the job's terminal status is written. `close_batches` locks the batch row,
then counts its jobs that have not ended. Two transactions that end the batch's last two jobs queue on
that lock, and under READ COMMITTED the second one's count (a new statement, a new snapshot) sees the
first one's job ended: one of them, never neither, sees every job ended, sets `completed_at` and stages
the webhook row; a transaction that dies commits neither its job's end nor the batch's. Batch rows are
locked after every job row and in id order, so lockers cannot deadlock. The retention pass
(`sweep_ended_batches`) closes any batch left open all the same, should a job ever end elsewhere.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from shared.core.config import Settings
from shared.domain.batches import all_ended, batch_status
from shared.domain.models import Batch, Job, utcnow
from shared.domain.status import CANCELLABLE_STATUSES, TERMINAL_STATUSES
from shared.domain.workflow import Event
from shared.jobs.lifecycle import Applied, decide
from shared.jobs.store import lock_jobs
from shared.jobs.webhooks import deliver_now, stage_batch_webhook
from shared.runtime import Runtime

log = logging.getLogger(__name__)


def create_batch(
    *,
    session: Session,
    batch_id: uuid.UUID,
    api_key_id: str | None,
    workflow_type: str,
    callback_url: str | None,
    item_count: int,
    source: str,
) -> Batch:
    batch = Batch(
        id=batch_id,
        api_key_id=api_key_id,
        workflow_type=workflow_type,
        callback_url=callback_url,
        item_count=item_count,
        source=source,
    )
    session.add(batch)
    session.flush()
    return batch


def get_batch(*, session: Session, batch_id: uuid.UUID) -> Batch | None:
    return session.get(Batch, batch_id)


def status_counts(*, session: Session, batch_id: uuid.UUID) -> dict[str, int]:
    """How many of the batch's jobs are in each status."""
    rows = session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)).all()
    return {str(status): int(count) for status, count in rows}


def batch_jobs(*, session: Session, batch_id: uuid.UUID) -> list[Job]:
    """The batch's jobs in the order of its items (their creation order)."""
    query = (
        select(Job).where(Job.batch_id == batch_id).options(selectinload(Job.steps)).order_by(Job.created_at, Job.id)
    )
    return list(session.scalars(query).all())


def status_of(*, session: Session, batch: Batch) -> tuple[str, dict[str, int]]:
    """The batch's status and its jobs' counts by status."""
    counts = status_counts(session=session, batch_id=batch.id)
    status = batch_status(counts, ended=batch.completed_at is not None, cancelled=batch.cancel_requested_at is not None)
    return status, counts


def close_batches(session: Session, *, settings: Settings, batch_ids: Iterable[uuid.UUID | None]) -> list[uuid.UUID]:
    """In the caller's transaction, after it has written its jobs' ends: close each of these batches
    (None: a job of no batch) whose jobs have all ended (`completed_at`, and `batch.completed` staged).
    Returns the webhook rows staged, to try at once after the commit."""
    staged: list[uuid.UUID] = []
    for batch_id in sorted({batch_id for batch_id in batch_ids if batch_id is not None}):
        batch = session.scalars(
            select(Batch).where(Batch.id == batch_id, Batch.completed_at.is_(None)).with_for_update()
        ).one_or_none()
        if batch is None:
            continue  # already closed: a redelivered event, or the sweep got there first
        counts = status_counts(session=session, batch_id=batch_id)
        if not all_ended(counts):
            continue
        batch.completed_at = utcnow()
        status = batch_status(counts, ended=True, cancelled=batch.cancel_requested_at is not None)
        delivery = stage_batch_webhook(session, settings=settings, batch=batch, status=status, counts=counts)
        if delivery is not None:
            staged.append(delivery.id)
        log.info(
            "batch ended",
            extra={
                "action": "batch_completed",
                "batch_id": str(batch_id),
                "status": status,
                "jobs": sum(counts.values()),
            },
        )
    return staged


def cancel_batch(session: Session, *, settings: Settings, batch: Batch) -> tuple[list[Applied], list[uuid.UUID]]:
    """Cancel every job of the batch that has not ended (each as DELETE /jobs/{id} would), record the
    request, and close the batch. Jobs are locked before the batch, as everywhere. Returns the
    decisions applied (their messages for the caller to stage) and the webhook rows staged."""
    ids = set(session.scalars(select(Job.id).where(Job.batch_id == batch.id)).all())
    applied: list[tuple[Job, Applied]] = []
    for job in lock_jobs(session=session, job_ids=ids):
        if job.status in CANCELLABLE_STATUSES:
            applied.append((job, decide(session, settings=settings, job=job, event=Event(kind="cancel_requested"))))
    if batch.cancel_requested_at is None and batch.completed_at is None:
        batch.cancel_requested_at = utcnow()
    session.flush()
    webhooks = [done.webhook_id for _job, done in applied if done.webhook_id is not None]
    webhooks += close_batches(session, settings=settings, batch_ids=[batch.id])
    return [done for _job, done in applied], webhooks


def open_batches_all_ended(*, session: Session, limit: int = 200) -> list[uuid.UUID]:
    """Batches still open although none of their jobs is left running."""
    unended = select(Job.id).where(Job.batch_id == Batch.id, Job.status.not_in(sorted(TERMINAL_STATUSES))).exists()
    query = select(Batch.id).where(Batch.completed_at.is_(None), ~unended).order_by(Batch.created_at).limit(limit)
    return list(session.scalars(query).all())


def sweep_ended_batches(runtime: Runtime) -> int:
    """The retention pass's safety net: close the batches whose jobs have all ended. Returns how many."""
    with runtime.sessions() as session:
        candidates = open_batches_all_ended(session=session)
    if not candidates:
        return 0
    with runtime.sessions() as session, session.begin():
        staged = close_batches(session, settings=runtime.settings, batch_ids=candidates)
        closed = sum(
            1 for batch_id in candidates if (batch := session.get(Batch, batch_id)) and batch.completed_at is not None
        )
    deliver_now(runtime, staged)
    return closed
