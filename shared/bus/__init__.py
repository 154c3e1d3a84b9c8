"""MessageBus port: Service Bus semantics (peek-lock, complete / abandon / dead-letter, lock
renewal, delivery count, scheduled delivery, duplicate detection on message_id) over either the SQL
queue (embedded default, self-hosting on PostgreSQL) or Azure Service Bus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.bus.port import MessageBus, Outgoing, QueueDepth, ReceivedMessage, publish_committed, settle_with_commit
from shared.bus.sqlqueue import SqlQueue

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from shared.core.config import Settings

__all__ = [
    "MessageBus",
    "Outgoing",
    "QueueDepth",
    "ReceivedMessage",
    "make_bus",
    "publish_committed",
    "settle_with_commit",
]


def make_bus(settings: Settings, engine: Engine) -> MessageBus:
    """Service Bus when it is configured, otherwise the SQL queue in the job database."""
    if settings.uses_service_bus:
        from shared.bus.servicebus import ServiceBusBus  # lazy: the Azure SDK, only where it is configured

        return ServiceBusBus(settings, engine)
    return SqlQueue(settings, engine)
