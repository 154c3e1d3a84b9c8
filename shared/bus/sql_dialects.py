"""The SQL the queue runs, where PostgreSQL and SQLite differ: an insert that skips duplicates (and on
PostgreSQL wakes the listeners in the same statement), and the claim of the next messages (`FOR UPDATE
SKIP LOCKED` on PostgreSQL; SQLite serialises writers). shared/bus/sqlqueue.py runs them."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Connection, Table, case, func, literal, or_, update
from sqlalchemy import select as sql_select
from sqlalchemy.dialects import postgresql, sqlite

from shared.bus.wakeup import NOTIFY_CHANNEL
from shared.domain.models import QueueMessage

MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"

ACTIVE, DEAD, DONE = "active", "dead", "done"

messages_table = cast(Table, QueueMessage.__table__)
_table = messages_table
_c = _table.c


def insert_many_unless_present(rows: list[dict[str, Any]], *, postgres: bool) -> Any:
    """Insert messages, skipping those whose (queue, message_id) is taken, returning (queue, message_id)
    of those that went in; on PostgreSQL it also notifies the waiting consumers, on commit."""
    if postgres:
        staged = (
            postgresql.insert(_table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["queue", "message_id"])
            .returning(_c.queue, _c.message_id)
            .cte("staged")
        )
        # One notification per queue and transaction reaches the listeners (PostgreSQL folds repeats).
        return sql_select(staged.c.queue, staged.c.message_id, func.pg_notify(literal(NOTIFY_CHANNEL), staged.c.queue))
    return (
        sqlite.insert(_table)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["queue", "message_id"])
        .returning(_c.queue, _c.message_id)
    )


def insert_unless_present(executor: Connection, values: dict[str, Any], *, postgres: bool) -> bool:
    """Insert one message unless its (queue, message_id) is taken; whether it went in."""
    if postgres:
        # One round trip: insert, and notify waiting consumers (delivered on commit) only if it went in.
        staged = (
            postgresql.insert(_table)
            .values(values)
            .on_conflict_do_nothing(index_elements=["queue", "message_id"])
            .returning(_c.queue)
            .cte("staged")
        )
        statement = sql_select(func.pg_notify(literal(NOTIFY_CHANNEL), staged.c.queue))
        return executor.execute(statement).first() is not None
    inserted = executor.execute(
        sqlite.insert(_table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["queue", "message_id"])
        .returning(_c.id)
    )
    return inserted.first() is not None


def claim_statement(
    queue: str,
    state: str,
    now: int,
    limit: int,
    *,
    postgres: bool,
    lock_ms: int,
    max_delivery_count: int,
    max_delivery_description: str,
) -> Any:
    """The one conditional UPDATE that locks the next deliverable messages of `queue` (and dead-letters
    those past the max delivery count), returning them."""
    candidate = (
        sql_select(_c.id)
        .where(
            _c.queue == queue,
            _c.state == state,
            _c.visible_ms <= now,
            or_(_c.locked_until_ms.is_(None), _c.locked_until_ms < now),
        )
        .order_by(_c.visible_ms, _c.id)
        .limit(limit)
    )
    if postgres:
        candidate = candidate.with_for_update(skip_locked=True)
    lock_token = str(uuid.uuid4())
    locked_until = now + lock_ms
    values: dict[str, Any]
    if state == DEAD:
        # The dead-letter sub-queue has no max delivery count: its messages stay until completed.
        values = {
            "lock_token": lock_token,
            "locked_until_ms": locked_until,
            "delivery_count": _c.delivery_count + 1,
        }
    else:
        exhausted = _c.delivery_count >= max_delivery_count
        values = {
            "state": case((exhausted, DEAD), else_=_c.state),
            "dead_letter_reason": case((exhausted, MAX_DELIVERY_REASON), else_=_c.dead_letter_reason),
            "dead_letter_description": case((exhausted, max_delivery_description), else_=_c.dead_letter_description),
            "lock_token": case((exhausted, None), else_=lock_token),
            "locked_until_ms": case((exhausted, None), else_=locked_until),
            "delivery_count": case((exhausted, _c.delivery_count), else_=_c.delivery_count + 1),
        }
    return (
        update(_table)
        .where(_c.id.in_(candidate.scalar_subquery()) if limit > 1 else _c.id == candidate.scalar_subquery())
        .values(values)
        .returning(
            _c.id,
            _c.message_id,
            _c.body,
            _c.properties,
            _c.state,
            _c.delivery_count,
            _c.lock_token,
            _c.locked_until_ms,
            _c.enqueued_ms,
            _c.dead_letter_reason,
            _c.dead_letter_description,
        )
    )
