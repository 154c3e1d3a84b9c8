"""The local-folder BlobStore: blobs are files under `SPEECHFLOW_HOME/blobs/{container}/{blob}`.

Upload and read URLs imitate Azure SAS URLs closely enough that a client cannot tell the two apart:
`PUT {url}` with `x-ms-blob-type: BlockBlob` stores the blob. They point at the API
(`/blobs/{container}/{blob}?se=…&sp=…&sig=…`, served by `functions.api.blobs`) and carry an
HMAC-SHA256 signature over the permission, expiry, container and blob, so a URL grants exactly one
operation on exactly one blob until it expires.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

from shared.errors import BlobNotFound, SpeechFlowError

if TYPE_CHECKING:
    from shared.config import Settings

READ = "r"
CREATE = "c"
WRITE = "w"
UPLOAD_PERMISSIONS = CREATE + WRITE
"""What an upload URL grants, as in an Azure SAS made with BlobSasPermissions(create=True, write=True)."""

_SIGNATURE_VERSION = "speechflow-blob-v1"
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
"""Azure's container naming rule: 3-63 lowercase letters, digits and single inner hyphens."""
_MAX_BLOB_NAME = 1024
_COPY_CHUNK = 1024 * 1024
_STAGING = ".staging"
"""Where blobs are written before they are renamed into place; not a valid container name."""


class SignedUrlRejected(SpeechFlowError):
    """The URL's signature does not allow this request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def validate_container_name(container: str) -> str:
    """Return the name if it is a valid container name; raise ValueError otherwise."""
    if not _CONTAINER_NAME.fullmatch(container):
        rule = "3-63 lowercase letters, digits and single hyphens"
        raise ValueError(f"invalid container name {container!r}: use {rule}")
    return container


def validate_blob_name(blob: str) -> str:
    """Return the name if it maps to a file inside its container folder; raise ValueError otherwise.

    Refused: empty names, absolute paths, backslashes, control characters (NUL included), empty,
    `.` or `..` segments. Two different accepted names never map to the same file.
    """
    if not blob or len(blob) > _MAX_BLOB_NAME:
        raise ValueError(f"invalid blob name {blob!r}: must be 1-{_MAX_BLOB_NAME} characters")
    if "\\" in blob or any(ord(character) < 0x20 or ord(character) == 0x7F for character in blob):
        raise ValueError(f"invalid blob name {blob!r}: backslashes and control characters are not allowed")
    if blob.startswith("/"):
        raise ValueError(f"invalid blob name {blob!r}: must not be an absolute path")
    if any(segment in ("", ".", "..") for segment in blob.split("/")):
        raise ValueError(f"invalid blob name {blob!r}: empty, '.' and '..' path segments are not allowed")
    # A drive-qualified name ("C:x") would leave the container folder on Windows.
    if Path(blob).drive or Path(blob).is_absolute():
        raise ValueError(f"invalid blob name {blob!r}: must be a relative path")
    return blob


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


class StagedBlob:
    """A blob being written: a temporary file in the store, renamed over the blob on commit."""

    def __init__(self, file: IO[bytes], temporary: Path, target: Path) -> None:
        self.file = file
        self._temporary = temporary
        self._target = target

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self._target.parent.mkdir(parents=True, exist_ok=True)
        self._temporary.replace(self._target)

    def discard(self) -> None:
        """Drop what was written unless it was committed; safe to call more than once."""
        self.file.close()
        self._temporary.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files on this machine; every write lands whole or not at all."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.root = settings.blob_root

    @cached_property
    def signer(self) -> UrlSigner:
        return UrlSigner(load_signing_key(self._settings))

    # --- URLs -----------------------------------------------------------------------------------

    def upload_url(self, container: str, blob: str, *, expires_in: int | None = None) -> tuple[str, datetime]:
        ttl = self._settings.upload_url_ttl_seconds if expires_in is None else expires_in
        return self._signed_url(container, blob, UPLOAD_PERMISSIONS, ttl)

    def read_url(self, container: str, blob: str, *, expires_in: int = 300) -> str:
        return self._signed_url(container, blob, READ, expires_in)[0]

    def _signed_url(self, container: str, blob: str, permission: str, ttl: int) -> tuple[str, datetime]:
        validate_container_name(container)
        validate_blob_name(blob)
        if ttl <= 0:
            raise ValueError("a signed URL must be valid for at least one second")
        expiry = math.ceil(time.time() + ttl)
        query = self.signer.query(permission=permission, expiry=expiry, container=container, blob=blob)
        base = self._settings.public_base_url.rstrip("/")
        url = f"{base}/blobs/{quote(container, safe='')}/{quote(blob, safe='/')}?{query}"
        return url, datetime.fromtimestamp(expiry, UTC)

    # --- paths ----------------------------------------------------------------------------------

    def path(self, container: str, blob: str) -> Path:
        """Where the blob lives (whether or not it exists); raises ValueError for an unsafe name."""
        folder = self.root / validate_container_name(container)
        path = folder / validate_blob_name(blob)
        # Belt and braces: the validated name can only stay inside the folder, but check the
        # resolved path too, so a symlink planted in the tree cannot lead outside it either.
        if not path.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"invalid blob name {blob!r}: it leaves the container folder")
        return path

    def _existing_path(self, container: str, blob: str) -> Path:
        path = self.path(container, blob)
        if not path.is_file():
            raise BlobNotFound(f"blob {container}/{blob} does not exist")
        return path

    def stage(self, container: str, blob: str) -> StagedBlob:
        """Start writing the blob; it appears only once the returned StagedBlob is committed."""
        target = self.path(container, blob)
        staging = self.root / _STAGING
        staging.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=staging, prefix="blob-")
        return StagedBlob(os.fdopen(descriptor, "wb"), Path(temporary), target)

    @contextlib.contextmanager
    def staged_write(self, container: str, blob: str) -> Iterator[IO[bytes]]:
        """A file to write the blob into; it replaces the blob only if the block exits cleanly."""
        staged = self.stage(container, blob)
        try:
            yield staged.file
            staged.commit()
        finally:
            staged.discard()

    def etag(self, container: str, blob: str) -> str:
        """An opaque quoted version tag in Azure's style; it changes on every write."""
        stat = self._existing_path(container, blob).stat()
        return f'"0x{stat.st_mtime_ns:X}{stat.st_ino:X}"'

    # --- BlobStore ------------------------------------------------------------------------------

    def ensure_containers(self) -> None:
        for container in (self._settings.audio_container, self._settings.results_container):
            (self.root / validate_container_name(container)).mkdir(parents=True, exist_ok=True)

    def exists(self, container: str, blob: str) -> bool:
        return self.path(container, blob).is_file()

    def size(self, container: str, blob: str) -> int:
        return self._existing_path(container, blob).stat().st_size

    def put(
        self,
        container: str,
        blob: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> None:
        # The folder keeps no metadata: readers get a type guessed from the name, content_type is unused.
        with self.staged_write(container, blob) as file:
            file.write(data)

    def get(self, container: str, blob: str) -> bytes:
        try:
            return self._existing_path(container, blob).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {container}/{blob} does not exist") from None

    def download_to(self, container: str, blob: str, path: Path) -> None:
        try:
            source = self._existing_path(container, blob).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {container}/{blob} does not exist") from None
        with source:
            _write_file_atomically(path, lambda target: shutil.copyfileobj(source, target, _COPY_CHUNK))

    def delete(self, container: str, blob: str) -> None:
        self.path(container, blob).unlink(missing_ok=True)

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise PermissionError(f"the blob folder {self.root} is not writable")


def _write_file_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a local file under a temporary name in its folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
        Path(temporary).replace(path)
    finally:
        Path(temporary).unlink(missing_ok=True)
