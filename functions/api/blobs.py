"""The local blob adapter's upload and read URLs, served by the API.

Clients upload exactly as they would to an Azure SAS URL (`PUT` with `x-ms-blob-type: BlockBlob`),
so they never know which backend they talk to. Mounted only when the local folder is the BlobStore.
"""

from __future__ import annotations

import mimetypes
from email.utils import formatdate
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import ClientDisconnect

from shared.storage.local import CREATE, READ, WRITE, LocalBlobStore, SignedUrlRejected

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.storage import BlobStore

_WRITE_BUFFER = 1024 * 1024
"""Request chunks are gathered up to this size before each write to disk (done off the event loop)."""


def blob_error(status_code: int, code: str, message: str) -> JSONResponse:
    """An error in the API's JSON shape, with Azure's x-ms-error-code header as well."""
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status_code,
        headers={"x-ms-error-code": code},
    )


def make_blob_router(settings: Settings, store: BlobStore) -> APIRouter:
    """Routes for `PUT` and `GET /blobs/{container}/{blob}` with the URLs `store` signs.

    Only the local adapter signs URLs that point here; any other store is a wiring mistake.
    """
    if not isinstance(store, LocalBlobStore):
        raise TypeError(f"the blob routes serve the local blob folder, not {type(store).__name__}")
    router = APIRouter(tags=["blobs"])

    def check_signature(request: Request, container: str, blob: str, required: str) -> JSONResponse | None:
        try:
            store.signer.verify(
                container=container,
                blob=blob,
                required=required,
                expiry=request.query_params.get("se"),
                permission=request.query_params.get("sp"),
                signature=request.query_params.get("sig"),
            )
        except SignedUrlRejected as rejected:
            return blob_error(403, rejected.code, str(rejected))
        return None

    @router.put("/blobs/{container}/{blob:path}", status_code=201, include_in_schema=False)
    async def put_blob(container: str, blob: str, request: Request) -> Response:
        try:
            exists = store.exists(container, blob)
        except ValueError as error:
            return blob_error(400, "InvalidResourceName", str(error))
        # As with Azure SAS: "c" may create a blob that does not exist yet, "w" may also overwrite.
        refused = check_signature(request, container, blob, WRITE if exists else CREATE + WRITE)
        if refused is not None:
            return refused

        blob_type = request.headers.get("x-ms-blob-type")
        if blob_type is None:
            return blob_error(400, "MissingRequiredHeader", "the x-ms-blob-type header is required")
        if blob_type != "BlockBlob":
            return blob_error(400, "InvalidHeaderValue", "x-ms-blob-type must be BlockBlob")

        limit = settings.max_upload_bytes
        too_large = blob_error(413, "RequestBodyTooLarge", f"the upload is larger than {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return blob_error(400, "InvalidHeaderValue", "Content-Length must be a whole number")
            if int(declared) > limit:
                return too_large

        staged = await anyio.to_thread.run_sync(store.stage, container, blob)
        try:
            received = 0
            buffer = bytearray()
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    return too_large
                buffer += chunk
                if len(buffer) >= _WRITE_BUFFER:
                    await anyio.to_thread.run_sync(staged.file.write, bytes(buffer))
                    buffer.clear()
            await anyio.to_thread.run_sync(staged.file.write, bytes(buffer))
            await anyio.to_thread.run_sync(staged.commit)
        except ClientDisconnect:
            return blob_error(400, "IncompleteBody", "the client went away before the upload finished")
        finally:
            await anyio.to_thread.run_sync(staged.discard)

        etag = store.etag(container, blob)
        modified = formatdate(store.path(container, blob).stat().st_mtime, usegmt=True)
        return Response(status_code=201, headers={"ETag": etag, "Last-Modified": modified})

    @router.get("/blobs/{container}/{blob:path}", include_in_schema=False)
    async def get_blob(container: str, blob: str, request: Request) -> Response:
        try:
            path = store.path(container, blob)
        except ValueError as error:
            return blob_error(400, "InvalidResourceName", str(error))
        refused = check_signature(request, container, blob, READ)
        if refused is not None:
            return refused
        if not path.is_file():
            return blob_error(404, "BlobNotFound", f"blob {container}/{blob} does not exist")
        media_type = mimetypes.guess_type(blob)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"ETag": store.etag(container, blob)})

    return router
