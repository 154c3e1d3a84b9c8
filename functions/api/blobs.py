"""The local blob adapter's upload and read URLs, served by the API.

Clients upload exactly as they would to an Azure SAS URL, so they never know which backend they talk
to: `PUT` with `x-ms-blob-type: BlockBlob` (Put Blob), or block by block as azure-storage-blob does
above 64 MiB (Put Block, Put Block List, Get Block List). Status codes, `x-ms-*` headers, ETag,
Content-MD5 and XML error bodies follow Azure; a plain HTTP client (curl) that does not ask for XML
gets errors in the API's JSON shape instead. Mounted only when the local folder is the BlobStore.
"""

from __future__ import annotations

import base64
import hashlib
import math
import mimetypes
import time
import uuid
from collections.abc import Callable
from email.utils import formatdate
from typing import IO, TYPE_CHECKING, Protocol
from xml.parsers import expat
from xml.sax.saxutils import escape

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import ClientDisconnect

from shared.storage.blocks import Block, BlockKind, BlockRejected
from shared.storage.local import LocalBlobStore
from shared.storage.signing import CREATE, READ, WRITE, SignedUrlRejected

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.storage import BlobStore

_WRITE_BUFFER = 1024 * 1024
"""Request chunks are gathered up to this size before each write to disk (done off the event loop)."""
_MAX_BLOCK_LIST_BYTES = 8 * 1024 * 1024
"""A Put Block List body: 50,000 entries of the longest id fit in under 6 MiB."""
_EXPIRED_BLOCKS_SWEEP_SECONDS = 3600.0
"""How often Put Block also deletes other blobs' expired uncommitted blocks."""
_BLOCK_KINDS: tuple[BlockKind, ...] = ("Committed", "Uncommitted", "Latest")
_LIST_TYPES = ("committed", "uncommitted", "all")
_MD5_MISMATCH = "The MD5 value specified in the request did not match with the MD5 value calculated by the server."


UploadGate = Callable[[str, str], str | None]
"""(container, blob) → why a write through a signed URL is refused now (its job has started, or been
deleted), or None while it may write. Called from a worker thread: it may read the database."""


class Writable(Protocol):
    file: IO[bytes]


def _speaks_azure(request: Request) -> bool:
    """Whether the client is an Azure Storage client (it sends x-ms-version, asks for XML or uses
    the block protocol) rather than a plain HTTP client."""
    return (
        "x-ms-version" in request.headers
        or "xml" in request.headers.get("accept", "")
        or "comp" in request.query_params
    )


def _service_headers(request: Request) -> dict[str, str]:
    """What every Azure Storage response carries besides Date, which the server adds."""
    return {
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-version": request.headers.get("x-ms-version", "2025-01-05"),
    }


def blob_error(request: Request, status_code: int, code: str, message: str) -> Response:
    """An error as Azure answers it (XML `<Error>`), or in the API's JSON shape for plain clients;
    Azure's x-ms-error-code header either way."""
    headers = {**_service_headers(request), "x-ms-error-code": code}
    if not _speaks_azure(request):
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status_code, headers=headers)
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}\n"
        f"RequestId:{headers['x-ms-request-id']}\nTime:{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        "</Message></Error>"
    )
    return Response(body, status_code=status_code, headers=headers, media_type="application/xml")


def parse_block_list(body: bytes) -> list[tuple[BlockKind, str]]:
    """The (kind, block id) entries of a Put Block List body, in order."""
    parser = expat.ParserCreate()
    depth = 0
    root: list[str] = []
    entries: list[tuple[str, list[str]]] = []

    def start(tag: str, _attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth == 1:
            root.append(tag)
        elif depth == 2:
            entries.append((tag, []))
        else:
            raise BlockRejected(400, "InvalidXmlDocument", f"unexpected element <{tag}> in a block entry")

    def end(_tag: str) -> None:
        nonlocal depth
        depth -= 1

    def text(data: str) -> None:
        if depth == 2:
            entries[-1][1].append(data)

    def refuse_dtd(*_args: object) -> None:
        # A bare <BlockList> needs no DTD; one could only serve to expand entities.
        raise BlockRejected(400, "InvalidXmlDocument", "a block list may not declare a DTD or entities")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    try:
        parser.Parse(body, True)
    except expat.ExpatError as error:
        raise BlockRejected(400, "InvalidXmlDocument", f"the block list is not valid XML: {error}") from None
    if root != ["BlockList"]:
        raise BlockRejected(400, "InvalidXmlDocument", "the block list's root element must be BlockList")
    parsed: list[tuple[BlockKind, str]] = []
    for tag, pieces in entries:
        kind = next((kind for kind in _BLOCK_KINDS if kind == tag), None)
        if kind is None:
            raise BlockRejected(400, "InvalidBlockList", f"unknown block list entry <{tag}>")
        parsed.append((kind, "".join(pieces).strip()))
    return parsed


def block_list_xml(*, committed: list[Block] | None, uncommitted: list[Block] | None) -> str:
    """A Get Block List body with the requested lists."""

    def blocks(tag: str, listed: list[Block] | None) -> str:
        if listed is None:
            return ""
        items = "".join(f"<Block><Name>{block.id}</Name><Size>{block.size}</Size></Block>" for block in listed)
        return f"<{tag}>{items}</{tag}>"

    return (
        '<?xml version="1.0" encoding="utf-8"?><BlockList>'
        f"{blocks('CommittedBlocks', committed)}{blocks('UncommittedBlocks', uncommitted)}</BlockList>"
    )


def make_blob_router(
    settings: Settings,
    store: BlobStore,
    *,
    upload_gate: UploadGate | None = None,
    write_limiter: Callable[[str], float] | None = None,
) -> APIRouter:
    """Routes for `PUT` and `GET /blobs/{container}/{blob}` with the URLs `store` signs.

    Only the local adapter signs URLs that point here; any other store is a wiring mistake. With
    `upload_gate`, every write is also refused once the gate says so — checked before the body is read
    and again right before it lands, so an upload that was under way when its job started lands nowhere.
    With `write_limiter` (a bucket key → seconds to wait), writes are rate-limited per top-level folder
    (a job), answered as Azure answers throttling: 503 ServerBusy with Retry-After.
    """
    if not isinstance(store, LocalBlobStore):
        raise TypeError(f"the blob routes serve the local blob folder, not {type(store).__name__}")
    local: LocalBlobStore = store
    router = APIRouter(tags=["blobs"])
    last_sweep = time.monotonic()

    def check_signature(request: Request, container: str, blob: str, required: str) -> Response | None:
        try:
            local.signer.verify(
                container=container,
                blob=blob,
                required=required,
                expiry=request.query_params.get("se"),
                permission=request.query_params.get("sp"),
                signature=request.query_params.get("sig"),
            )
        except SignedUrlRejected as rejected:
            return blob_error(request, 403, rejected.code, str(rejected))
        return None

    def unmet_condition(request: Request, etag: str | None) -> Response | None:
        """Azure's answer to If-Match / If-None-Match on a write, given the blob's ETag (None: absent)."""
        if_none_match = request.headers.get("if-none-match")
        if if_none_match == "*" and etag is not None:
            return blob_error(request, 409, "BlobAlreadyExists", "The specified blob already exists.")
        if_match = request.headers.get("if-match")
        if (
            (if_none_match not in (None, "*") and etag == if_none_match)
            or (if_match == "*" and etag is None)
            or (if_match not in (None, "*") and etag != if_match)
        ):
            message = "The condition specified using HTTP conditional header(s) is not met."
            return blob_error(request, 412, "ConditionNotMet", message)
        return None

    async def closed(request: Request, container: str, blob: str) -> Response | None:
        if upload_gate is None:
            return None
        reason = await anyio.to_thread.run_sync(upload_gate, container, blob)
        if reason is None:
            return None
        return blob_error(request, 403, "AuthorizationFailure", reason)

    def current_etag(container: str, blob: str) -> str | None:
        return local.etag(container, blob) if local.exists(container, blob) else None

    def written_headers(request: Request, container: str, blob: str) -> dict[str, str]:
        modified = formatdate(local.path(container, blob).stat().st_mtime, usegmt=True)
        return {
            **_service_headers(request),
            "ETag": local.etag(container, blob),
            "Last-Modified": modified,
            "x-ms-request-server-encrypted": "false",
        }

    async def receive(request: Request, staged: Writable, limit: int) -> bytes | Response:
        """Stream the body into the staged file, at most `limit` bytes; its MD5 or the refusal.

        Memory holds one buffer of the body at a time, however large the upload.
        """
        too_large = blob_error(request, 413, "RequestBodyTooLarge", f"the body is larger than {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return blob_error(request, 400, "InvalidHeaderValue", "Content-Length must be a whole number")
            if int(declared) > limit:
                return too_large
        md5 = hashlib.md5(usedforsecurity=False)

        def write(data: bytes) -> None:
            md5.update(data)
            staged.file.write(data)

        received = 0
        buffer = bytearray()
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    return too_large
                buffer += chunk
                if len(buffer) >= _WRITE_BUFFER:
                    await anyio.to_thread.run_sync(write, bytes(buffer))
                    buffer.clear()
        except ClientDisconnect:
            return blob_error(request, 400, "IncompleteBody", "the client went away before the upload finished")
        await anyio.to_thread.run_sync(write, bytes(buffer))
        digest = md5.digest()
        expected = request.headers.get("content-md5")
        if expected is not None and expected != base64.b64encode(digest).decode("ascii"):
            message = (
                "The MD5 value specified in the request did not match with the MD5 value calculated by the server."
            )
            return blob_error(request, 400, "Md5Mismatch", message)
        return digest

    @router.put("/blobs/{container}/{blob:path}", status_code=201, include_in_schema=False)
    async def put(container: str, blob: str, request: Request) -> Response:
        try:
            exists = local.exists(container, blob)
        except ValueError as error:
            return blob_error(request, 400, "InvalidResourceName", str(error))
        if write_limiter is not None:
            key = f"upload:{container}/{blob.split('/', 1)[0]}"[:64]
            wait = await anyio.to_thread.run_sync(write_limiter, key)
            if wait > 0:
                seconds = str(max(1, math.ceil(wait)))
                busy = blob_error(request, 503, "ServerBusy", f"too many writes to this upload; retry in {seconds} s")
                busy.headers["Retry-After"] = seconds
                return busy
        operation = request.query_params.get("comp")
        if operation == "block":
            return await put_block(container, blob, request)
        if operation == "blocklist":
            return await put_block_list(container, blob, request)
        if operation is not None:
            return blob_error(request, 400, "InvalidQueryParameterValue", f"comp={operation} is not supported here")
        return await put_blob(container, blob, request, exists=exists)

    async def put_blob(container: str, blob: str, request: Request, *, exists: bool) -> Response:
        # As with Azure SAS: "c" may create a blob that does not exist yet, "w" may also overwrite.
        refused = check_signature(request, container, blob, WRITE if exists else CREATE + WRITE)
        if refused is None:
            refused = await closed(request, container, blob)
        if refused is not None:
            return refused
        blob_type = request.headers.get("x-ms-blob-type")
        if blob_type is None:
            return blob_error(request, 400, "MissingRequiredHeader", "the x-ms-blob-type header is required")
        if blob_type != "BlockBlob":
            return blob_error(request, 400, "InvalidHeaderValue", "x-ms-blob-type must be BlockBlob")
        unmet = unmet_condition(request, current_etag(container, blob))
        if unmet is not None:
            return unmet

        staged = await anyio.to_thread.run_sync(local.stage, container, blob)
        try:
            received = await receive(request, staged, settings.max_upload_bytes)
            if isinstance(received, Response):
                return received
            if (refused := await closed(request, container, blob)) is not None:
                return refused
            await anyio.to_thread.run_sync(staged.commit)
        finally:
            await anyio.to_thread.run_sync(staged.discard)
        # Azure drops a blob's uncommitted blocks when it is replaced by Put Blob.
        await anyio.to_thread.run_sync(local.discard_blocks, container, blob)
        headers = {**written_headers(request, container, blob), "Content-MD5": base64.b64encode(received).decode()}
        return Response(status_code=201, headers=headers)

    async def put_block(container: str, blob: str, request: Request) -> Response:
        nonlocal last_sweep
        refused = check_signature(request, container, blob, WRITE)
        if refused is None:
            refused = await closed(request, container, blob)
        if refused is not None:
            return refused
        block_id = request.query_params.get("blockid")
        if not block_id:
            return blob_error(request, 400, "MissingRequiredQueryParameter", "the blockid parameter is required")
        if time.monotonic() - last_sweep > _EXPIRED_BLOCKS_SWEEP_SECONDS:
            last_sweep = time.monotonic()
            await anyio.to_thread.run_sync(local.discard_expired_blocks)
        try:
            staged = await anyio.to_thread.run_sync(local.stage_block, container, blob, block_id)
        except BlockRejected as rejected:
            return blob_error(request, rejected.status_code, rejected.code, str(rejected))
        try:
            received = await receive(request, staged, staged.max_bytes)
            if isinstance(received, Response):
                return received
            await anyio.to_thread.run_sync(staged.commit)
        finally:
            await anyio.to_thread.run_sync(staged.discard)
        headers = {
            **_service_headers(request),
            "Content-MD5": base64.b64encode(received).decode("ascii"),
            "x-ms-request-server-encrypted": "false",
        }
        return Response(status_code=201, headers=headers)

    async def put_block_list(container: str, blob: str, request: Request) -> Response:
        refused = check_signature(request, container, blob, WRITE)
        if refused is None:
            refused = await closed(request, container, blob)
        if refused is not None:
            return refused
        unmet = unmet_condition(request, current_etag(container, blob))
        if unmet is not None:
            return unmet
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > _MAX_BLOCK_LIST_BYTES:
                    message = f"a block list is at most {_MAX_BLOCK_LIST_BYTES} bytes"
                    return blob_error(request, 413, "RequestBodyTooLarge", message)
        except ClientDisconnect:
            return blob_error(request, 400, "IncompleteBody", "the client went away before the block list arrived")
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
        expected = request.headers.get("content-md5")
        if expected is not None and expected != md5:
            message = (
                "The MD5 value specified in the request did not match with the MD5 value calculated by the server."
            )
            return blob_error(request, 400, "Md5Mismatch", message)
        if (refused := await closed(request, container, blob)) is not None:
            return refused
        try:
            choices = parse_block_list(bytes(body))
            await anyio.to_thread.run_sync(local.commit_blocks, container, blob, choices)
        except BlockRejected as rejected:
            return blob_error(request, rejected.status_code, rejected.code, str(rejected))
        # For Put Block List, Content-MD5 is that of the request body (the list), as Azure answers it.
        return Response(status_code=201, headers={**written_headers(request, container, blob), "Content-MD5": md5})

    @router.get("/blobs/{container}/{blob:path}", include_in_schema=False)
    async def get(container: str, blob: str, request: Request) -> Response:
        try:
            path = local.path(container, blob)
        except ValueError as error:
            return blob_error(request, 400, "InvalidResourceName", str(error))
        refused = check_signature(request, container, blob, READ)
        if refused is not None:
            return refused
        operation = request.query_params.get("comp")
        if operation == "blocklist":
            return await get_block_list(container, blob, request)
        if operation is not None:
            return blob_error(request, 400, "InvalidQueryParameterValue", f"comp={operation} is not supported here")
        if not path.is_file():
            return blob_error(request, 404, "BlobNotFound", "The specified blob does not exist.")
        media_type = mimetypes.guess_type(blob)[0] or "application/octet-stream"
        headers = {**_service_headers(request), "ETag": local.etag(container, blob)}
        return FileResponse(path, media_type=media_type, headers=headers)

    async def get_block_list(container: str, blob: str, request: Request) -> Response:
        list_type = request.query_params.get("blocklisttype", "committed").lower()
        if list_type not in _LIST_TYPES:
            message = f"blocklisttype must be one of {', '.join(_LIST_TYPES)}"
            return blob_error(request, 400, "InvalidQueryParameterValue", message)
        uncommitted = await anyio.to_thread.run_sync(local.uncommitted_blocks, container, blob)
        committed = await anyio.to_thread.run_sync(local.committed_blocks, container, blob)
        etag = current_etag(container, blob)
        if etag is None and not uncommitted:
            return blob_error(request, 404, "BlobNotFound", "The specified blob does not exist.")
        headers = _service_headers(request)
        if etag is not None:
            path = local.path(container, blob)
            headers["ETag"] = etag
            headers["Last-Modified"] = formatdate(path.stat().st_mtime, usegmt=True)
            headers["x-ms-blob-content-length"] = str(path.stat().st_size)
        body = block_list_xml(
            committed=committed if list_type != "uncommitted" else None,
            uncommitted=uncommitted if list_type != "committed" else None,
        )
        return Response(body, status_code=200, headers=headers, media_type="application/xml")

    return router
