"""Signed webhooks, delivered from an outbox.

When a job reaches a terminal status the router stages a `webhook_deliveries` row in the same
transaction (so no callback is lost and none is invented). A dispatcher delivers due rows: POST with
the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">`), exponential backoff up to `WEBHOOK_MAX_ATTEMPTS` tries,
no retry on a 4xx other than 408 and 429, `Retry-After` honoured. Each attempt is recorded on the row
and shown in GET /jobs/{id}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from shared.core.config import Settings
from shared.core.netsafety import UnsafeCallbackUrl, check_callback_url_at_delivery
from shared.domain.models import Batch, Job, WebhookDelivery, utcnow
from shared.runtime import Runtime
from shared.runtime.loop import Shutdown, serve

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret
TOLERANCE_SECONDS = 300
_RETRYABLE_4XX = {408, 429}


# --- signing (the Standard Webhooks scheme)


def secret_bytes(secret: str) -> bytes:
    """A `whsec_<base64>` secret decodes to its key bytes; any other string is used as it is."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode("utf-8")


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(secret: str, *, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """What a receiver does: recompute the signature and check the timestamp is recent."""
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, msg_id=msg_id, timestamp=timestamp, body=body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def webhook_secret(settings: Settings) -> str:
    """WEBHOOK_SECRET, or for the embedded default one generated once under SPEECHFLOW_HOME."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value()
    return _local_secret(settings.speechflow_home / "webhook.secret")


@cache
def _local_secret(path: Path) -> str:
    """Made by the first process that needs it; read once per process (it never changes)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_suffix(f".{os.getpid()}.tmp")
        candidate.write_text(SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii"))
        candidate.chmod(0o600)
        try:
            os.link(candidate, path)  # first writer wins; everyone reads the same secret
        except FileExistsError:
            pass
        finally:
            candidate.unlink(missing_ok=True)
    return path.read_text().strip()


# --- staging (inside the router's transaction)


def stage_webhook(
    session: Session, *, settings: Settings, job: Job, status: str, error: str | None
) -> WebhookDelivery | None:
    if not job.callback_url:
        return None
    delivery_id = uuid.uuid4()
    delivery = WebhookDelivery(
        id=delivery_id,
        job_id=job.id,
        url=job.callback_url,
        event_type=f"job.{status}",
        payload={
            "type": f"job.{status}",
            "timestamp": utcnow().isoformat(),
            "job_id": str(job.id),
            "status": status,
            "results_url": f"{settings.public_base_url}/jobs/{job.id}/results",
            "error_message": error,
        },
        status="pending",
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(delivery)
    return delivery


def stage_batch_webhook(
    session: Session, *, settings: Settings, batch: Batch, status: str, counts: dict[str, int]
) -> WebhookDelivery | None:
    """`batch.completed`, staged in the transaction that closes the batch (shared/jobs/batches.py);
    delivered, signed and retried exactly as a job's webhook."""
    if not batch.callback_url:
        return None
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        batch_id=batch.id,
        url=batch.callback_url,
        event_type="batch.completed",
        payload={
            "type": "batch.completed",
            "timestamp": utcnow().isoformat(),
            "batch_id": str(batch.id),
            "status": status,
            "total": sum(counts.values()),
            "counts": counts,
            "results_url": f"{settings.public_base_url}/batches/{batch.id}/results",
        },
        status="pending",
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(delivery)
    return delivery


# --- delivery


def backoff_seconds(attempts: int, *, base: float) -> float:
    """Delay after the attempts-th failed attempt: base, 2·base, 4·base, … (10 tries ≈ 2.8 h at 20 s)."""
    return float(base * (2 ** max(0, attempts - 1)))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def claim_due(runtime: Runtime, *, limit: int = 20, delivery_id: uuid.UUID | None = None) -> list[WebhookDelivery]:
    """Lock due deliveries for one attempt (a crashed dispatcher's lock lapses after the timeout)."""
    now = utcnow()
    lock_until = now + timedelta(seconds=runtime.settings.callback_timeout_seconds + 30)
    with runtime.sessions() as session, session.begin():
        query = select(WebhookDelivery.id).where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
        )
        if delivery_id is not None:
            query = query.where(WebhookDelivery.id == delivery_id)
        query = query.order_by(WebhookDelivery.next_attempt_at).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query).all())
        if not ids:
            return []
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(locked_until=lock_until))
        rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def attempt(runtime: Runtime, delivery: WebhookDelivery, *, client: httpx.Client) -> str:
    """One POST; records the outcome. Returns the delivery's new status."""
    settings = runtime.settings
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "SpeechFlow-Webhooks/1",
        "webhook-id": str(delivery.id),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(webhook_secret(settings), msg_id=str(delivery.id), timestamp=timestamp, body=body),
    }
    attempts = delivery.attempts + 1
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    try:
        check_callback_url_at_delivery(delivery.url, settings)
        response = client.post(delivery.url, content=body, headers=headers, timeout=settings.callback_timeout_seconds)
        status_code = response.status_code
        retry_after = _retry_after(response)
        if response.is_success:
            outcome = "delivered"
        elif 400 <= status_code < 500 and status_code not in _RETRYABLE_4XX:
            outcome, error = "failed", f"refused with {status_code}"
        else:
            outcome, error = "retry", f"answered {status_code}"
    except httpx.HTTPError as failure:
        outcome, error = "retry", f"{failure.__class__.__name__}: {failure}"[:500]
    except UnsafeCallbackUrl as refused:  # the URL policy refused the address at delivery time
        outcome, error = "failed", str(refused)[:500]
    if outcome == "retry" and attempts >= settings.webhook_max_attempts:
        outcome = "failed"
        error = f"{error}; gave up after {attempts} attempts"
    now = utcnow()
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": status_code,
        "last_error": error,
        "locked_until": None,
    }
    if outcome == "delivered":
        values.update(status="delivered", delivered_at=now)
    elif outcome == "failed":
        values.update(status="failed")
    else:
        delay = max(backoff_seconds(attempts, base=settings.webhook_backoff_seconds), retry_after or 0.0)
        values.update(next_attempt_at=now + timedelta(seconds=delay))
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(WebhookDelivery)
            .where(and_(WebhookDelivery.id == delivery.id, WebhookDelivery.status == "pending"))
            .values(**values)
        )
    log.info(
        "webhook %s",
        outcome,
        extra={
            "action": f"webhook_{outcome}",
            "job_id": str(delivery.job_id) if delivery.job_id else None,
            "batch_id": str(delivery.batch_id) if delivery.batch_id else None,
            "attempt": attempts,
            "status_code": status_code,
        },
    )
    return str(values.get("status", "pending"))


def deliver_due(runtime: Runtime, *, client: httpx.Client | None = None, limit: int = 20) -> int:
    """Attempt every due delivery once; returns how many were attempted."""
    rows = claim_due(runtime, limit=limit)
    if not rows:
        return 0
    owned = client is None
    http = client or httpx.Client()
    try:
        for row in rows:
            attempt(runtime, row, client=http)
    finally:
        if owned:
            http.close()
    return len(rows)


def deliver_now(runtime: Runtime, delivery_ids: list[uuid.UUID]) -> None:
    """The fast path right after the router commits: try these deliveries at once. Best effort — the
    dispatcher retries whatever this does not deliver."""
    if not delivery_ids:
        return
    with httpx.Client() as http:
        for delivery_id in delivery_ids:
            try:
                for row in claim_due(runtime, limit=1, delivery_id=delivery_id):
                    attempt(runtime, row, client=http)
            except Exception:
                log.exception("webhook fast path failed", extra={"action": "webhook_fast_path_failed"})


class Dispatcher:
    """The dispatcher as one of the consumer loop's pollers (shared.runtime.loop.serve): each round
    attempts every delivery that is due."""

    name = "webhooks"
    concurrency = 1

    def __init__(self, runtime: Runtime, client: httpx.Client, *, interval: float = 1.0) -> None:
        self.runtime = runtime
        self.client = client
        self.idle_seconds = interval

    def poll_once(self) -> bool:
        return deliver_due(self.runtime, client=self.client) > 0


def run_dispatcher(runtime: Runtime, shutdown: Shutdown, *, interval: float = 1.0) -> None:
    """Deliver due webhooks until the shutdown is requested."""
    with httpx.Client() as http:
        serve([Dispatcher(runtime, http, interval=interval)], shutdown=shutdown)
