"""Job callbacks: the client's callback_url is told when its job reaches a terminal status."""

from __future__ import annotations

import logging
import uuid

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from shared.config import Settings
from shared.netsafety import UnsafeCallbackUrl, check_callback_url_at_delivery

log = logging.getLogger(__name__)


def callback_payload(*, settings: Settings, job_id: uuid.UUID, status: str, error: str | None) -> dict[str, object]:
    return {
        "job_id": str(job_id),
        "status": status,
        "results_url": f"{settings.public_base_url}/jobs/{job_id}/results",
        "error_message": error,
    }


def send_callback(*, settings: Settings, url: str, payload: dict[str, object]) -> bool:
    """POST the payload; a few quick retries on network errors and 5xx. True when delivered.

    The URL policy is checked again first: the host may resolve elsewhere than at submit time.
    """

    @retry(
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.2, max=2),
        retry=retry_if_exception_type((httpx.TransportError, _ServerError)),
        reraise=True,
    )
    def post() -> None:
        response = httpx.post(url, json=payload, timeout=settings.callback_timeout_seconds)
        if response.status_code >= 500:
            raise _ServerError(f"callback answered {response.status_code}")
        response.raise_for_status()

    try:
        check_callback_url_at_delivery(url, settings)
    except UnsafeCallbackUrl as refused:
        log.warning(
            "callback refused by the URL policy",
            extra={"action": "callback_refused", "job_id": payload.get("job_id"), "error": str(refused)},
        )
        return False
    try:
        post()
    except (httpx.HTTPError, _ServerError) as error:
        log.warning(
            "callback failed",
            extra={"action": "callback_failed", "job_id": payload.get("job_id"), "error": str(error)},
        )
        return False
    log.info("callback delivered", extra={"action": "callback_delivered", "job_id": payload.get("job_id")})
    return True


class _ServerError(Exception):
    pass
