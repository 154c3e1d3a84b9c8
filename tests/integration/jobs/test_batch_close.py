"""Closing a batch on PostgreSQL, where two transactions may end its last two jobs at once (two routers,
a router and a cancel): exactly one of them closes it and stages batch.completed, never neither and never
both; a transaction that dies after closing it leaves it open for the next one (shared/jobs/batches.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from shared.core.config import Settings
from shared.domain.models import Batch, Job, WebhookDelivery
from shared.jobs.batches import close_batches
from tests.support.pipeline import Stack, build_stack

pytestmark = pytest.mark.postgres


@pytest.fixture
def stack(pg_database_factory: Callable[[], str], make_settings: Callable[..., Settings]) -> Iterator[Stack]:
    from shared.core.db import migrate

    settings = make_settings(database_url=pg_database_factory())
    migrate(settings)
    built = build_stack(settings)
    yield built
    built.client.close()
    built.runtime.close()


def new_batch(stack: Stack, items: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    created = stack.client.post(
        "/batches",
        json={
            "workflow_type": "lid_only",
            "callback_url": "http://127.0.0.1:9/hook",
            "items": [{"audio_filename": f"{index}.wav"} for index in range(items)],
        },
    ).json()
    return uuid.UUID(created["batch_id"]), [uuid.UUID(job_id) for job_id in created["job_ids"]]


def end_job(stack: Stack, job_id: uuid.UUID, batch_id: uuid.UUID, *, hold: threading.Event | None = None) -> None:
    """End one job and close its batch in one transaction, as the router does; with `hold`, keep the
    transaction open (its locks held) until the event is set."""
    with stack.runtime.sessions() as session, session.begin():
        job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
        job.status = "completed"
        session.flush()
        close_batches(session, settings=stack.settings, batch_ids=[batch_id])
        if hold is not None:
            assert hold.wait(10)


def deliveries(stack: Stack, batch_id: uuid.UUID) -> int:
    with stack.runtime.sessions() as session:
        return len(session.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)).all())


@pytest.mark.parametrize("rounds", range(3))
def test_the_last_two_jobs_ending_at_once_close_the_batch_exactly_once(stack: Stack, rounds: int) -> None:
    batch_id, (first, second) = new_batch(stack, 2)
    release = threading.Event()
    holder = threading.Thread(target=end_job, args=(stack, first, batch_id), kwargs={"hold": release})
    holder.start()
    time.sleep(0.3)  # the holder has ended its job and looked at the batch (still open: the other runs)
    other = threading.Thread(target=end_job, args=(stack, second, batch_id))
    other.start()
    time.sleep(0.3)  # the other one now waits on the batch row the holder has locked
    assert other.is_alive(), "the second closer must wait for the first one's lock"
    release.set()
    holder.join(10)
    other.join(10)
    with stack.runtime.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None and batch.completed_at is not None
    assert deliveries(stack, batch_id) == 1


def test_a_transaction_that_dies_after_closing_leaves_the_batch_to_the_next(stack: Stack) -> None:
    batch_id, (only,) = new_batch(stack, 1)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), stack.runtime.sessions() as session, session.begin():
        session.get(Job, only).status = "failed"  # type: ignore[union-attr]
        session.flush()
        assert close_batches(session, settings=stack.settings, batch_ids=[batch_id])
        raise Crash  # the job's end and the batch's close are lost together
    assert deliveries(stack, batch_id) == 0
    end_job(stack, only, batch_id)  # the event is routed again
    end_job(stack, only, batch_id)  # and once more: a redelivery closes nothing twice
    assert deliveries(stack, batch_id) == 1
