"""API keys, Entra ID tokens, the rate limiter and the security settings, without I/O."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from functions.api.security import Principal, RateLimiter, SecurityError, SharedRateLimiter, TokenVerifier, rate_limiter
from shared.core.config import Settings
from shared.domain.models import Job
from shared.jobs.keys import digest, key_id_of, matches_bootstrap

ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0"
AUDIENCE = "api://speechflow"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- rate limiter ------------------------------------------------------------------------------


def test_bucket_allows_the_burst_then_refuses_with_the_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert wait == pytest.approx(1.0)  # one token a second


def test_bucket_refills_over_time_but_not_past_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    clock.now += 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.acquire("a") > 0


def test_a_cost_takes_that_many_tokens_and_a_cost_over_the_burst_needs_a_full_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=5, clock=clock)
    assert limiter.acquire("a", cost=3) == 0.0
    assert limiter.acquire("a", cost=3) == pytest.approx(1.0)  # 2 left: one second to a third
    assert limiter.acquire("a", cost=2) == 0.0
    clock.now += 5  # full again
    assert limiter.acquire("a", cost=12) == 0.0  # more than the burst: goes ahead on a full bucket
    assert limiter.acquire("a") == pytest.approx(8.0)  # and owes 7: eight seconds to the next token
    clock.now += 10
    assert limiter.acquire("a", taken=1.0) == 0.0
    # Authentication took one token: a request costing more than the burst goes ahead with the rest.
    clock.now += 10
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a", cost=11, taken=1.0) == 0.0
    assert limiter.acquire("a") > 0


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=FakeClock())
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_zero_rate_turns_limiting_off() -> None:
    limiter = RateLimiter(per_minute=0, burst=1, clock=FakeClock())
    assert not limiter.enabled
    assert all(limiter.acquire("a") == 0.0 for _ in range(1000))


def test_full_buckets_are_forgotten_when_there_are_many() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    limiter._MAX_BUCKETS = 10  # type: ignore[misc]
    for index in range(11):
        limiter.acquire(f"k{index}")
    clock.now += 5  # every bucket has refilled
    limiter.acquire("fresh")
    assert len(limiter._buckets) == 1


def test_buckets_are_shared_on_postgresql_and_per_process_on_sqlite(tmp_path: Any) -> None:
    def never_opened() -> Any:
        raise AssertionError("choosing a limiter opens no session")

    postgres = Settings(database_url="postgres://user@db.example/speechflow", speechflow_home=tmp_path)
    sqlite = Settings(speechflow_home=tmp_path)
    assert isinstance(rate_limiter(postgres, never_opened), SharedRateLimiter)
    assert isinstance(rate_limiter(sqlite, never_opened), RateLimiter)


# --- API keys ----------------------------------------------------------------------------------


def test_key_id_is_read_only_from_well_formed_keys() -> None:
    assert key_id_of("sfk_0123456789ab_secret-part_with_underscores") == "0123456789ab"
    for bad in ("", "sfk_", "sfk_0123456789ab_", "xyz_0123456789ab_secret", "sfk_short_secret", "Bearer x"):
        assert key_id_of(bad) is None


def test_digest_is_sha256_hex_and_bootstrap_match_is_exact() -> None:
    assert digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert matches_bootstrap("the-key", "the-key")
    assert not matches_bootstrap("the-key ", "the-key")
    assert not matches_bootstrap("the-key", None)
    assert not matches_bootstrap("", "")


def test_a_principal_owns_only_the_jobs_it_created() -> None:
    job = Job(id=uuid.uuid4(), api_key_id="0123456789ab")
    assert Principal(id="0123456789ab", kind="api_key").owns(job)
    assert not Principal(id="bootstrap", kind="bootstrap").owns(job)
    assert not Principal(id="bootstrap", kind="bootstrap").owns(Job(id=uuid.uuid4(), api_key_id=None))


# --- Entra ID tokens ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def verifier(rsa_key: rsa.RSAPrivateKey) -> TokenVerifier:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    keys = jwt.PyJWKSet.from_dict({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})

    def signing_key(token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")
        for key in keys.keys:
            if key.key_id == kid:
                return key.key
        raise jwt.PyJWKClientError(f"no key {kid}")

    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, signing_key=signing_key, leeway=0)


def token(key: Any, *, kid: str = "k1", algorithm: str = "RS256", **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
        "oid": "11111111-2222-3333-4444-555555555555",
        "sub": "subject",
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def test_a_valid_token_gives_the_object_id_as_principal(verifier: TokenVerifier, rsa_key: Any) -> None:
    principal = verifier.verify(token(rsa_key))
    assert principal == Principal(id="entra:11111111-2222-3333-4444-555555555555", kind="entra")


def test_without_oid_the_subject_is_used(verifier: TokenVerifier, rsa_key: Any) -> None:
    assert verifier.verify(token(rsa_key, oid=None)).id == "entra:subject"
    long_subject = "s" * 200
    ident = verifier.verify(token(rsa_key, oid=None, sub=long_subject)).id
    assert len(ident) <= 64 and ident.startswith("entra:")


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) - 10},
        {"aud": "api://someone-else"},
        {"iss": "https://login.microsoftonline.com/another-tenant/v2.0"},
        {"exp": None},
        {"oid": None, "sub": None},
    ],
    ids=["expired", "audience", "issuer", "no-expiry", "no-subject"],
)
def test_invalid_claims_are_refused(verifier: TokenVerifier, rsa_key: Any, overrides: dict[str, Any]) -> None:
    with pytest.raises(SecurityError) as refused:
        verifier.verify(token(rsa_key, **overrides))
    assert refused.value.status == 401
    assert refused.value.headers == {"WWW-Authenticate": "Bearer"}


def test_a_token_signed_by_another_key_is_refused(verifier: TokenVerifier) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(SecurityError):
        verifier.verify(token(other))
    with pytest.raises(SecurityError):
        verifier.verify(token(other, kid="unknown"))


def test_an_hmac_token_is_refused_whatever_its_secret(verifier: TokenVerifier) -> None:
    with pytest.raises(SecurityError):
        verifier.verify(token("a-shared-secret-of-enough-length-for-hs256", algorithm="HS256"))
    with pytest.raises(SecurityError):
        verifier.verify("not.a.jwt")


# --- settings ----------------------------------------------------------------------------------


def test_upload_url_ttl_is_capped_at_fifteen_minutes() -> None:
    assert Settings(upload_url_ttl_seconds=900).upload_url_ttl_seconds == 900
    for bad in (901, 3600, 0, -1):
        with pytest.raises(ValidationError):
            Settings(upload_url_ttl_seconds=bad)


@pytest.mark.parametrize(
    "field", ["signing_key", "service_bus_connection_string", "azure_storage_connection_string", "api_key"]
)
@pytest.mark.parametrize("placeholder", ["changeme", "CHANGE-ME", " placeholder ", "secret"])
def test_production_refuses_placeholder_secrets(field: str, placeholder: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(environment="production", **{field: placeholder})
    assert getattr(Settings(environment="development", **{field: placeholder}), field) is not None


def test_production_refuses_a_short_bootstrap_key() -> None:
    with pytest.raises(ValidationError, match="too short"):
        Settings(environment="production", api_key="short-but-not-placeholder")
    Settings(environment="production", api_key="k" * 32)


def test_settings_never_show_secrets() -> None:
    secret = "sfk_0123456789ab_do-not-print-me"
    settings = Settings(api_key=secret, signing_key="signing-secret-value-xyz")
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert secret not in text and "signing-secret-value-xyz" not in text
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production", signing_key="changeme", api_key="short-secret-in-an-error")
    assert "short-secret-in-an-error" not in str(refused.value)


def test_callback_allowed_hosts_from_a_comma_separated_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_ALLOWED_HOSTS", " localhost, Hooks.Internal ,,")
    assert Settings().callback_allowed_hosts == ["localhost", "hooks.internal"]
    assert Settings(callback_allowed_hosts=["a"]).callback_allowed_hosts == ["a"]
