"""One contract for every BlobStore: the local folder (its URLs served by the API's blob router over
real HTTP) and Azure Blob Storage (Azurite). A client only ever sees the upload URL: plain HTTP, or
azure-storage-blob's BlobClient, which uploads in blocks (Put Block, Put Block List) above 64 MiB."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobBlock, BlobClient, BlockState
from fastapi import FastAPI
from fastapi.testclient import TestClient

from functions.api.blobs import make_blob_router
from shared.core.config import Settings
from shared.core.errors import BlobNotFound, TransientError
from shared.storage import BlobStore, make_blob_store
from shared.storage.azure_blob import AzureBlobStore
from shared.storage.blocks import UNCOMMITTED_BLOCK_TTL_SECONDS
from shared.storage.local import LocalBlobStore
from shared.storage.signing import load_signing_key
from tests.support.azurite import azurite_connection_string  # noqa: F401
from tests.support.blob_server import free_port, serve_blobs

BLOCK_BLOB = {"x-ms-blob-type": "BlockBlob"}


@dataclass
class Backend:
    name: str
    settings: Settings
    store: BlobStore
    http: httpx.Client
    """What a client uses to call the URLs the store hands out."""

    @property
    def container(self) -> str:
        return self.settings.audio_container


def local_client(settings: Settings, store: LocalBlobStore) -> TestClient:
    """The API's blob routes, reached in-process at whatever host the signed URLs name."""
    app = FastAPI()
    app.include_router(make_blob_router(settings, store))
    return TestClient(app)


@pytest.fixture(params=["local", pytest.param("azurite", marks=pytest.mark.azurite)])
def backend(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Iterator[Backend]:
    # Azurite lives for the whole session: separate containers keep the tests apart.
    suffix = uuid.uuid4().hex[:12]
    names = {"audio_container": f"audio-{suffix}", "results_container": f"results-{suffix}"}
    with ExitStack() as stack:
        if request.param == "local":
            port = free_port()
            settings = make_settings(public_base_url=f"http://127.0.0.1:{port}", **names)
            store: BlobStore = LocalBlobStore(settings)
            # The API process has its own store object: nothing is shared with the test but the folder.
            stack.enter_context(serve_blobs(settings, LocalBlobStore(settings), port))
        else:
            connection_string = request.getfixturevalue("azurite_connection_string")
            settings = make_settings(azure_storage_connection_string=connection_string, **names)
            store = AzureBlobStore(settings)
            stack.callback(store.close)
        http = stack.enter_context(httpx.Client(timeout=30))
        assert type(make_blob_store(settings)) is type(store)
        store.ensure_containers()
        yield Backend(request.param, settings, store, http)


def sibling_url(url: str, blob: str) -> str:
    """The same URL (query and signature included) pointed at another blob of the container."""
    parts = urlsplit(url)
    container_path = parts.path.rsplit("/", 2)[0]
    return urlunsplit(parts._replace(path=f"{container_path}/{blob}"))


# --- the store's own operations -----------------------------------------------------------------


def test_put_get_exists_size_delete(backend: Backend) -> None:
    store, container = backend.store, backend.container
    assert not store.exists(container, "job-1/audio.wav")

    store.put(container, "job-1/audio.wav", b"RIFF....WAVE", content_type="audio/wav")
    assert store.exists(container, "job-1/audio.wav")
    assert store.size(container, "job-1/audio.wav") == 12
    assert store.get(container, "job-1/audio.wav") == b"RIFF....WAVE"

    store.put(container, "job-1/audio.wav", b"second")
    assert store.get(container, "job-1/audio.wav") == b"second"
    assert store.size(container, "job-1/audio.wav") == 6

    store.delete(container, "job-1/audio.wav")
    assert not store.exists(container, "job-1/audio.wav")
    store.delete(container, "job-1/audio.wav")  # deleting what is gone is not an error


def test_results_container_is_separate(backend: Backend) -> None:
    results = backend.settings.results_container
    backend.store.put(results, "job-1/TRANSCRIBE.json", b'{"text": "hello"}', content_type="application/json")
    assert backend.store.get(results, "job-1/TRANSCRIBE.json") == b'{"text": "hello"}'
    assert not backend.store.exists(backend.container, "job-1/TRANSCRIBE.json")


def test_empty_blob(backend: Backend) -> None:
    backend.store.put(backend.container, "empty.bin", b"")
    assert backend.store.exists(backend.container, "empty.bin")
    assert backend.store.size(backend.container, "empty.bin") == 0
    assert backend.store.get(backend.container, "empty.bin") == b""


def test_missing_blob_raises_blob_not_found(backend: Backend, tmp_path: Path) -> None:
    store, container = backend.store, backend.container
    with pytest.raises(BlobNotFound):
        store.get(container, "nope/missing.wav")
    with pytest.raises(BlobNotFound):
        store.size(container, "nope/missing.wav")
    target = tmp_path / "out" / "missing.wav"
    with pytest.raises(BlobNotFound):
        store.download_to(container, "nope/missing.wav", target)
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_download_to_streams_a_multi_megabyte_blob(backend: Backend, tmp_path: Path) -> None:
    # Larger than the Azure adapter's 4 MiB chunk, so its download really goes chunk by chunk.
    data = os.urandom(9 * 1024 * 1024 + 123)
    backend.store.put(backend.container, "big/audio.flac", data)
    target = tmp_path / "nested" / "dir" / "audio.flac"

    backend.store.download_to(backend.container, "big/audio.flac", target)

    assert target.stat().st_size == len(data)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert [p.name for p in target.parent.iterdir()] == ["audio.flac"]  # no temporary file left


def test_download_to_replaces_an_existing_file(backend: Backend, tmp_path: Path) -> None:
    target = tmp_path / "audio.wav"
    target.write_bytes(b"old content that is longer")
    backend.store.put(backend.container, "a.wav", b"new")
    backend.store.download_to(backend.container, "a.wav", target)
    assert target.read_bytes() == b"new"


def test_ensure_containers_is_idempotent_and_ping_passes(backend: Backend) -> None:
    backend.store.put(backend.container, "kept.txt", b"kept")
    backend.store.ensure_containers()
    backend.store.ping()
    assert backend.store.get(backend.container, "kept.txt") == b"kept"


def test_copy_is_server_side_complete_and_independent_of_its_source(backend: Backend) -> None:
    """What a job start relies on (shared/jobs/uploads.py): the copy is there when copy() returns, a later
    write through the source's upload URL leaves it as it was, and deleting the source keeps it."""
    store, container = backend.store, backend.container
    data = os.urandom(3 * 1024 * 1024 + 17)
    url, _ = store.upload_url(container, "job-c/clip.wav")
    assert backend.http.put(url, content=data, headers=BLOCK_BLOB).status_code == 201
    store.put(container, "job-c/input/clip.wav", b"an older copy")

    store.copy(container, "job-c/clip.wav", "job-c/input/clip.wav")

    assert store.get(container, "job-c/input/clip.wav") == data, "copy() replaces the target"
    assert backend.http.put(url, content=b"written after the copy", headers=BLOCK_BLOB).status_code == 201
    assert store.get(container, "job-c/clip.wav") == b"written after the copy"
    assert store.get(container, "job-c/input/clip.wav") == data, "a write to the source changed the copy"
    store.delete(container, "job-c/clip.wav")
    assert store.get(container, "job-c/input/clip.wav") == data
    # The upload URL names one blob: it cannot write the copy.
    refused = backend.http.put(sibling_url(url, "job-c/input/clip.wav"), content=b"x", headers=BLOCK_BLOB)
    assert refused.status_code == 403, refused.text
    assert store.get(container, "job-c/input/clip.wav") == data
    with pytest.raises(BlobNotFound):
        store.copy(container, "job-c/missing.wav", "job-c/input/missing.wav")
    assert not store.exists(container, "job-c/input/missing.wav")


# --- what a client does with the URLs -----------------------------------------------------------


def test_client_uploads_with_a_plain_put(backend: Backend) -> None:
    before = datetime.now(UTC)
    url, expires_at = backend.store.upload_url(backend.container, "job-7/meeting recording.wav")
    ttl = backend.settings.upload_url_ttl_seconds
    assert ttl - 5 <= (expires_at - before).total_seconds() <= ttl + 5
    data = os.urandom(300_000)

    response = backend.http.put(url, content=data, headers=BLOCK_BLOB)

    assert response.status_code == 201, response.text
    assert response.headers["etag"]
    assert backend.store.exists(backend.container, "job-7/meeting recording.wav")
    assert backend.store.get(backend.container, "job-7/meeting recording.wav") == data


def test_client_uploads_a_streamed_body(backend: Backend) -> None:
    url, _ = backend.store.upload_url(backend.container, "streamed.wav")
    chunks = [os.urandom(256 * 1024) for _ in range(6)]

    response = backend.http.put(
        url, content=iter(chunks), headers={**BLOCK_BLOB, "content-length": str(6 * 256 * 1024)}
    )

    assert response.status_code == 201, response.text
    assert backend.store.get(backend.container, "streamed.wav") == b"".join(chunks)


def test_upload_url_may_overwrite_its_blob(backend: Backend) -> None:
    url, _ = backend.store.upload_url(backend.container, "retry.wav")
    assert backend.http.put(url, content=b"first try", headers=BLOCK_BLOB).status_code == 201
    assert backend.http.put(url, content=b"second try", headers=BLOCK_BLOB).status_code == 201
    assert backend.store.get(backend.container, "retry.wav") == b"second try"


def test_upload_needs_the_block_blob_header(backend: Backend) -> None:
    url, _ = backend.store.upload_url(backend.container, "no-header.wav")
    response = backend.http.put(url, content=b"data")
    assert response.status_code == 400
    assert not backend.store.exists(backend.container, "no-header.wav")


def test_upload_url_is_write_only(backend: Backend) -> None:
    url, _ = backend.store.upload_url(backend.container, "secret.wav")
    assert backend.http.put(url, content=b"private audio", headers=BLOCK_BLOB).status_code == 201

    response = backend.http.get(url)

    assert response.status_code == 403
    assert b"private audio" not in response.content


def test_upload_url_is_for_one_blob_only(backend: Backend) -> None:
    url, _ = backend.store.upload_url(backend.container, "job-1/audio.wav")
    backend.store.put(backend.container, "job-2/audio.wav", b"someone else's")

    for other in ("job-1/other.wav", "job-2/audio.wav", "audio.wav"):
        response = backend.http.put(sibling_url(url, other), content=b"overwrite", headers=BLOCK_BLOB)
        assert response.status_code == 403, other

    assert not backend.store.exists(backend.container, "job-1/other.wav")
    assert not backend.store.exists(backend.container, "audio.wav")
    assert backend.store.get(backend.container, "job-2/audio.wav") == b"someone else's"


def test_upload_url_expires(backend: Backend) -> None:
    url, expires_at = backend.store.upload_url(backend.container, "late.wav", expires_in=1)
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 1.1)

    response = backend.http.put(url, content=b"too late", headers=BLOCK_BLOB)

    assert response.status_code == 403
    assert not backend.store.exists(backend.container, "late.wav")


def test_read_url_reads_but_cannot_write(backend: Backend) -> None:
    data = os.urandom(70_000)
    backend.store.put(backend.container, "job-3/audio.wav", data)
    url = backend.store.read_url(backend.container, "job-3/audio.wav")

    response = backend.http.get(url)
    assert response.status_code == 200
    assert response.content == data

    refused = backend.http.put(url, content=b"replaced", headers=BLOCK_BLOB)
    assert refused.status_code == 403
    assert backend.store.get(backend.container, "job-3/audio.wav") == data


def test_read_url_of_a_missing_blob_is_404(backend: Backend) -> None:
    url = backend.store.read_url(backend.container, "never-uploaded.wav")
    assert backend.http.get(url).status_code == 404


def test_read_url_expires(backend: Backend) -> None:
    backend.store.put(backend.container, "short.txt", b"short-lived")
    url = backend.store.read_url(backend.container, "short.txt", expires_in=1)
    assert backend.http.get(url).status_code == 200
    time.sleep(2.2)
    assert backend.http.get(url).status_code == 403


# --- what azure-storage-blob does with the URLs: Put Blob, or blocks ------------------------------


def sdk_client(url: str, **options: object) -> BlobClient:
    """The SDK as a client holding only the URL; no retries, so a refusal surfaces at once."""
    return BlobClient.from_blob_url(url, retry_total=0, **options)


def write_random_file(path: Path, size: int) -> str:
    """A file of `size` random bytes, written a chunk at a time; returns its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * 1024 * 1024))
            digest.update(chunk)
            file.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def stored_sha256(backend: Backend, blob: str, tmp_path: Path) -> str:
    copy = tmp_path / "downloaded"
    backend.store.download_to(backend.container, blob, copy)
    digest = hashlib.sha256()
    with copy.open("rb") as file:
        while chunk := file.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_sdk_default_upload_of_a_file_over_64_mib(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "long-meeting.wav"
    expected = write_random_file(source, 64 * 1024 * 1024 + 123_457)
    url, _ = backend.store.upload_url(backend.container, "job-9/long-meeting.wav")

    with source.open("rb") as data:
        result = sdk_client(url).upload_blob(data)

    assert result["etag"]
    assert stored_sha256(backend, "job-9/long-meeting.wav", tmp_path) == expected
    # Above max_single_put_size (64 MiB) the SDK switched to blocks: the blob has a block list.
    reader = sdk_client(backend.store.read_url(backend.container, "job-9/long-meeting.wav"))
    committed, uncommitted = reader.get_block_list("all")
    assert len(committed) > 1
    assert sum(block.size for block in committed) == source.stat().st_size
    assert uncommitted == []


def test_sdk_uploads_in_small_blocks(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "clip.wav"
    expected = write_random_file(source, 3 * 1024 * 1024 + 17)
    url, _ = backend.store.upload_url(backend.container, "job-4/clip.wav")
    client = sdk_client(url, max_single_put_size=1024 * 1024, max_block_size=512 * 1024)

    with source.open("rb") as data:
        client.upload_blob(data, max_concurrency=3)

    assert stored_sha256(backend, "job-4/clip.wav", tmp_path) == expected
    committed, _ = sdk_client(backend.store.read_url(backend.container, "job-4/clip.wav")).get_block_list()
    assert [block.size for block in committed] == [512 * 1024] * 6 + [17]


def test_sdk_block_upload_with_content_md5(backend: Backend) -> None:
    # validate_content sends Content-MD5 with every block and checks the one each response returns.
    data = os.urandom(2 * 1024 * 1024 + 5)
    url, _ = backend.store.upload_url(backend.container, "checked.wav")
    client = sdk_client(url, max_single_put_size=1024 * 1024, max_block_size=1024 * 1024)

    client.upload_blob(data, validate_content=True)

    assert backend.store.get(backend.container, "checked.wav") == data


def test_sdk_lists_stages_and_commits_blocks(backend: Backend) -> None:
    blob = "job-5/pieces.wav"
    writer = sdk_client(backend.store.upload_url(backend.container, blob)[0])
    reader = sdk_client(backend.store.read_url(backend.container, blob))
    pieces = {"block-a": b"A" * 1000, "block-b": b"B" * 2000, "block-c": b"C" * 3000}
    for block_id, data in pieces.items():
        writer.stage_block(block_id, data)

    committed, uncommitted = reader.get_block_list("uncommitted")
    assert committed == []
    assert [(block.id, block.size) for block in uncommitted] == [
        ("block-a", 1000),
        ("block-b", 2000),
        ("block-c", 3000),
    ]

    writer.commit_block_list(["block-c", "block-a"])
    assert backend.store.get(backend.container, blob) == b"C" * 3000 + b"A" * 1000
    committed, uncommitted = reader.get_block_list("all")
    assert [(block.id, block.size) for block in committed] == [("block-c", 3000), ("block-a", 1000)]
    assert uncommitted == []  # the block left out of the list is discarded with the commit

    # A later list may reuse committed blocks alongside new ones.
    writer.stage_block("block-d", b"D" * 10)
    writer.commit_block_list(
        [BlobBlock("block-a", BlockState.COMMITTED), BlobBlock("block-d", BlockState.UNCOMMITTED), "block-c"]
    )
    assert backend.store.get(backend.container, blob) == b"A" * 1000 + b"D" * 10 + b"C" * 3000


def test_sdk_commit_of_an_unknown_block_is_refused(backend: Backend) -> None:
    backend.store.put(backend.container, "kept.wav", b"the original")
    writer = sdk_client(backend.store.upload_url(backend.container, "kept.wav")[0])
    writer.stage_block("block-1", b"new data")

    with pytest.raises(HttpResponseError) as refused:
        writer.commit_block_list(["block-1", "block-2"])

    assert refused.value.status_code == 400
    assert refused.value.error_code == "InvalidBlockList"
    assert backend.store.get(backend.container, "kept.wav") == b"the original"


def test_sdk_does_not_overwrite_unless_asked(backend: Backend) -> None:
    backend.store.put(backend.container, "taken.wav", b"first")
    url, _ = backend.store.upload_url(backend.container, "taken.wav")
    small_blocks = {"max_single_put_size": 1024, "max_block_size": 1024}
    for options in ({}, small_blocks):  # Put Blob, then Put Block List: both carry If-None-Match: *
        before = backend.store.get(backend.container, "taken.wav")
        with pytest.raises(ResourceExistsError):
            sdk_client(url, **options).upload_blob(os.urandom(3000))
        assert backend.store.get(backend.container, "taken.wav") == before
        replacement = os.urandom(3000)
        sdk_client(url, **options).upload_blob(replacement, overwrite=True)
        assert backend.store.get(backend.container, "taken.wav") == replacement


def test_upload_url_cannot_list_blocks(backend: Backend) -> None:
    url, _ = backend.store.upload_url(backend.container, "listed.wav")
    writer = sdk_client(url)
    writer.stage_block("block-1", b"x")

    with pytest.raises(HttpResponseError) as refused:
        writer.get_block_list("all")

    assert refused.value.status_code == 403
    assert refused.value.error_code == "AuthorizationPermissionMismatch"


def test_block_requests_need_a_valid_unexpired_signature(backend: Backend) -> None:
    url, expires_at = backend.store.upload_url(backend.container, "late-blocks.wav", expires_in=2)
    sdk_client(url).stage_block("block-1", b"in time")
    signature = url.split("sig=")[1].split("&")[0]
    tampered = url.replace(signature, signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB"))

    with pytest.raises(HttpResponseError) as wrong:
        sdk_client(tampered).stage_block("block-2", b"forged")
    assert wrong.value.status_code == 403

    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 1.1)
    for attempt in (
        lambda: sdk_client(url).stage_block("block-3", b"too late"),
        lambda: sdk_client(url).commit_block_list(["block-1"]),
    ):
        with pytest.raises(HttpResponseError) as late:
            attempt()
        assert late.value.status_code == 403
    assert not backend.store.exists(backend.container, "late-blocks.wav")


def test_block_id_must_be_base64(backend: Backend) -> None:
    url, _ = backend.store.upload_url(backend.container, "bad-id.wav")
    headers = {"x-ms-version": "2025-01-05"}

    response = backend.http.put(f"{url}&comp=block&blockid=not%20base64!", content=b"x", headers=headers)

    assert response.status_code == 400
    assert response.headers["x-ms-error-code"] == "InvalidQueryParameterValue"
    assert b"<Code>InvalidQueryParameterValue</Code>" in response.content
    valid = quote(base64.b64encode(b"block-1").decode(), safe="")
    accepted = backend.http.put(f"{url}&comp=block&blockid={valid}", content=b"x", headers=headers)
    assert accepted.status_code == 201


# --- the local adapter only: its router, files and signing key ----------------------------------


@pytest.fixture
def local(make_settings: Callable[..., Settings]) -> Iterator[tuple[LocalBlobStore, TestClient]]:
    settings = make_settings(max_upload_bytes=1000)
    store = LocalBlobStore(settings)
    store.ensure_containers()
    with local_client(settings, store) as client:
        yield store, client


def test_local_errors_have_the_api_shape(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "a.wav")
    response = client.put(url.replace("sig=", "sig=0"), content=b"x", headers=BLOCK_BLOB)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "AuthenticationFailed"
    assert "signature" in error["message"]
    assert response.headers["x-ms-error-code"] == "AuthenticationFailed"

    unsigned = client.put("/blobs/audio-files/a.wav", content=b"x", headers=BLOCK_BLOB)
    assert unsigned.status_code == 403
    assert "not signed" in unsigned.json()["error"]["message"]


def test_local_upload_over_the_size_limit_is_413(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "big.wav")

    declared = client.put(url, content=b"x" * 1001, headers=BLOCK_BLOB)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "RequestBodyTooLarge"

    # A body that under-declares its length (or declares none) is cut off while it streams.
    chunks = iter([b"x" * 600, b"x" * 600])
    streamed = client.put(url, content=chunks, headers=BLOCK_BLOB)
    assert streamed.status_code == 413

    assert not store.exists("audio-files", "big.wav")
    assert list((store.root / ".staging").iterdir()) == []
    assert client.put(url, content=b"x" * 1000, headers=BLOCK_BLOB).status_code == 201


def test_local_upload_refuses_other_blob_types(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "a.wav")
    response = client.put(url, content=b"x", headers={"x-ms-blob-type": "AppendBlob"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidHeaderValue"
    missing = client.put(url, content=b"x")
    assert missing.json()["error"]["code"] == "MissingRequiredHeader"


def test_local_get_returns_the_etag_of_the_put(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "tagged.wav")
    put = client.put(url, content=b"audio", headers=BLOCK_BLOB)
    got = client.get(store.read_url("audio-files", "tagged.wav"))
    assert got.headers["etag"] == put.headers["etag"]
    assert got.headers["content-type"].startswith("audio/")
    again = client.put(url, content=b"audio 2", headers=BLOCK_BLOB)
    assert again.headers["etag"] != put.headers["etag"]


def test_local_router_refuses_unsafe_names(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    response = client.put("/blobs/audio-files/a%5C..%5Cescape.wav?se=1&sp=cw&sig=00", headers=BLOCK_BLOB)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidResourceName"
    with pytest.raises(ValueError, match="invalid blob name"):
        store.upload_url("audio-files", "../../signing.key")
    with pytest.raises(ValueError, match="invalid blob name"):
        store.put("audio-files", "../outside", b"x")
    assert not (store.root / "outside").exists()


def test_local_store_does_not_follow_symlinks_out_of_the_container(
    local: tuple[LocalBlobStore, TestClient], tmp_path: Path
) -> None:
    store, _ = local
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "audio-files" / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="leaves the container"):
        store.put("audio-files", "link/planted.txt", b"x")
    assert list(outside.iterdir()) == []


def test_local_put_is_all_or_nothing(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, _ = local
    store.put("audio-files", "a.wav", b"complete original")

    with pytest.raises(RuntimeError), store.staged_write("audio-files", "a.wav") as file:
        file.write(b"half a new ver")
        raise RuntimeError("the writer crashed")

    assert store.get("audio-files", "a.wav") == b"complete original"
    assert list((store.root / ".staging").iterdir()) == []


def test_blob_router_serves_only_the_local_store(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        azure_storage_connection_string="DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:1/a;"
    )
    store = AzureBlobStore(settings)
    with pytest.raises(TypeError, match="local blob folder"):
        make_blob_router(settings, store)
    store.close()


def test_unreachable_azure_storage_fails_ping_at_once_as_transient(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        azure_storage_connection_string="DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:1/a;"
    )
    store = AzureBlobStore(settings)
    started = time.monotonic()
    with pytest.raises(TransientError, match="unreachable"):
        store.ping()
    assert time.monotonic() - started < 5
    store.close()


def test_generated_signing_key_is_private_shared_and_stable(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    # Many processes may start at once; every one of them must end up with the same key.
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: load_signing_key(settings), range(32)))
    assert len(keys) == 1
    key_file = settings.speechflow_home / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in settings.speechflow_home.iterdir()] == ["signing.key"]

    first = LocalBlobStore(settings)
    url, _ = first.upload_url("audio-files", "a.wav")
    with local_client(settings, LocalBlobStore(settings)) as client:  # e.g. after a restart
        assert client.put(url, content=b"x", headers=BLOCK_BLOB).status_code == 201


def test_configured_signing_key_is_used(make_settings: Callable[..., Settings]) -> None:
    ours = make_settings(signing_key="k" * 32)
    theirs = make_settings(signing_key="z" * 32)
    url, _ = LocalBlobStore(ours).upload_url("audio-files", "a.wav")
    with local_client(theirs, LocalBlobStore(theirs)) as client:
        assert client.put(url, content=b"x", headers=BLOCK_BLOB).status_code == 403
    with local_client(ours, LocalBlobStore(ours)) as client:
        assert client.put(url, content=b"x", headers=BLOCK_BLOB).status_code == 201
    assert not (ours.speechflow_home / "signing.key").exists()


# --- the local adapter only: the Block Blob protocol's limits, errors and housekeeping -----------

AZURE_CLIENT = {"x-ms-version": "2025-01-05"}
"""What marks an Azure Storage client, which gets Azure's XML errors."""


def block_url(url: str, raw_id: bytes) -> str:
    return f"{url}&comp=block&blockid={quote(base64.b64encode(raw_id).decode(), safe='')}"


def block_list(*entries: tuple[str, bytes]) -> bytes:
    items = "".join(f"<{kind}>{base64.b64encode(raw).decode()}</{kind}>" for kind, raw in entries)
    return f'<?xml version="1.0" encoding="utf-8"?><BlockList>{items}</BlockList>'.encode()


def listed_blocks(client: TestClient, read_url: str, list_type: str = "all") -> httpx.Response:
    return client.get(f"{read_url}&comp=blocklist&blocklisttype={list_type}", headers=AZURE_CLIENT)


def test_local_blocks_are_held_to_the_upload_limit(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local  # MAX_UPLOAD_BYTES=1000
    url, _ = store.upload_url("audio-files", "big.wav")

    declared = client.put(block_url(url, b"0001"), content=b"x" * 1001, headers=AZURE_CLIENT)
    assert declared.status_code == 413
    assert declared.headers["x-ms-error-code"] == "RequestBodyTooLarge"
    assert declared.headers["content-type"].startswith("application/xml")
    assert b"<Code>RequestBodyTooLarge</Code>" in declared.content

    # Uncommitted blocks together stay within the limit too, also when the body's length is not declared.
    assert client.put(block_url(url, b"0001"), content=b"x" * 600, headers=AZURE_CLIENT).status_code == 201
    streamed = client.put(block_url(url, b"0002"), content=iter([b"x" * 300, b"x" * 300]), headers=AZURE_CLIENT)
    assert streamed.status_code == 413
    # Staging a block again replaces it, so its old size no longer counts.
    assert client.put(block_url(url, b"0001"), content=b"y" * 1000, headers=AZURE_CLIENT).status_code == 201
    commit = client.put(f"{url}&comp=blocklist", content=block_list(("Latest", b"0001")), headers=AZURE_CLIENT)
    assert commit.status_code == 201
    assert store.get("audio-files", "big.wav") == b"y" * 1000

    # A list that reuses committed blocks may not make the blob larger than the limit either.
    assert client.put(block_url(url, b"0002"), content=b"z" * 10, headers=AZURE_CLIENT).status_code == 201
    too_long = block_list(("Committed", b"0001"), ("Uncommitted", b"0002"))
    refused = client.put(f"{url}&comp=blocklist", content=too_long, headers=AZURE_CLIENT)
    assert refused.status_code == 413
    assert refused.headers["x-ms-error-code"] == "RequestBodyTooLarge"
    assert store.get("audio-files", "big.wav") == b"y" * 1000
    assert list((store.root / ".staging").iterdir()) == []


def test_local_block_ids_of_a_blob_share_one_length(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "ids.wav")
    assert client.put(block_url(url, b"0001"), content=b"a", headers=AZURE_CLIENT).status_code == 201

    longer = client.put(block_url(url, b"00002"), content=b"b", headers=AZURE_CLIENT)
    assert longer.status_code == 400
    assert longer.headers["x-ms-error-code"] == "InvalidBlobOrBlock"

    too_long = client.put(block_url(url, b"x" * 65), content=b"c", headers=AZURE_CLIENT)
    assert too_long.status_code == 400
    assert too_long.headers["x-ms-error-code"] == "OutOfRangeInput"

    missing = client.put(f"{url}&comp=block", content=b"d", headers=AZURE_CLIENT)
    assert missing.headers["x-ms-error-code"] == "MissingRequiredQueryParameter"


def test_local_content_md5_is_checked_and_returned(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "md5.wav")
    right = base64.b64encode(hashlib.md5(b"block data").digest()).decode()
    wrong = base64.b64encode(hashlib.md5(b"other data").digest()).decode()

    refused = client.put(block_url(url, b"0001"), content=b"block data", headers={**AZURE_CLIENT, "content-md5": wrong})
    assert refused.status_code == 400
    assert refused.headers["x-ms-error-code"] == "Md5Mismatch"
    assert store.uncommitted_blocks("audio-files", "md5.wav") == []

    accepted = client.put(
        block_url(url, b"0001"), content=b"block data", headers={**AZURE_CLIENT, "content-md5": right}
    )
    assert accepted.status_code == 201
    assert accepted.headers["content-md5"] == right
    assert accepted.headers["x-ms-version"] == "2025-01-05"
    assert accepted.headers["x-ms-request-id"]


def test_local_block_list_body_errors(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "list.wav")
    assert client.put(block_url(url, b"0001"), content=b"a", headers=AZURE_CLIENT).status_code == 201
    cases = [
        (b"<BlockList><Latest>MDAwMQ==</Latest>", 400, "InvalidXmlDocument"),
        (
            b'<!DOCTYPE BlockList [<!ENTITY a "MDAwMQ==">]><BlockList><Latest>&a;</Latest></BlockList>',
            400,
            "InvalidXmlDocument",
        ),
        (b"<BlockList><Newest>MDAwMQ==</Newest></BlockList>", 400, "InvalidBlockList"),
        (block_list(("Committed", b"0001")), 400, "InvalidBlockList"),  # it is uncommitted
        (b"<BlockList>" + b" " * (9 * 1024 * 1024) + b"</BlockList>", 413, "RequestBodyTooLarge"),
    ]
    for body, status, code in cases:
        response = client.put(f"{url}&comp=blocklist", content=body, headers=AZURE_CLIENT)
        assert (response.status_code, response.headers["x-ms-error-code"]) == (status, code), body[:60]
    assert not store.exists("audio-files", "list.wav")
    assert [block.id for block in store.uncommitted_blocks("audio-files", "list.wav")] == ["MDAwMQ=="]


def test_local_get_block_list(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    read_url = store.read_url("audio-files", "listed.wav")
    missing = listed_blocks(client, read_url)
    assert missing.status_code == 404
    assert missing.headers["x-ms-error-code"] == "BlobNotFound"

    url, _ = store.upload_url("audio-files", "listed.wav")
    client.put(block_url(url, b"0001"), content=b"abc", headers=AZURE_CLIENT)
    pending = listed_blocks(client, read_url, "uncommitted")
    assert pending.status_code == 200
    assert pending.headers["content-type"].startswith("application/xml")
    assert (
        b"<UncommittedBlocks><Block><Name>MDAwMQ==</Name><Size>3</Size></Block></UncommittedBlocks>" in pending.content
    )
    assert "etag" not in pending.headers  # nothing committed yet

    client.put(f"{url}&comp=blocklist", content=block_list(("Latest", b"0001")), headers=AZURE_CLIENT)
    committed = listed_blocks(client, read_url, "committed")
    assert committed.headers["etag"] == store.etag("audio-files", "listed.wav")
    assert committed.headers["x-ms-blob-content-length"] == "3"
    assert b"<UncommittedBlocks>" not in committed.content
    assert listed_blocks(client, read_url, "newest").headers["x-ms-error-code"] == "InvalidQueryParameterValue"


def test_local_put_blob_and_delete_discard_blocks(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "replaced.wav")
    client.put(block_url(url, b"0001"), content=b"a", headers=AZURE_CLIENT)
    client.put(f"{url}&comp=blocklist", content=block_list(("Latest", b"0001")), headers=AZURE_CLIENT)
    client.put(block_url(url, b"0002"), content=b"b", headers=AZURE_CLIENT)

    assert client.put(url, content=b"whole", headers=BLOCK_BLOB).status_code == 201
    assert store.uncommitted_blocks("audio-files", "replaced.wav") == []
    assert store.committed_blocks("audio-files", "replaced.wav") == []

    client.put(block_url(url, b"0003"), content=b"c", headers=AZURE_CLIENT)
    store.delete("audio-files", "replaced.wav")
    assert store.uncommitted_blocks("audio-files", "replaced.wav") == []
    assert list((store.root / ".blocks").iterdir()) == []


def test_local_uncommitted_blocks_expire_after_a_week(
    local: tuple[LocalBlobStore, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "abandoned.wav")
    client.put(block_url(url, b"0001"), content=b"a", headers=AZURE_CLIENT)
    now = time.time()

    assert store.discard_expired_blocks(now=now + UNCOMMITTED_BLOCK_TTL_SECONDS - 60) == 0
    assert len(store.uncommitted_blocks("audio-files", "abandoned.wav", now=now + 60)) == 1
    # Past the week they are gone for readers at once, whether or not a sweep ran.
    assert store.uncommitted_blocks("audio-files", "abandoned.wav", now=now + UNCOMMITTED_BLOCK_TTL_SECONDS + 1) == []

    # The sweep deletes every blob's expired blocks; Put Block runs it now and then.
    other_url, _ = store.upload_url("audio-files", "forgotten.wav")
    client.put(block_url(other_url, b"0001"), content=b"b", headers=AZURE_CLIENT)
    forgotten = next((store.root / ".blocks").iterdir())
    week_ago = now - UNCOMMITTED_BLOCK_TTL_SECONDS - 1
    os.utime(forgotten, (week_ago, week_ago))
    monkeypatch.setattr("functions.api.blobs._EXPIRED_BLOCKS_SWEEP_SECONDS", -1.0)
    fresh_url, _ = store.upload_url("audio-files", "fresh.wav")
    assert client.put(block_url(fresh_url, b"0001"), content=b"c", headers=AZURE_CLIENT).status_code == 201
    assert not forgotten.exists()
    assert len(store.uncommitted_blocks("audio-files", "fresh.wav")) == 1
    assert store.discard_expired_blocks(now=now + UNCOMMITTED_BLOCK_TTL_SECONDS + 120) == 1


def test_local_plain_clients_get_json_errors_and_azure_clients_xml(local: tuple[LocalBlobStore, TestClient]) -> None:
    store, client = local
    url, _ = store.upload_url("audio-files", "shape.wav")
    plain = client.put(url, content=b"x" * 1001, headers=BLOCK_BLOB)
    assert plain.json()["error"]["code"] == "RequestBodyTooLarge"
    azure = client.put(url, content=b"x" * 1001, headers={**BLOCK_BLOB, **AZURE_CLIENT})
    assert azure.headers["content-type"].startswith("application/xml")
    assert b"<Error><Code>RequestBodyTooLarge</Code><Message>" in azure.content
    unknown = client.put(f"{url}&comp=appendblock", content=b"x", headers=AZURE_CLIENT)
    assert (unknown.status_code, unknown.headers["x-ms-error-code"]) == (400, "InvalidQueryParameterValue")
