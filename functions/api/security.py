"""Who is calling, how often, and with what upload (docs/SECURITY.md).

- Authentication: an API key in `x-api-key` or `Authorization: Bearer` (stored keys, shared/jobs/keys.py,
  or the bootstrap key SPEECHFLOW_API_KEY), or, when ENTRA_* is configured, an Entra ID access token
  (a JWT checked against the tenant's published keys).
- Ownership: a job belongs to the principal that created it; to everyone else it does not exist.
- Rate limiting: a token bucket per principal. On PostgreSQL the buckets are rows that every API
  replica shares (`SharedRateLimiter`); on SQLite, where there is one host, they live in the process.
- Uploads: size, and for audio workflows a probe (is it audio, how long) before the job is queued.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Float, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert

from shared.domain.models import RateLimitBucket
from shared.jobs.intake import AcceptedAudio, AudioRefused, accept_upload
from shared.jobs.keys import BOOTSTRAP_KEY_ID, find_active_key, matches_bootstrap

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.core.config import Settings
    from shared.domain.models import Job
    from shared.storage import BlobStore

log = logging.getLogger(__name__)

_MAX_CREDENTIAL_LENGTH = 8192
"""Longer credentials are refused unread (Entra tokens are a few kB; our keys are 60 characters)."""


@dataclass(frozen=True)
class Principal:
    """The caller. `id` is what `jobs.api_key_id` records: a key id, `bootstrap`, or `entra:<object id>`."""

    id: str
    kind: Literal["api_key", "bootstrap", "entra"]

    def owns(self, job: Job) -> bool:
        return job.api_key_id == self.id


class SecurityError(Exception):
    """A refusal, answered in the API's error shape (create_app registers the handler)."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _unauthorized(code: str, message: str) -> SecurityError:
    return SecurityError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


class Limiter(Protocol):
    """Takes one request's token for a key."""

    @property
    def enabled(self) -> bool: ...

    def acquire(self, key: str, cost: float = 1.0, *, taken: float = 0.0) -> float:
        """0.0 when the request may go ahead (taking `cost` tokens), otherwise the seconds until it may.
        A cost above the burst goes ahead once the bucket is full (less the `taken` tokens this request
        has drawn already) and leaves it owing the rest, so that a batch larger than the burst is possible
        and still counts every item (docs/SECURITY.md)."""
        ...

    def waiting(self, key: str) -> float:
        """The seconds until the key's bucket holds a token (0.0: now), taking none."""
        ...


class RateLimiter:
    """Token buckets in this process: each key may make `burst` requests at once, refilled at
    `per_minute` a minute. Used on SQLite, where one host serves the API."""

    _MAX_BUCKETS = 10_000

    def __init__(self, *, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, key: str, cost: float = 1.0, *, taken: float = 0.0) -> float:
        """Take `cost` tokens: 0.0 when allowed, otherwise the seconds until they may be taken."""
        if not self.enabled:
            return 0.0
        needed = min(cost, self._burst - taken)
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens >= needed:
                self._buckets[key] = (tokens - cost, now)
                self._forget_full_buckets(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (needed - tokens) / self._rate

    def waiting(self, key: str) -> float:
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def _forget_full_buckets(self, now: float) -> None:
        """Bound memory: a bucket that has refilled completely is the same as no bucket."""
        if len(self._buckets) <= self._MAX_BUCKETS:
            return
        refill = self._burst / self._rate
        self._buckets = {key: value for key, value in self._buckets.items() if now - value[1] < refill}


class SharedRateLimiter:
    """The same token buckets as RateLimiter, kept in PostgreSQL (`rate_limit_buckets`) so that every
    API process draws on one bucket per key.

    One statement refills the bucket and takes a token: INSERT … ON CONFLICT DO UPDATE locks the key's
    row and, under READ COMMITTED, evaluates the update on the newest committed version, so concurrent
    requests queue on the row instead of overwriting each other's count. A refused request changes
    nothing (the WHERE of the update fails and no row comes back). Time is the database's `now()`, so
    the replicas' clocks do not have to agree.
    """

    def __init__(self, *, per_minute: float, burst: int, sessions: Callable[[], Session]) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._sessions = sessions
        table = RateLimitBucket.__table__.c
        rate, burst_param = bindparam("rate", type_=Float), bindparam("burst", type_=Float)
        now = func.now()
        # A transaction that started before the last update sees a negative elapsed time: count it as none.
        elapsed = func.greatest(0.0, func.extract("epoch", now - table.refilled_at))
        available = func.least(burst_param, table.tokens + elapsed * rate)
        cost = bindparam("cost", type_=Float)
        take = insert(RateLimitBucket).values(key=bindparam("key"), tokens=burst_param - cost, refilled_at=now)
        self._take = take.on_conflict_do_update(
            index_elements=[table.key],
            set_={"tokens": available - cost, "refilled_at": func.greatest(table.refilled_at, now)},
            where=available >= func.least(cost, burst_param - bindparam("taken", type_=Float)),
        ).returning(table.tokens)
        self._available = select(available).where(table.key == bindparam("key"))

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, key: str, cost: float = 1.0, *, taken: float = 0.0) -> float:
        if not self.enabled:
            return 0.0
        params = {"key": key, "rate": self._rate, "burst": self._burst, "cost": cost, "taken": taken}
        with self._sessions() as session, session.begin():
            if session.execute(self._take, params).first() is not None:
                return 0.0
            # Refused: read what the bucket holds to say how long to wait (advice only, not a decision).
            tokens = session.execute(self._available, params).scalar_one_or_none()
        return max(0.0, min(cost, self._burst - taken) - (tokens or 0.0)) / self._rate

    def waiting(self, key: str) -> float:
        if not self.enabled:
            return 0.0
        params = {"key": key, "rate": self._rate, "burst": self._burst}
        with self._sessions() as session:
            tokens = session.execute(self._available, params).scalar_one_or_none()
        if tokens is None or tokens >= 1.0:  # no row: a full bucket
            return 0.0
        return (1.0 - tokens) / self._rate


REFUSED_PER_MINUTE, REFUSED_BURST = 30.0, 10
"""Refused credentials allowed from one client address: a burst of 10, then one every 2 s (never more
than the per-key limit). Past that every request from the address is a 429 until the bucket refills,
whatever credential it carries, so guessing keys gains nothing from speed (docs/SECURITY.md)."""


def rate_limiter(
    settings: Settings, sessions: Callable[[], Session], *, per_minute: float | None = None, burst: int | None = None
) -> Limiter:
    """The limiter for this deployment: shared through PostgreSQL, otherwise in this process. The
    rate and burst are the per-key settings unless given."""
    rate = settings.rate_limit_per_minute if per_minute is None else per_minute
    size = settings.rate_limit_burst if burst is None else burst
    if settings.effective_database_url.startswith("postgresql"):
        return SharedRateLimiter(per_minute=rate, burst=size, sessions=sessions)
    return RateLimiter(per_minute=rate, burst=size)


def _too_many(wait: float, message: str) -> SecurityError:
    seconds = max(1, math.ceil(wait))
    return SecurityError(429, "rate_limited", f"{message}; retry in {seconds} s", headers={"Retry-After": str(seconds)})


class TokenVerifier:
    """Entra ID access tokens: RS256 signature by a key from the tenant's JWKS, issuer, audience, expiry."""

    def __init__(self, *, issuer: str, audience: str, signing_key: Callable[[str], Any], leeway: float = 60.0) -> None:
        self._issuer, self._audience = issuer, audience
        self._signing_key = signing_key
        self._leeway = leeway

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as error:
            log.warning("JWKS unreachable", extra={"action": "jwks_unreachable", "error": type(error).__name__})
            raise SecurityError(503, "identity_unavailable", "cannot verify tokens right now; try again") from None
        except jwt.PyJWTError as error:
            log.info("token refused", extra={"action": "token_refused", "error": type(error).__name__})
            raise _unauthorized("invalid_token", "the bearer token is not valid") from None
        subject = claims.get("oid") or claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _unauthorized("invalid_token", "the bearer token names no subject (oid or sub)")
        # jobs.api_key_id holds 64 characters; Entra object ids are GUIDs, anything longer is hashed.
        ident = subject if len(subject) <= 48 else hashlib.sha256(subject.encode()).hexdigest()[:48]
        return Principal(id=f"entra:{ident}", kind="entra")


def entra_token_verifier(settings: Settings) -> TokenVerifier | None:
    """The verifier ENTRA_* configures, or None when Entra ID tokens are not accepted."""
    tenant = settings.entra_tenant_id
    issuer = settings.entra_issuer or (tenant and f"https://login.microsoftonline.com/{tenant}/v2.0")
    jwks_url = settings.entra_jwks_url or (tenant and f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys")
    if not (settings.entra_audience and issuer and jwks_url):
        return None
    client = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600, timeout=5)
    return TokenVerifier(
        issuer=issuer,
        audience=settings.entra_audience,
        signing_key=lambda token: client.get_signing_key_from_jwt(token).key,
    )


class Authenticator:
    """Turns the presented credential into a Principal, or refuses (401, 429)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: Callable[[], Session],
        token_verifier: TokenVerifier | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self._bootstrap = settings.api_key.get_secret_value() if settings.api_key else None
        self._sessions = sessions
        self._tokens = token_verifier
        self._limiter = limiter or rate_limiter(settings, sessions)
        self._refusals = rate_limiter(
            settings,
            sessions,
            per_minute=min(REFUSED_PER_MINUTE, settings.rate_limit_per_minute),
            burst=min(REFUSED_BURST, settings.rate_limit_burst),
        )

    @property
    def limiter(self) -> Limiter:
        """The per-key buckets; the upload routes draw on them too, with a bucket per job."""
        return self._limiter

    def authenticate(self, *, api_key: str | None, bearer: str | None, client: str | None = None) -> Principal:
        """The caller, or a refusal. `client` (the peer address) has a bucket of refused credentials."""
        refusals = f"refused:{client}"[:64] if client else None
        if refusals is not None and (wait := self._refusals.waiting(refusals)) > 0:
            log.info("refused credentials rate limited", extra={"action": "rate_limited_refusals"})
            raise _too_many(wait, "too many refused credentials from this address")
        try:
            principal = self._identify(api_key=api_key, bearer=bearer)
        except SecurityError as error:
            if error.status == 401 and refusals is not None:
                self._refusals.acquire(refusals)
            raise
        wait = self._limiter.acquire(principal.id)
        if wait > 0:
            log.info("rate limited", extra={"action": "rate_limited", "api_key_id": principal.id})
            raise _too_many(wait, "too many requests for this key")
        return principal

    def charge(self, principal: Principal, requests: int) -> None:
        """Count `requests` more against the caller's limit than the one token authentication took (a
        batch counts as its items), or refuse with 429 and nothing more taken."""
        if requests <= 0:
            return
        wait = self._limiter.acquire(principal.id, cost=float(requests), taken=1.0)
        if wait > 0:
            log.info("rate limited", extra={"action": "rate_limited", "api_key_id": principal.id})
            raise _too_many(wait, f"too many requests for this key: this one counts {requests + 1}")

    def _identify(self, *, api_key: str | None, bearer: str | None) -> Principal:
        credential = api_key or bearer
        if not credential:
            raise _unauthorized("unauthorized", "an API key is required: send it as x-api-key or Authorization: Bearer")
        if len(credential) > _MAX_CREDENTIAL_LENGTH:
            raise _unauthorized("invalid_api_key", "the API key is not valid")
        if api_key is None and self._tokens is not None and credential.count(".") == 2:
            return self._tokens.verify(credential)
        if matches_bootstrap(credential, self._bootstrap):
            return Principal(id=BOOTSTRAP_KEY_ID, kind="bootstrap")
        with self._sessions() as session:
            stored = find_active_key(session=session, presented=credential)
        if stored is None:
            log.info("API key refused", extra={"action": "api_key_refused"})
            raise _unauthorized("invalid_api_key", "the API key is not valid (unknown, revoked or mistyped)")
        return Principal(id=stored.id, kind="api_key")


_api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="An API key (`speechflow keys create`).")
_bearer = HTTPBearer(auto_error=False, description="An API key, or an Entra ID access token where configured.")


def require_principal(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """FastAPI dependency: the authenticated, rate-limited caller."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(
        api_key=api_key,
        bearer=bearer.credentials if bearer else None,
        client=request.client.host if request.client else None,
    )


PrincipalDep = Annotated[Principal, Depends(require_principal)]


def accept_upload_or_422(*, blobs: BlobStore, settings: Settings, job: Job) -> AcceptedAudio | None:
    """The intake's rules (shared/jobs/intake.py) on the job's upload, a refusal answered 422 with its code."""
    try:
        return accept_upload(blobs=blobs, settings=settings, job=job)
    except AudioRefused as refusal:
        raise SecurityError(422, refusal.code, refusal.message) from None
