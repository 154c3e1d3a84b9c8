"""Callbacks: staged with the job's terminal status, signed, retried with backoff, visible on the job."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from shared.jobs.webhooks import deliver_due, verify, webhook_secret
from tests.support.pipeline import Stack, build_stack, permanent, with_behaviours
from tests.support.receiver import webhook_receiver


@pytest.fixture
def stack(database_url: str, make_settings) -> Iterator[Stack]:
    settings = make_settings(
        database_url=database_url,
        webhook_backoff_seconds=0.05,
        webhook_max_attempts=4,
        webhook_secret="whsec_" + "c2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3ODkwMTI=",
    )
    built = build_stack(settings)
    yield built
    built.client.close()
    built.runtime.close()


def run_job(stack: Stack, url: str, workflow: str = "lid_only") -> uuid.UUID:
    job_id = stack.submit(workflow, callback_url=url)
    stack.start(job_id)
    stack.drive(job_id)
    return job_id


def deliver_until_settled(stack: Stack, job_id: uuid.UUID, *, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliver_due(stack.runtime)
        webhooks = stack.job(job_id)["webhooks"]
        if webhooks and all(w["status"] != "pending" for w in webhooks):
            return webhooks[0]
        time.sleep(0.02)
    raise AssertionError(f"webhook still pending: {stack.job(job_id)['webhooks']}")


def test_completion_is_delivered_signed(stack: Stack) -> None:
    with webhook_receiver() as receiver:
        job_id = run_job(stack, receiver.url)
        webhook = deliver_until_settled(stack, job_id)
    assert webhook["status"] == "delivered" and webhook["attempts"] == 1
    ((headers, body),) = receiver.requests
    assert verify(webhook_secret(stack.settings), headers=headers, body=body)
    assert headers["webhook-id"] == webhook["webhook_id"]
    payload = json.loads(body)
    assert payload["type"] == "job.completed"
    assert payload["job_id"] == str(job_id) and payload["status"] == "completed"
    assert payload["results_url"].endswith(f"/jobs/{job_id}/results")


def test_failed_job_is_announced_with_its_error(stack: Stack) -> None:
    with_behaviours(stack.workers[0], [permanent])
    with webhook_receiver() as receiver:
        job_id = run_job(stack, receiver.url)
        deliver_until_settled(stack, job_id)
    payload = json.loads(receiver.requests[0][1])
    assert payload["type"] == "job.failed"
    assert "not an audio file" in payload["error_message"]


def test_server_errors_are_retried_with_the_same_id_until_delivered(stack: Stack) -> None:
    with webhook_receiver([(500, {}), (503, {}), (429, {"Retry-After": "0"})]) as receiver:
        job_id = run_job(stack, receiver.url)
        webhook = deliver_until_settled(stack, job_id)
    assert webhook["status"] == "delivered"
    assert webhook["attempts"] == 4
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 4 and ids == {webhook["webhook_id"]}
    assert all(verify(webhook_secret(stack.settings), headers=h, body=b) for h, b in receiver.requests)


def test_a_4xx_refusal_is_not_retried(stack: Stack) -> None:
    with webhook_receiver([(410, {})]) as receiver:
        job_id = run_job(stack, receiver.url)
        webhook = deliver_until_settled(stack, job_id)
    assert webhook["status"] == "failed"
    assert webhook["attempts"] == 1 and webhook["last_status_code"] == 410
    assert len(receiver.requests) == 1


def test_timeouts_408_are_retried(stack: Stack) -> None:
    with webhook_receiver([(408, {})]) as receiver:
        job_id = run_job(stack, receiver.url)
        webhook = deliver_until_settled(stack, job_id)
    assert webhook["status"] == "delivered" and webhook["attempts"] == 2


def test_an_unreachable_receiver_is_given_up_after_the_maximum(stack: Stack) -> None:
    with webhook_receiver() as receiver:
        dead_url = receiver.url
    job_id = run_job(stack, dead_url)
    webhook = deliver_until_settled(stack, job_id)
    assert webhook["status"] == "failed"
    assert webhook["attempts"] == stack.settings.webhook_max_attempts
    assert "gave up after 4 attempts" in webhook["last_error"]


def test_retry_after_delays_the_next_attempt(stack: Stack) -> None:
    with webhook_receiver([(503, {"Retry-After": "30"})]) as receiver:
        job_id = run_job(stack, receiver.url)
        time.sleep(0.2)
        deliver_due(stack.runtime)
        webhook = stack.job(job_id)["webhooks"][0]
    assert webhook["status"] == "pending" and webhook["attempts"] == 1
    assert len(receiver.requests) == 1


def test_no_callback_url_stages_nothing(stack: Stack) -> None:
    job_id = stack.submit("lid_only")
    stack.start(job_id)
    stack.drive(job_id)
    assert stack.job(job_id)["webhooks"] == []


def test_delivery_rechecks_the_address_dns_rebinding(
    database_url: str, make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Public when the job was submitted, loopback when the callback is due: nothing is sent."""
    from shared.core import netsafety

    answers = iter(["93.184.215.14", "127.0.0.1"])

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[object]:
        return [(netsafety.socket.AF_INET, netsafety.socket.SOCK_STREAM, 6, "", (next(answers), port))]

    posted: list[str] = []
    monkeypatch.setattr(netsafety.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr("httpx.Client.post", lambda _self, url, **_kw: posted.append(url))
    stack = build_stack(make_settings(database_url=database_url, callback_allowed_hosts=""))
    try:
        job_id = run_job(stack, "https://rebind.example.com/hook")
        webhook = deliver_until_settled(stack, job_id)
    finally:
        stack.client.close()
        stack.runtime.close()
    assert posted == []
    assert webhook["status"] == "failed" and webhook["attempts"] == 1
    assert "127.0.0.1" in webhook["last_error"] or "loopback" in webhook["last_error"]
