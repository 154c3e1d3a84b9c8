"""Webhook signatures (the Standard Webhooks scheme) and the retry schedule."""

from __future__ import annotations

import pytest

from shared.jobs.webhooks import backoff_seconds, sign, verify

# The example from the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'


def test_signature_matches_the_specification_example() -> None:
    signature = sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(signature: str, timestamp: int = SPEC_TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": SPEC_ID, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_verify_accepts_a_valid_signature_among_several() -> None:
    good = sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)
    assert verify(SPEC_SECRET, headers=headers(f"v1,bm90LWl0 {good}"), body=SPEC_BODY, now=SPEC_TIMESTAMP + 10)


@pytest.mark.parametrize(
    ("body", "secret", "now"),
    [
        (b'{"test": 2432232315}', SPEC_SECRET, SPEC_TIMESTAMP),  # body changed
        (SPEC_BODY, "whsec_" + "A" * 32, SPEC_TIMESTAMP),  # another secret
        (SPEC_BODY, SPEC_SECRET, SPEC_TIMESTAMP + 301),  # too old: a replay
        (SPEC_BODY, SPEC_SECRET, SPEC_TIMESTAMP - 301),  # from the future
    ],
)
def test_verify_refuses_tampering_other_secrets_and_replays(body: bytes, secret: str, now: int) -> None:
    good = sign(SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)
    assert not verify(secret, headers=headers(good), body=body, now=now)


def test_verify_refuses_missing_headers() -> None:
    assert not verify(SPEC_SECRET, headers={"webhook-id": SPEC_ID}, body=SPEC_BODY)


def test_ten_attempts_spread_over_hours() -> None:
    delays = [backoff_seconds(n, base=20.0) for n in range(1, 10)]
    assert delays[:3] == [20.0, 40.0, 80.0]
    assert 2 * 3600 < sum(delays) < 3 * 3600
