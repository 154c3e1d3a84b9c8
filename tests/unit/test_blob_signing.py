"""The local blob adapter's URL signer and blob-name rules (pure; no files, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.storage.local import (
    CREATE,
    READ,
    UPLOAD_PERMISSIONS,
    WRITE,
    SignedUrlRejected,
    UrlSigner,
    validate_blob_name,
    validate_container_name,
)

KEY = bytes(range(32))
NOW = 1_700_000_000
EXPIRY = NOW + 900


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(KEY)


def signed(
    signer: UrlSigner, *, permission: str = UPLOAD_PERMISSIONS, blob: str = "job-1/audio.wav"
) -> dict[str, Any]:
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
def test_missing_or_malformed_parameters_are_refused(
    signer: UrlSigner, field: str, value: str | None
) -> None:
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
