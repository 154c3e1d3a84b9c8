"""FETCH: the audio of a job created with `audio_url`, streamed into the audio container where an upload
would have gone, then probed exactly as an upload is before it is queued (size, audio, duration).

The URL is chosen by the client and the request is made by the server, so it follows the outbound URL
policy of shared/core/netsafety.py (https, public addresses only, FETCH_ALLOWED_HOSTS for development), and
more strictly than a callback does: redirects are followed here, one hop at a time, each hop checked
again, and the connection goes to the very address that was checked (the host name travels in the Host
header and TLS SNI, and the certificate is verified for that name), so a second DNS answer cannot send
the request to an internal address (DNS rebinding).

A signed URL (an Azure SAS) carries its secret in the query: logs, step details and error messages name
the host only.

Failures: 5xx, 408, 429, timeouts and dropped connections are transient (the step is retried with
backoff); 401/403/404/410, other 4xx, too many redirects, a refused address, a file over
MAX_UPLOAD_BYTES, one that is not audio or is longer than MAX_AUDIO_SECONDS, and a one-channel file for
channels=split are permanent, with the reason on the step.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import httpx

from shared.core.errors import Cancelled, PermanentError, ShutdownRequested, TransientError
from shared.core.netsafety import Resolver, UnsafeFetchUrl, check_fetch_url, system_resolver
from shared.domain.options import JobOptions
from shared.domain.registry import StepSpec
from shared.domain.results import FetchedAudio
from shared.jobs.intake import accept_audio

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.steps.context import StepContext

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""Client-error statuses that mean "not now" rather than "never"; every 5xx is retried too."""
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
"""A server silent for a minute in the middle of a file is a transient failure, retried later."""
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Download:
    """What a download brought: where from (the host only), how much, of which declared type."""

    host: str
    size_bytes: int
    content_type: str | None
    redirects: int


def url_host(url: str | httpx.URL) -> str:
    """The host of a URL: all that logs and messages ever say about it."""
    try:
        return (urlsplit(str(url)).hostname or "?").rstrip(".")
    except ValueError:
        return "?"


def filename_from_url(url: str) -> str:
    """A file name for the job, from the last segment of the URL's path (never from its query)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return "audio"
    return PurePosixPath(unquote(path)).name or "audio"


def download(
    url: str,
    destination: Path,
    *,
    settings: Settings,
    resolver: Resolver = system_resolver,
    transport: httpx.BaseTransport | None = None,
    checkpoint: Callable[[], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Download:
    """GET `url` into `destination`, following at most MAX_REDIRECTS redirects, each hop checked by the
    URL policy and pinned to the address it checked. `checkpoint` is called between chunks (it raises to
    stop); PermanentError and TransientError say why a download failed."""
    try:
        current = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise PermanentError(f"audio_url is not a valid URL: {error}") from None
    first_host = url_host(current)
    for redirects in range(MAX_REDIRECTS + 1):
        host = url_host(current)
        try:
            addresses = check_fetch_url(str(current), settings, resolver=resolver)
        except UnsafeFetchUrl as refused:
            where = f"a redirect from {first_host}" if redirects else "audio_url"
            raise PermanentError(f"{where} was refused: {refused}") from None
        with httpx.Client(transport=transport, timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            # trust_env=False: a proxy from the environment would make the connection, not the pinned address.
            request = _request(client, current, addresses[0] if addresses else None)
            with _transport_errors(host):
                response = client.send(request, stream=True)
                try:
                    if response.status_code in REDIRECT_STATUSES:
                        location = response.headers.get("location")
                        if not location:
                            raise PermanentError(f"{host} answered {response.status_code} without a Location")
                        current = current.join(location)
                        continue
                    _check_status(response, host)
                    size = _save(
                        response,
                        destination,
                        host=host,
                        limit=settings.max_upload_bytes,
                        checkpoint=checkpoint,
                        on_progress=on_progress,
                    )
                finally:
                    response.close()
            content_type = response.headers.get("content-type")
            return Download(host=first_host, size_bytes=size, content_type=content_type, redirects=redirects)
    raise PermanentError(f"audio_url at {first_host} redirected more than {MAX_REDIRECTS} times")


def _request(client: httpx.Client, url: httpx.URL, address: str | None) -> httpx.Request:
    """The GET for one hop; with `address`, sent to that address under the URL's own name."""
    # identity: the file as stored, so that the size limit counts what is written.
    headers = {"accept-encoding": "identity", "user-agent": "SpeechFlow-fetch/1"}
    if address is None:  # an allow-listed host (development): resolved by the client
        return client.build_request("GET", url, headers=headers)
    headers["host"] = url.netloc.decode("ascii")
    request = client.build_request("GET", url.copy_with(host=address), headers=headers)
    if url.scheme == "https":
        # TLS is negotiated, and the certificate verified, for the name, not the address.
        request.extensions["sni_hostname"] = url.raw_host.decode("ascii")
    return request


@contextmanager
def _transport_errors(host: str) -> Iterator[None]:
    """Timeouts and broken connections are transient; the message names the host only (httpx's own
    messages do not carry the URL)."""
    try:
        yield
    except httpx.TimeoutException as error:
        raise TransientError(f"{host} did not answer in time ({type(error).__name__})") from None
    except httpx.TransportError as error:
        detail = str(error)[:200] or type(error).__name__
        raise TransientError(f"could not fetch the audio from {host}: {detail}") from None
    except httpx.DecodingError:
        raise PermanentError(f"{host} sent a body that cannot be decoded") from None


def _check_status(response: httpx.Response, host: str) -> None:
    status = response.status_code
    said = f"{status} {response.reason_phrase}".strip()
    if status == 200:
        return
    if status in (401, 403):
        raise PermanentError(f"{host} refused access to the audio ({said}): is the URL's signature valid and current?")
    if status in (404, 410):
        raise PermanentError(f"{host} has no audio at that URL ({said})")
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise TransientError(f"{host} answered {said}")
    raise PermanentError(f"{host} answered {said} instead of the audio")


def _save(
    response: httpx.Response,
    destination: Path,
    *,
    host: str,
    limit: int,
    checkpoint: Callable[[], None] | None,
    on_progress: Callable[[float], None] | None,
) -> int:
    too_large = f"the audio at {host} is larger than the maximum of {limit} bytes"
    declared_text = response.headers.get("content-length", "")
    declared = int(declared_text) if declared_text.isdigit() else None
    if declared is not None and declared > limit:
        raise PermanentError(f"{too_large} ({declared} bytes)")
    written = 0
    with destination.open("wb") as file:
        for chunk in response.iter_bytes(CHUNK_BYTES):
            written += len(chunk)
            if written > limit:
                raise PermanentError(too_large)
            file.write(chunk)
            if checkpoint is not None:
                checkpoint()
            if on_progress is not None and declared:
                on_progress(0.9 * written / declared)
    return written


def _checkpoint(step: StepContext) -> Callable[[], None]:
    def check() -> None:
        if step.shutting_down:
            raise ShutdownRequested("the worker is shutting down")
        if step.should_stop():
            raise Cancelled("the job was cancelled while its audio was fetched")

    return check


def process(step: StepContext) -> FetchedAudio:
    options = JobOptions.of(step.job.options)
    url, blob = options.audio_url, step.job.audio_blob_path
    if not url or not blob:
        raise PermanentError("the job has no audio_url to fetch")
    host = url_host(url)
    log.info("fetching audio from %s", host, extra={"action": "fetch_started", "url_host": host})
    suffix = Path(step.job.audio_filename).suffix[:16]
    with tempfile.TemporaryDirectory(prefix="speechflow-fetch-") as folder:
        path = Path(folder) / f"audio{suffix}"
        fetched = download(
            url, path, settings=step.settings, checkpoint=_checkpoint(step), on_progress=step.report_progress
        )
        accepted = accept_audio(
            path,
            settings=step.settings,
            options=options,
            unusable=f"the file at {host} is not usable audio",
            lasting=f"the audio at {host} lasts",
            holding=f"the audio at {host} has",
        )
        info = accepted.info
        step.runtime.blobs.put_file(
            step.settings.audio_container, blob, path, content_type=fetched.content_type or "application/octet-stream"
        )
    step.job_updates.update(accepted.job_updates(step.job.options))
    result = FetchedAudio(
        url_host=host,
        size_bytes=fetched.size_bytes,
        content_type=fetched.content_type,
        duration=info.duration_seconds,
        channels=info.channels,
        sample_rate=info.sample_rate,
        redirects=fetched.redirects,
    )
    step.details.update(result.model_dump(exclude_none=True))
    log.info(
        "audio fetched from %s: %d bytes, %.1f s",
        host,
        fetched.size_bytes,
        info.duration_seconds,
        extra={"action": "fetch_completed", "url_host": host},
    )
    return result


SPEC = StepSpec(
    name="FETCH",
    title="Audio download",
    queue="fetch-jobs",
    component="fetch",
    result=FetchedAudio,
    inputs=("audio_url",),
    process=process,
)
