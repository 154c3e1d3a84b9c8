"""The Azure Blob Storage BlobStore (Azurite locally).

Reached with AZURE_STORAGE_CONNECTION_STRING, or with AZURE_STORAGE_ACCOUNT_NAME and
DefaultAzureCredential (managed identity on AKS, `az login` on a laptop). Upload URLs are SAS URLs
that allow create and write on exactly one blob: signed with the account key when the connection
string has one, otherwise with a user delegation key, so no account key is needed in production.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    UserDelegationKey,
    generate_blob_sas,
)

from shared.core.errors import BlobNotFound, ConfigurationError, TransientError

if TYPE_CHECKING:
    from shared.core.config import Settings

_CHUNK = 4 * 1024 * 1024
"""Downloads above this size are fetched in chunks of this size, so memory stays flat."""
_DELEGATION_KEY_LIFETIME = timedelta(days=1)
_DELEGATION_KEY_MAX_LIFETIME = timedelta(days=7)
"""Azure refuses user delegation keys valid for longer than seven days."""
_CLOCK_SKEW = timedelta(minutes=5)
_PING_CONNECT_TIMEOUT = 5.0
_COPY_WAIT_SECONDS = 600.0
"""How long a server-side copy may stay pending before it is aborted (within one account a block blob's
copy is usually done when Copy Blob answers)."""
_COPY_POLL_SECONDS = (0.05, 2.0)
"""The first and the longest pause between two looks at a pending copy."""


@contextlib.contextmanager
def _storage_errors(container: str, blob: str | None = None) -> Iterator[None]:
    """Translate SDK errors into SpeechFlow's: missing blobs, and failures worth retrying."""
    try:
        yield
    except ResourceNotFoundError:
        what = f"{container}/{blob}" if blob is not None else container
        raise BlobNotFound(f"blob {what} does not exist") from None
    except (ServiceRequestError, ServiceResponseError) as error:
        raise TransientError(f"blob storage unreachable: {error}") from error
    except HttpResponseError as error:
        if error.status_code is not None and (error.status_code >= 500 or error.status_code in (408, 429)):
            raise TransientError(f"blob storage busy ({error.status_code}): {error.reason}") from error
        raise


class AzureBlobStore:
    """Blobs in an Azure Storage account (or Azurite)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._credential: Any = None
        client_options: dict[str, Any] = {"max_single_get_size": _CHUNK, "max_chunk_get_size": _CHUNK}
        if settings.azure_storage_connection_string is not None:
            self._service = BlobServiceClient.from_connection_string(
                settings.azure_storage_connection_string.get_secret_value(), **client_options
            )
        elif settings.azure_storage_account_name:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
            self._service = BlobServiceClient(
                f"https://{settings.azure_storage_account_name}.blob.core.windows.net",
                credential=self._credential,
                **client_options,
            )
        else:
            raise ConfigurationError(
                "AzureBlobStore needs AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME"
            )
        self._account_key: str | None = getattr(self._service.credential, "account_key", None)
        self._delegation_key: UserDelegationKey | None = None
        self._delegation_key_expiry = datetime.min.replace(tzinfo=UTC)
        self._delegation_key_lock = threading.Lock()

    def close(self) -> None:
        self._service.close()
        if self._credential is not None:
            self._credential.close()

    # --- URLs -----------------------------------------------------------------------------------

    def upload_url(self, container: str, blob: str, *, expires_in: int | None = None) -> tuple[str, datetime]:
        ttl = self._settings.upload_url_ttl_seconds if expires_in is None else expires_in
        permission = BlobSasPermissions(create=True, write=True)
        return self._sas_url(container, blob, permission, ttl)

    def read_url(self, container: str, blob: str, *, expires_in: int = 300) -> str:
        return self._sas_url(container, blob, BlobSasPermissions(read=True), expires_in)[0]

    def _sas_url(
        self,
        container: str,
        blob: str,
        permission: BlobSasPermissions,
        ttl: int,
    ) -> tuple[str, datetime]:
        if ttl <= 0:
            raise ValueError("a signed URL must be valid for at least one second")
        # SAS times have whole-second precision; round up so the URL lives at least `ttl` seconds.
        expiry = (datetime.now(UTC) + timedelta(seconds=ttl)).replace(microsecond=0) + timedelta(seconds=1)
        signing: dict[str, Any]
        if self._account_key is not None:
            signing = {"account_key": self._account_key}
        else:
            signing = {"user_delegation_key": self._user_delegation_key(valid_until=expiry)}
        blob_client = self._service.get_blob_client(container, blob)
        token = generate_blob_sas(
            account_name=self._service.account_name or "",
            container_name=container,
            blob_name=blob,
            permission=permission,
            expiry=expiry,
            protocol="https" if self._service.scheme == "https" else None,
            **signing,
        )
        return f"{blob_client.url}?{token}", expiry

    def _user_delegation_key(self, *, valid_until: datetime) -> UserDelegationKey:
        """A user delegation key valid past `valid_until`; one is fetched a day at a time and reused."""
        if self._credential is None:
            raise ConfigurationError(
                "cannot sign upload URLs: the storage connection string has no account key "
                "(use one with AccountKey=…, or AZURE_STORAGE_ACCOUNT_NAME with an Azure identity)"
            )
        with self._delegation_key_lock:
            if self._delegation_key is None or self._delegation_key_expiry - _CLOCK_SKEW < valid_until:
                now = datetime.now(UTC)
                lifetime = max(_DELEGATION_KEY_LIFETIME, valid_until - now + _CLOCK_SKEW * 2)
                if lifetime > _DELEGATION_KEY_MAX_LIFETIME:
                    raise ValueError("a signed URL cannot outlive a user delegation key (seven days)")
                expiry = now + lifetime
                with _storage_errors("(account)"):
                    self._delegation_key = self._service.get_user_delegation_key(
                        key_start_time=now - _CLOCK_SKEW, key_expiry_time=expiry
                    )
                self._delegation_key_expiry = expiry
            return self._delegation_key

    # --- BlobStore ------------------------------------------------------------------------------

    def ensure_containers(self) -> None:
        for container in (self._settings.audio_container, self._settings.results_container):
            with contextlib.suppress(ResourceExistsError), _storage_errors(container):
                self._service.create_container(container)

    def exists(self, container: str, blob: str) -> bool:
        with _storage_errors(container, blob):
            return bool(self._service.get_blob_client(container, blob).exists())

    def size(self, container: str, blob: str) -> int:
        with _storage_errors(container, blob):
            return int(self._service.get_blob_client(container, blob).get_blob_properties().size)

    def put(
        self,
        container: str,
        blob: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> None:
        with _storage_errors(container, blob):
            self._service.get_blob_client(container, blob).upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            )

    def put_file(
        self, container: str, blob: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> None:
        # The SDK reads a file object in blocks (Put Block, Put Block List) above its single-put size.
        with path.open("rb") as source, _storage_errors(container, blob):
            self._service.get_blob_client(container, blob).upload_blob(
                source, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            )

    def get(self, container: str, blob: str) -> bytes:
        with _storage_errors(container, blob):
            return self._service.get_blob_client(container, blob).download_blob().readall()

    def download_to(self, container: str, blob: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed, so a reader never sees half a file.
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        temporary = Path(name)
        try:
            with os.fdopen(descriptor, "wb") as file, _storage_errors(container, blob):
                self._service.get_blob_client(container, blob).download_blob().readinto(file)
            temporary.replace(path)
        finally:
            temporary.unlink(missing_ok=True)

    def copy(self, container: str, source: str, target: str) -> None:
        # Copy Blob within the account: the service reads the source through a short read-only SAS
        # (signed as upload URLs are), so the data never passes through this process.
        source_url = self.read_url(container, source, expires_in=int(_COPY_WAIT_SECONDS) + 60)
        client = self._service.get_blob_client(container, target)
        with _storage_errors(container, source):
            started = client.start_copy_from_url(source_url)
        status, copy_id = started.get("copy_status"), str(started.get("copy_id"))
        deadline = time.monotonic() + _COPY_WAIT_SECONDS
        pause, longest = _COPY_POLL_SECONDS
        description = None
        while status == "pending":
            if time.monotonic() >= deadline:
                with contextlib.suppress(HttpResponseError):
                    client.abort_copy(copy_id)
                raise TransientError(f"the copy of {container}/{source} to {target} did not finish in time")
            time.sleep(pause)
            pause = min(pause * 2, longest)
            with _storage_errors(container, target):
                properties = client.get_blob_properties().copy
            if properties.id != copy_id:
                raise TransientError(f"another copy to {container}/{target} replaced this one")
            status, description = properties.status, properties.status_description
        if status != "success":
            raise TransientError(f"the copy of {container}/{source} to {target} ended {status}: {description}")

    def delete(self, container: str, blob: str) -> None:
        with contextlib.suppress(BlobNotFound), _storage_errors(container, blob):
            self._service.get_blob_client(container, blob).delete_blob(delete_snapshots="include")

    def delete_prefix(self, container: str, prefix: str) -> int:
        removed = 0
        with contextlib.suppress(BlobNotFound), _storage_errors(container):  # no container: nothing to delete
            client = self._service.get_container_client(container)
            for item in client.list_blobs(name_starts_with=prefix):
                self.delete(container, item.name)
                removed += 1
        return removed

    def folders(self, container: str) -> list[str]:
        names: list[str] = []
        with contextlib.suppress(BlobNotFound), _storage_errors(container):
            for item in self._service.get_container_client(container).walk_blobs(delimiter="/"):
                if item.name.endswith("/"):  # a prefix, not a blob at the top level
                    names.append(item.name.rstrip("/"))
        return names

    def ping(self) -> None:
        # One small request that needs only data-plane rights (no account-level read). No retries
        # and a short connect timeout: a health check must answer now, not after the SDK's backoff.
        container = self._settings.audio_container
        with _storage_errors(container):
            self._service.get_container_client(container).exists(
                retry_total=0, connection_timeout=_PING_CONNECT_TIMEOUT
            )
