"""API keys: created, listed and revoked here; checked by the API (functions/api/security.py).

A key reads `sfk_<id>_<secret>`. The id is public (it is what `jobs.api_key_id` and the logs show);
the secret is 32 random bytes. Only the SHA-256 digest of the whole key is stored: the key is random
and long, so a fast hash is enough, and a stolen table gives nothing to present.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.domain.models import ApiKey, utcnow

KEY_PREFIX = "sfk"
BOOTSTRAP_KEY_ID = "bootstrap"
"""The id jobs created with SPEECHFLOW_API_KEY are recorded under; never the id of a stored key."""


@dataclass(frozen=True)
class NewKey:
    """A key just created: `key` is shown once and never stored."""

    id: str
    name: str
    key: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(presented: str) -> str | None:
    """The id part of a well-formed key, or None."""
    prefix, _, rest = presented.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or len(key_id) != 12 or not secret:
        return None
    return key_id


def create_key(*, session: Session, name: str) -> NewKey:
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=key_id, name=name, key_hash=digest(key)))
    session.flush()
    return NewKey(id=key_id, name=name, key=key)


def list_keys(*, session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all())


def revoke_key(*, session: Session, key_id: str) -> bool:
    """Revoke at once (the API looks keys up on every request). False if no active key has this id."""
    revoked = session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return revoked.rowcount == 1  # type: ignore[attr-defined]


def find_active_key(*, session: Session, presented: str) -> ApiKey | None:
    """The stored, unrevoked key matching what the client presented, or None."""
    key_id = key_id_of(presented)
    if key_id is None:
        return None
    stored = session.get(ApiKey, key_id)
    if stored is None or stored.revoked_at is not None:
        return None
    return stored if hmac.compare_digest(stored.key_hash, digest(presented)) else None


def matches_bootstrap(presented: str, bootstrap: str | None) -> bool:
    """Constant-time comparison with the bootstrap key (digests, so lengths leak nothing either)."""
    if not bootstrap:
        return False
    return hmac.compare_digest(digest(presented), digest(bootstrap))


CLIENT_SECRET_PREFIX = "ek_"  # noqa: S105 - a prefix, not a secret


def issue_client_secret(*, principal_id: str, signing_key: bytes, ttl_seconds: int, now: float) -> tuple[str, int]:
    """A short-lived credential for a browser's live session (`ek_…`), standing for `principal_id`
    until it expires: signed, not stored. Returns it and its expiry (Unix seconds)."""
    expires = int(now) + ttl_seconds
    payload = f"{principal_id}:{expires}".encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    signature = hmac.new(signing_key, b"client-secret:" + payload, hashlib.sha256).hexdigest()[:32]
    return f"{CLIENT_SECRET_PREFIX}{body}.{signature}", expires


def client_secret_principal(presented: str, *, signing_key: bytes, now: float) -> str | None:
    """The principal a client secret stands for, or None if it is forged, malformed or expired."""
    if not presented.startswith(CLIENT_SECRET_PREFIX) or len(presented) > 512:
        return None
    body, _, signature = presented[len(CLIENT_SECRET_PREFIX) :].partition(".")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        principal_id, _, expires = payload.decode().rpartition(":")
        expiry = int(expires)
    except (ValueError, UnicodeDecodeError):
        return None
    expected = hmac.new(signing_key, b"client-secret:" + payload, hashlib.sha256).hexdigest()[:32]
    if not principal_id or not hmac.compare_digest(expected, signature) or expiry <= now:
        return None
    return principal_id
