"""A client's own Azure Blob container, read through the list+read SAS URL it gave (`container_url` on
POST /batches): the audio blobs in it, each as a URL that carries the container's SAS, for the FETCH step
to download like any `audio_url`.

The URL has passed the fetch address policy (shared/core/netsafety.py) before it is listed here; the
listing stops at one blob past the limit, so a huge container costs one page or two, not all of it.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from shared.domain.batches import is_audio_blob

_TIMEOUT_SECONDS = 20
AZURE_BLOB_HOST_SUFFIXES = (
    ".blob.core.windows.net",
    ".blob.core.usgovcloudapi.net",
    ".blob.core.chinacloudapi.cn",
)
"""Where Azure Blob Storage accounts live (public, government and China clouds). The listing goes only
to these (or to a host FETCH_ALLOWED_HOSTS names, such as Azurite): the API itself makes this request,
so it must not be a way to reach an arbitrary server."""


def is_azure_blob_host(host: str) -> bool:
    return host.lower().rstrip(".").endswith(AZURE_BLOB_HOST_SUFFIXES)


class ContainerRefused(Exception):
    """The container cannot be listed, or holds no audio or too much; the message says why for the client
    (naming the host and container, never the SAS)."""


def audio_blob_urls(container_url: str, *, limit: int) -> list[str]:
    """The URL (with the container's SAS) of every audio blob in the container, in the listing's order
    (by name). Raises ContainerRefused when it cannot be listed, has no audio blob or more than `limit`."""
    parts = urlsplit(container_url)
    base = parts._replace(query="", fragment="").geturl().rstrip("/")
    where = f"{parts.hostname}{parts.path.rstrip('/')}"
    if not parts.query:
        raise ContainerRefused(f"container_url for {where} carries no SAS: give one with list and read permissions")
    urls: list[str] = []
    try:
        client = ContainerClient.from_container_url(
            container_url,
            connection_timeout=_TIMEOUT_SECONDS,
            read_timeout=_TIMEOUT_SECONDS,
            retry_total=1,
            # Blob listings do not redirect; a redirect could only lead somewhere the policy did not check.
            permit_redirects=False,
        )
        with client:
            for blob in client.list_blobs():
                content_type = blob.content_settings.content_type if blob.content_settings else None
                if not is_audio_blob(blob.name, content_type):
                    continue
                if len(urls) == limit:
                    raise ContainerRefused(
                        f"container {where} holds more than {limit} audio blobs; a batch takes {limit}"
                    )
                urls.append(f"{base}/{quote(blob.name, safe='/')}?{parts.query}")
    except ResourceNotFoundError:
        raise ContainerRefused(f"container {where} does not exist") from None
    except ClientAuthenticationError:
        raise ContainerRefused(
            f"container {where} refused the listing: its SAS must allow list and read, and be valid now"
        ) from None
    except HttpResponseError as error:
        if error.status_code in (401, 403):
            raise ContainerRefused(
                f"container {where} refused the listing: its SAS must allow list and read, and be valid now"
            ) from None
        raise ContainerRefused(f"container {where} could not be listed ({error.status_code})") from None
    except (ServiceRequestError, ServiceResponseError):
        raise ContainerRefused(f"container {where} could not be reached") from None
    except ValueError:
        raise ContainerRefused("container_url is not an Azure Blob container URL") from None
    if not urls:
        raise ContainerRefused(f"container {where} holds no audio blob")
    return urls
