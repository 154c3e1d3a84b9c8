"""BlobStore port: Azure Blob Storage (or Azurite) and a local folder behind one interface. Clients
upload with `PUT upload_url` and `x-ms-blob-type: BlockBlob` whichever adapter is in use."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shared.storage.azure_blob import AzureBlobStore
from shared.storage.local import LocalBlobStore

if TYPE_CHECKING:
    from shared.core.config import Settings


class BlobStore(Protocol):
    def ensure_containers(self) -> None:
        """Create the audio and results containers if they are missing."""

    def upload_url(self, container: str, blob: str, *, expires_in: int | None = None) -> tuple[str, datetime]:
        """A write-only URL for exactly this blob, expiring (15 min by default), and its expiry."""

    def read_url(self, container: str, blob: str, *, expires_in: int = 300) -> str:
        """A short-lived read-only URL for exactly this blob."""

    def exists(self, container: str, blob: str) -> bool: ...

    def size(self, container: str, blob: str) -> int:
        """Size in bytes; raises BlobNotFound."""

    def put(self, container: str, blob: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write (or overwrite) the whole blob."""

    def put_file(
        self, container: str, blob: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> None:
        """Write (or overwrite) the blob from a local file, streamed: memory stays bounded at any size."""

    def get(self, container: str, blob: str) -> bytes:
        """The whole blob; raises BlobNotFound."""

    def download_to(self, container: str, blob: str, path: Path) -> None:
        """Stream the blob to a local file without holding it in memory; raises BlobNotFound."""

    def copy(self, container: str, source: str, target: str) -> None:
        """Copy the blob `source` to `target` in the same container without the data passing through
        this process, replacing `target`; the copy is complete when this returns and `source` is left
        as it is. Raises BlobNotFound if `source` does not exist."""

    def delete(self, container: str, blob: str) -> None:
        """Remove the blob if it exists."""

    def delete_prefix(self, container: str, prefix: str) -> int:
        """Remove every blob whose name starts with `prefix` (a folder such as `{job_id}/`); returns
        how many were removed. Blobs already gone are fine, so a repeated call is harmless."""

    def folders(self, container: str) -> list[str]:
        """The top-level prefixes (`{job_id}` of `{job_id}/…`) that hold blobs in the container."""

    def ping(self) -> None:
        """Raise if the store cannot be reached."""


def make_blob_store(settings: Settings) -> BlobStore:
    """Azure Blob when a connection string or account is configured, otherwise the local folder."""
    if settings.uses_azure_blob:
        return AzureBlobStore(settings)

    return LocalBlobStore(settings)
