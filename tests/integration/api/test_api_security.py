"""The API's security over a real database: keys, ownership, rate limits, callback and upload checks,
Entra ID tokens against a local JWKS endpoint, the keys CLI, and secrets kept out of logs and errors."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import select

from shared.cli import main as cli
from shared.domain.models import Job, RateLimitBucket
from shared.jobs.keys import create_key, key_id_of, revoke_key
from tests.support.pipeline import API_KEY, TINY_WAV, Stack, build_stack, silent_wav

BOGUS_KEY = "sfk_0123456789ab_this-is-not-a-real-key-but-looks-like-one"


@pytest.fixture
def make_stack(database_url: str, make_settings) -> Iterator[Callable[..., Stack]]:
    """Stacks over the migrated test database, with Settings overrides; closed at the end."""
    built: list[Stack] = []

    def build(**overrides: Any) -> Stack:
        built.append(build_stack(make_settings(database_url=database_url, **overrides)))
        return built[-1]

    yield build
    for one in built:
        one.client.close()
        one.runtime.close()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


def new_key(stack: Stack, name: str = "test") -> str:
    with stack.runtime.sessions() as session, session.begin():
        return create_key(session=session, name=name).key


def as_key(stack: Stack, key: str) -> dict[str, str]:
    return {"x-api-key": key}


def upload(stack: Stack, created: dict[str, Any], data: bytes) -> None:
    put = stack.client.put(created["upload_url"], content=data, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text


# --- authentication ----------------------------------------------------------------------------


def test_job_routes_need_a_key_health_and_uploads_do_not(stack: Stack) -> None:
    anonymous = TestClient(stack.client.app)
    job = str(uuid.uuid4())
    for method, path in [
        ("post", "/jobs"),
        ("get", "/jobs"),
        ("get", f"/jobs/{job}"),
        ("post", f"/jobs/{job}/start"),
        ("get", f"/jobs/{job}/results"),
        ("delete", f"/jobs/{job}"),
    ]:
        response = getattr(anonymous, method)(path)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").status_code == 200
    assert anonymous.get("/openapi.json").status_code == 200

    created = stack.client.post("/jobs", json={"workflow_type": "lid_only", "audio_filename": "a.wav"}).json()
    put = anonymous.put(created["upload_url"], content=TINY_WAV, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201  # the signed URL is its own authorisation, as an Azure SAS is


def test_a_wrong_key_is_refused_and_bearer_is_accepted(stack: Stack) -> None:
    anonymous = TestClient(stack.client.app)
    for headers in ({"x-api-key": BOGUS_KEY}, {"x-api-key": API_KEY + "x"}, {"Authorization": f"Bearer {BOGUS_KEY}"}):
        response = anonymous.get("/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert anonymous.get("/jobs", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_stored_keys_work_until_revoked(stack: Stack) -> None:
    key = new_key(stack)
    anonymous = TestClient(stack.client.app)
    assert anonymous.get("/jobs", headers=as_key(stack, key)).status_code == 200
    with stack.runtime.sessions() as session, session.begin():
        assert revoke_key(session=session, key_id=key.split("_")[1])
    assert anonymous.get("/jobs", headers=as_key(stack, key)).status_code == 401


# --- ownership ---------------------------------------------------------------------------------


def test_another_keys_job_does_not_exist_for_you(stack: Stack) -> None:
    alice, bob = as_key(stack, new_key(stack, "alice")), as_key(stack, new_key(stack, "bob"))
    body = {"workflow_type": "transcribe_only", "audio_filename": "a.wav", "source_language": "fra"}
    created = stack.client.post("/jobs", json=body, headers=alice).json()
    upload(stack, created, TINY_WAV)
    job_id = created["job_id"]
    with stack.runtime.sessions() as session:
        assert session.get(Job, uuid.UUID(job_id)).api_key_id == alice["x-api-key"].split("_")[1]  # type: ignore[union-attr]

    for method, path in [
        ("get", f"/jobs/{job_id}"),
        ("post", f"/jobs/{job_id}/start"),
        ("get", f"/jobs/{job_id}/results"),
        ("delete", f"/jobs/{job_id}"),
    ]:
        response = getattr(stack.client, method)(path, headers=bob)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["message"] == f"job {job_id} not found"
    assert stack.client.get("/jobs", headers=bob).json() == {"items": [], "total": 0}
    assert stack.client.get("/jobs").json()["total"] == 0  # the bootstrap key is a key like any other

    reuse = {"workflow_type": "summarize_only", "source_language": "fra", "source_job_id": job_id}
    assert stack.client.post("/jobs", json=reuse, headers=bob).status_code == 422

    assert stack.client.post(f"/jobs/{job_id}/start", headers=alice).status_code == 202
    listing = stack.client.get("/jobs", headers=alice).json()
    assert listing["total"] == 1 and listing["items"][0]["job_id"] == job_id
    assert stack.client.get(f"/jobs/{job_id}", headers=alice).json()["status"] == "queued"


# --- rate limiting -----------------------------------------------------------------------------


def test_each_key_is_rate_limited_with_retry_after(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rate_limit_per_minute=6, rate_limit_burst=3)
    other = as_key(stack, new_key(stack))
    assert [stack.client.get("/jobs").status_code for _ in range(3)] == [200, 200, 200]
    limited = stack.client.get("/jobs")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 10
    assert stack.client.get("/jobs", headers=other).status_code == 200  # its own bucket
    assert stack.client.get("/health").status_code == 200
    with stack.runtime.sessions() as session:
        shared_buckets = session.execute(select(RateLimitBucket.key).order_by(RateLimitBucket.key)).scalars().all()
    # PostgreSQL keeps the buckets in the database for every API process; SQLite keeps them in this one.
    on_postgres = stack.settings.effective_database_url.startswith("postgresql")
    assert shared_buckets == (sorted(["bootstrap", str(key_id_of(other["x-api-key"]))]) if on_postgres else [])


# --- callbacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/latest",
        "https://10.0.0.7:8443/hook",
        "https://localhost/hook",
        "https://[::ffff:127.0.0.1]/hook",
    ],
)
def test_unsafe_callback_urls_are_refused_at_submit(make_stack: Callable[..., Stack], url: str) -> None:
    stack = make_stack(callback_allowed_hosts=[])
    body = {"workflow_type": "lid_only", "audio_filename": "a.wav", "callback_url": url}
    response = stack.client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert "callback_url" in response.json()["error"]["message"]
    assert stack.client.get("/jobs").json()["total"] == 0


def test_the_allow_list_admits_a_local_receiver(stack: Stack) -> None:
    body = {"workflow_type": "lid_only", "audio_filename": "a.wav", "callback_url": "http://127.0.0.1:9/hook"}
    assert stack.client.post("/jobs", json=body).status_code == 201


# --- uploads -----------------------------------------------------------------------------------


def test_an_upload_that_is_not_audio_is_refused_at_start_and_can_be_replaced(stack: Stack) -> None:
    created = stack.client.post("/jobs", json={"workflow_type": "lid_only", "audio_filename": "a.wav"}).json()
    upload(stack, created, b"this is a text file, not a recording\n" * 10)
    refused = stack.client.post(f"/jobs/{created['job_id']}/start")
    assert refused.status_code == 422
    assert refused.json()["error"] == {
        "code": "invalid_audio",
        "message": "the upload cannot be used: not an audio file",
        "details": None,
    }
    assert stack.job(uuid.UUID(created["job_id"]))["status"] == "pending_upload"

    upload(stack, created, TINY_WAV)
    assert stack.client.post(f"/jobs/{created['job_id']}/start").status_code == 202
    with stack.runtime.sessions() as session:
        job = session.get(Job, uuid.UUID(created["job_id"]))
        assert job is not None and job.audio_duration_seconds == pytest.approx(0.5, abs=0.01)


def test_audio_without_a_sample_is_refused_at_start(stack: Stack) -> None:
    """A WAV header and nothing after it: refused as the upload's fault, not failed later by LID."""
    job_id = stack.submit("lid_only", upload=silent_wav(0.0))
    refused = stack.client.post(f"/jobs/{job_id}/start")
    assert refused.status_code == 422
    assert refused.json()["error"] == {
        "code": "invalid_audio",
        "message": "the upload cannot be used: it holds no audio (0 s)",
        "details": None,
    }
    assert stack.job(job_id)["status"] == "pending_upload"


def test_audio_longer_than_the_maximum_is_refused_at_start(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(max_audio_seconds=1.0)
    job_id = stack.submit("lid_only", upload=silent_wav(1.5))
    refused = stack.client.post(f"/jobs/{job_id}/start")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "audio_too_long"
    assert "maximum is 1 s" in refused.json()["error"]["message"]
    assert stack.job(job_id)["status"] == "pending_upload"


def test_an_oversized_blob_is_refused_at_start(make_stack: Callable[..., Stack]) -> None:
    """Azure SAS URLs cannot cap the size, so the size is checked again when the job starts."""
    stack = make_stack(max_upload_bytes=1000)
    created = stack.client.post("/jobs", json={"workflow_type": "lid_only", "audio_filename": "a.wav"}).json()
    with stack.runtime.sessions() as session:
        blob = session.get(Job, uuid.UUID(created["job_id"])).audio_blob_path  # type: ignore[union-attr]
    stack.runtime.blobs.put(stack.settings.audio_container, blob, TINY_WAV)  # bypasses the PUT limit
    refused = stack.client.post(f"/jobs/{created['job_id']}/start")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "upload_too_large"


@pytest.mark.parametrize("name", ["../../etc/passwd.wav", "..\\..\\boot.ini", "/etc/shadow", "a/../../b.wav"])
def test_file_names_cannot_reach_outside_the_jobs_folder(stack: Stack, name: str) -> None:
    created = stack.client.post("/jobs", json={"workflow_type": "lid_only", "audio_filename": name}).json()
    with stack.runtime.sessions() as session:
        blob = session.get(Job, uuid.UUID(created["job_id"])).audio_blob_path  # type: ignore[union-attr]
    assert blob.startswith(f"{created['job_id']}/") and ".." not in blob and blob.count("/") == 1
    assert f"/audio-files/{created['job_id']}/" in created["upload_url"]
    too_long = stack.client.post("/jobs", json={"workflow_type": "lid_only", "audio_filename": "a" * 256})
    assert too_long.status_code == 422


# --- Entra ID tokens, with the JWKS served by a local HTTP server ------------------------------


class _Jwks(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_entra_tokens_are_verified_against_the_tenant_keys(make_stack: Callable[..., Stack]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    _Jwks.body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()
    server = HTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    issuer = "https://login.microsoftonline.com/tenant/v2.0"
    stack = make_stack(
        entra_audience="api://speechflow",
        entra_issuer=issuer,
        entra_jwks_url=f"http://127.0.0.1:{server.server_address[1]}/keys",
    )
    try:
        claims = {"iss": issuer, "aud": "api://speechflow", "exp": int(time.time()) + 300, "oid": "user-1"}
        good = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        anonymous = TestClient(stack.client.app)
        bearer = {"Authorization": f"Bearer {good}"}
        created = anonymous.post("/jobs", json={"workflow_type": "lid_only", "audio_filename": "a.wav"}, headers=bearer)
        assert created.status_code == 201
        assert anonymous.get(f"/jobs/{created.json()['job_id']}", headers=bearer).status_code == 200
        assert stack.client.get(f"/jobs/{created.json()['job_id']}").status_code == 404  # bootstrap key

        forged = jwt.encode(
            {**claims, "oid": "someone-else"},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        refused = anonymous.get("/jobs", headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"
    finally:
        server.shutdown()


# --- the keys CLI ------------------------------------------------------------------------------


def test_keys_cli_creates_lists_and_revokes(stack: Stack, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: stack.settings)
    assert cli.main(["keys", "create", "--name", "ci pipeline"]) == 0
    key = capsys.readouterr().out.strip()
    key_id = key.split("_")[1]
    assert stack.client.get("/jobs", headers={"x-api-key": key}).status_code == 200

    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "ci pipeline" in listed and "active" in listed and key not in listed

    assert cli.main(["keys", "revoke", key_id]) == 0
    assert cli.main(["keys", "revoke", key_id]) == 1
    assert stack.client.get("/jobs", headers={"x-api-key": key}).status_code == 401
    assert cli.main(["keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out


# --- secrets stay out of logs and error messages -----------------------------------------------


def test_no_key_or_secret_appears_in_logs_or_responses(
    make_stack: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    stack = make_stack()
    caplog.set_level(logging.DEBUG)
    stored = new_key(stack)
    anonymous = TestClient(stack.client.app)
    secrets = [API_KEY, stored, BOGUS_KEY, stored.split("_", 2)[2]]
    bodies: list[str] = []
    for headers in ({"x-api-key": BOGUS_KEY}, {"Authorization": f"Bearer {BOGUS_KEY}"}, {"x-api-key": stored}, {}):
        bodies.append(anonymous.get("/jobs", headers=headers).text)
        bodies.append(anonymous.post("/jobs", json={"workflow_type": "nope"}, headers=headers).text)
    job_id = stack.submit("lid_only", upload=b"not audio")
    bodies.append(stack.client.post(f"/jobs/{job_id}/start").text)
    body = {"workflow_type": "lid_only", "audio_filename": "a.wav", "callback_url": f"http://evil.test/?k={BOGUS_KEY}"}
    bodies.append(make_stack(callback_allowed_hosts=[]).client.post("/jobs", json=body).text)
    signing_key = stack.runtime.blobs.signer._key.hex()  # type: ignore[attr-defined]
    logged = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    for secret in [*secrets, signing_key]:
        assert secret not in logged
        assert all(secret not in text for text in bodies)


def test_refused_keys_are_rate_limited_per_client_address(make_stack: Callable[..., Stack]) -> None:
    """An outside probe sent 300 bad keys and got 300 × 401 (issue 20.10): refused credentials now draw on
    a bucket per client address, and once it is empty every request from there waits, a good key too."""
    stack = make_stack(rate_limit_per_minute=600, rate_limit_burst=120)
    codes = [stack.client.get("/jobs", headers={"x-api-key": f"{BOGUS_KEY}{n}"}).status_code for n in range(300)]
    assert codes.count(401) <= 20, f"{codes.count(401)} refusals answered before the limit"
    assert codes[-1] == 429
    limited = stack.client.get("/jobs", headers={"x-api-key": BOGUS_KEY})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert stack.client.get("/jobs").status_code == 429, "guessing right after the limit gains nothing"


def test_writes_through_an_upload_url_are_rate_limited(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rate_limit_per_minute=6, rate_limit_burst=3)
    body = {"workflow_type": "transcribe_only", "source_language": "fra", "audio_filename": "a.wav"}
    created = stack.client.post("/jobs", json=body).json()
    headers = {"x-ms-blob-type": "BlockBlob"}
    codes = [stack.client.put(created["upload_url"], content=TINY_WAV, headers=headers).status_code for _ in range(6)]
    assert codes[:3] == [201, 201, 201] and 503 in codes[3:], codes
    busy = stack.client.put(created["upload_url"], content=TINY_WAV, headers=headers)
    assert busy.headers["x-ms-error-code"] == "ServerBusy" and int(busy.headers["retry-after"]) >= 1
