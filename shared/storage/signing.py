"""Signed blob URLs for the local-folder store: an HMAC-SHA256 signature over the permission, expiry,
container and blob, so that a URL grants exactly one operation on exactly one blob until it expires, and
the key that signs them (SIGNING_KEY, or one kept under SPEECHFLOW_HOME made on first use). The query
imitates an Azure SAS (`se`, `sp`, `sig`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from shared.core.errors import SpeechFlowError

if TYPE_CHECKING:
    from shared.core.config import Settings


READ = "r"


CREATE = "c"


WRITE = "w"


UPLOAD_PERMISSIONS = CREATE + WRITE
"""What an upload URL grants, as in an Azure SAS made with BlobSasPermissions(create=True, write=True)."""


_SIGNATURE_VERSION = "speechflow-blob-v1"


class SignedUrlRejected(SpeechFlowError):
    """The URL's signature does not allow this request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UrlSigner:
    """Signs and checks blob URLs with HMAC-SHA256 over (permission, expiry, container, blob)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        self._key = key

    def signature(self, *, permission: str, expiry: int, container: str, blob: str) -> str:
        # No part can hold a newline (names are validated, the rest are letters and digits), so
        # distinct (permission, expiry, container, blob) tuples never produce the same message.
        message = "\n".join((_SIGNATURE_VERSION, permission, str(expiry), container, blob))
        return hmac.new(self._key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def query(self, *, permission: str, expiry: int, container: str, blob: str) -> str:
        signature = self.signature(permission=permission, expiry=expiry, container=container, blob=blob)
        return f"se={expiry}&sp={permission}&sig={signature}"

    def verify(
        self,
        *,
        container: str,
        blob: str,
        required: str,
        expiry: str | None,
        permission: str | None,
        signature: str | None,
        now: float | None = None,
    ) -> None:
        """Raise SignedUrlRejected unless the query parameters sign this container/blob, are not
        expired and grant one of the permission letters in `required`."""
        if not expiry or not permission or not signature:
            raise SignedUrlRejected(
                "AuthenticationFailed", "the URL is not signed: the se, sp and sig parameters are required"
            )
        if not expiry.isdigit():
            raise SignedUrlRejected("AuthenticationFailed", "the URL's expiry (se) is not a Unix time")
        expected = self.signature(permission=permission, expiry=int(expiry), container=container, blob=blob)
        if not hmac.compare_digest(expected, signature.lower()):
            message = f"the URL's signature is not valid for {container}/{blob}"
            raise SignedUrlRejected("AuthenticationFailed", message)
        if (time.time() if now is None else now) >= int(expiry):
            expired_at = datetime.fromtimestamp(int(expiry), UTC).isoformat()
            raise SignedUrlRejected("AuthenticationFailed", f"the URL expired at {expired_at}")
        if not set(permission) & set(required):
            raise SignedUrlRejected(
                "AuthorizationPermissionMismatch",
                f"the URL grants {permission!r} but this request needs one of {required!r}",
            )


def load_signing_key(settings: Settings) -> bytes:
    """The configured signing key, or the one kept at SPEECHFLOW_HOME/signing.key, created on first use.

    Several processes (API, workers, host) may start at once: the key file is written in full under
    a temporary name, then hard-linked into place, which fails if another process won; everyone
    then reads the winner's key.
    """
    if settings.signing_key is not None:
        return settings.signing_key.get_secret_value().encode("utf-8")
    path = settings.speechflow_home / "signing.key"
    with contextlib.suppress(FileNotFoundError):
        return _read_key_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600, and the hard link keeps that mode.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing.key.")
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path} does not hold a hex signing key; delete it to get a new one") from None
    if len(key) < 16:
        raise ValueError(f"{path} holds a signing key under 16 bytes; delete it to get a new one")
    return key
