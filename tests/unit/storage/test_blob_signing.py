"""Signed URLs: the local adapter's signer and blob-name rules, and the Azure adapter's SAS (no I/O)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import UserDelegationKey

from shared.core.errors import ConfigurationError
from shared.storage.azure_blob import AzureBlobStore
from shared.storage.names import validate_blob_name, validate_container_name
from shared.storage.signing import CREATE, READ, UPLOAD_PERMISSIONS, WRITE, SignedUrlRejected, UrlSigner

KEY = bytes(range(32))
NOW = 1_700_000_000
EXPIRY = NOW + 900
BLOB = "job-1/audio.wav"


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(KEY)


def signed(signer: UrlSigner, *, permission: str = UPLOAD_PERMISSIONS, blob: str = BLOB) -> dict[str, Any]:
    """The query parameters of a URL, as the router hands them to verify()."""
    signature = signer.signature(permission=permission, expiry=EXPIRY, container="audio-files", blob=blob)
    return {"expiry": str(EXPIRY), "permission": permission, "signature": signature}


def verify(signer: UrlSigner, params: dict[str, Any], **overrides: Any) -> None:
    arguments = {"container": "audio-files", "blob": "job-1/audio.wav", "required": WRITE, "now": NOW}
    arguments.update(params)
    arguments.update(overrides)
    signer.verify(**arguments)


def test_a_valid_upload_signature_passes(signer: UrlSigner) -> None:
    verify(signer, signed(signer))
    verify(signer, signed(signer), required=CREATE)


def test_query_carries_expiry_permission_and_signature(signer: UrlSigner) -> None:
    query = signer.query(permission=READ, expiry=EXPIRY, container="results", blob="j/t.json")
    signature = signer.signature(permission=READ, expiry=EXPIRY, container="results", blob="j/t.json")
    assert query == f"se={EXPIRY}&sp=r&sig={signature}"
    assert len(signature) == 64
    int(signature, 16)


def test_signature_depends_on_every_signed_part_and_the_key(signer: UrlSigner) -> None:
    base = {"permission": "cw", "expiry": EXPIRY, "container": "audio-files", "blob": "a/b.wav"}
    reference = signer.signature(**base)
    variants = [
        {"permission": "r"},
        {"expiry": EXPIRY + 1},
        {"container": "results"},
        {"blob": "a/c.wav"},
    ]
    for variant in variants:
        assert signer.signature(**{**base, **variant}) != reference, variant
    assert UrlSigner(b"another key of 32 bytes........").signature(**base) != reference


def test_tampered_signature_is_refused(signer: UrlSigner) -> None:
    params = signed(signer)
    last = params["signature"][-1]
    params["signature"] = params["signature"][:-1] + ("0" if last != "0" else "1")
    with pytest.raises(SignedUrlRejected) as rejected:
        verify(signer, params)
    assert rejected.value.code == "AuthenticationFailed"


def test_widening_the_permission_breaks_the_signature(signer: UrlSigner) -> None:
    params = signed(signer, permission=READ)
    params["permission"] = "rcw"
    with pytest.raises(SignedUrlRejected, match="signature is not valid"):
        verify(signer, params)


def test_extending_the_expiry_breaks_the_signature(signer: UrlSigner) -> None:
    params = signed(signer)
    params["expiry"] = str(EXPIRY + 3600)
    with pytest.raises(SignedUrlRejected, match="signature is not valid"):
        verify(signer, params)


def test_signature_for_one_blob_does_not_open_another(signer: UrlSigner) -> None:
    with pytest.raises(SignedUrlRejected, match="signature is not valid"):
        verify(signer, signed(signer), blob="job-2/audio.wav")
    with pytest.raises(SignedUrlRejected, match="signature is not valid"):
        verify(signer, signed(signer), container="results")


def test_read_signature_cannot_write_and_upload_signature_cannot_read(signer: UrlSigner) -> None:
    with pytest.raises(SignedUrlRejected) as rejected:
        verify(signer, signed(signer, permission=READ), required=CREATE + WRITE)
    assert rejected.value.code == "AuthorizationPermissionMismatch"
    with pytest.raises(SignedUrlRejected) as rejected:
        verify(signer, signed(signer), required=READ)
    assert rejected.value.code == "AuthorizationPermissionMismatch"
    verify(signer, signed(signer, permission=READ), required=READ)


def test_create_only_signature_cannot_overwrite(signer: UrlSigner) -> None:
    with pytest.raises(SignedUrlRejected, match="needs one of 'w'"):
        verify(signer, signed(signer, permission=CREATE), required=WRITE)


def test_expired_signature_is_refused(signer: UrlSigner) -> None:
    verify(signer, signed(signer), now=EXPIRY - 1)
    with pytest.raises(SignedUrlRejected, match="expired"):
        verify(signer, signed(signer), now=EXPIRY)
    with pytest.raises(SignedUrlRejected, match="expired"):
        verify(signer, signed(signer), now=EXPIRY + 10)


@pytest.mark.parametrize(
    ("field", "value"),
    [("expiry", None), ("permission", None), ("signature", None), ("expiry", "soon"), ("expiry", "-5")],
)
def test_missing_or_malformed_query_is_refused(signer: UrlSigner, field: str, value: str | None) -> None:
    params = signed(signer)
    params[field] = value
    with pytest.raises(SignedUrlRejected) as rejected:
        verify(signer, params)
    assert rejected.value.code == "AuthenticationFailed"


def test_signature_is_accepted_in_upper_case_hex(signer: UrlSigner) -> None:
    params = signed(signer)
    params["signature"] = params["signature"].upper()
    verify(signer, params)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        UrlSigner(b"short")


@pytest.mark.parametrize(
    "name",
    [
        "job-1/audio.wav",
        "audio.wav",
        "a/b/c/d.json",
        "名前/音声 1.mp3",
        "weird:name+%20.wav",
        "..hidden/..x",
        "x" * 1024,
    ],
)
def test_ordinary_blob_names_are_accepted(name: str) -> None:
    assert validate_blob_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../escape.wav",
        "job/../../escape.wav",
        "job/..",
        "..",
        "/etc/passwd",
        "job\\..\\escape.wav",
        "nul\x00byte",
        "line\nbreak",
        "double//slash",
        "trailing/",
        "./dot",
        "x" * 1025,
    ],
)
def test_path_traversal_and_ambiguous_blob_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid blob name"):
        validate_blob_name(name)


@pytest.mark.parametrize("name", ["audio-files", "results", "abc", "a1-b2", "z" * 63])
def test_valid_container_names(name: str) -> None:
    assert validate_container_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "ab", "Audio", "audio_files", "-audio", "audio-", "a--b", "..", ".staging", "z" * 64]
)
def test_invalid_container_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid container name"):
        validate_container_name(name)


# --- Azure SAS signed with a user delegation key (no account key in production) ------------------


class FakeTokenCredential:
    """Stands in for DefaultAzureCredential; no token is ever requested because nothing is sent."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no request should reach Azure in this test")

    def close(self) -> None:
        pass


@pytest.fixture
def delegation_store(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any
) -> Iterator[tuple[AzureBlobStore, list[tuple[datetime, datetime]]]]:
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", FakeTokenCredential)
    store = AzureBlobStore(make_settings(azure_storage_account_name="speechflowprod"))
    requested: list[tuple[datetime, datetime]] = []

    def get_user_delegation_key(key_start_time: datetime, key_expiry_time: datetime) -> UserDelegationKey:
        requested.append((key_start_time, key_expiry_time))
        key = UserDelegationKey()
        key.signed_oid = "00000000-0000-0000-0000-000000000001"
        key.signed_tid = "00000000-0000-0000-0000-000000000002"
        key.signed_start = key_start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = key_expiry_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service = "b"
        key.signed_version = "2025-01-05"
        key.value = base64.b64encode(bytes(32)).decode()
        return key

    monkeypatch.setattr(store._service, "get_user_delegation_key", get_user_delegation_key)
    yield store, requested
    store.close()


def sas_query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def test_azure_upload_url_is_a_create_write_user_delegation_sas_for_one_blob(
    delegation_store: tuple[AzureBlobStore, list[tuple[datetime, datetime]]],
) -> None:
    store, requested = delegation_store
    before = datetime.now(UTC)
    url, expires_at = store.upload_url("audio-files", "job-1/talk.wav", expires_in=600)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://speechflowprod.blob.core.windows.net/audio-files/job-1/talk.wav"
    )
    query = sas_query(url)
    assert query["sp"] == "cw"
    assert query["sr"] == "b"  # this blob, not the container
    assert query["spr"] == "https"
    assert query["skoid"] == "00000000-0000-0000-0000-000000000001"  # signed by the delegation key
    assert "st" not in query
    assert datetime.strptime(query["se"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) == expires_at
    assert 600 <= (expires_at - before).total_seconds() <= 602
    assert len(requested) == 1


def test_azure_read_url_is_read_only(
    delegation_store: tuple[AzureBlobStore, list[tuple[datetime, datetime]]],
) -> None:
    store, _ = delegation_store
    assert sas_query(store.read_url("results", "job-1/TRANSCRIBE.json"))["sp"] == "r"


def test_azure_user_delegation_key_is_reused_until_near_its_expiry(
    delegation_store: tuple[AzureBlobStore, list[tuple[datetime, datetime]]],
) -> None:
    store, requested = delegation_store
    for blob in ("a.wav", "b.wav", "c.wav"):
        store.upload_url("audio-files", blob)
    store.read_url("results", "a.json")
    assert len(requested) == 1
    start, expiry = requested[0]
    assert start < datetime.now(UTC) < expiry

    # A URL that would outlive the cached key gets a fresh key that covers it.
    _, expires_at = store.upload_url("audio-files", "d.wav", expires_in=2 * 24 * 3600)
    assert len(requested) == 2
    assert requested[1][1] > expires_at

    with pytest.raises(ValueError, match="seven days"):
        store.upload_url("audio-files", "e.wav", expires_in=8 * 24 * 3600)


def test_azure_connection_string_without_account_key_cannot_sign(make_settings: Any) -> None:
    settings = make_settings(
        azure_storage_connection_string="BlobEndpoint=https://acct.blob.core.windows.net/;"
        "SharedAccessSignature=sv=2025-01-05&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig=abc"
    )
    store = AzureBlobStore(settings)
    with pytest.raises(ConfigurationError, match="no account key"):
        store.upload_url("audio-files", "a.wav")
    store.close()
