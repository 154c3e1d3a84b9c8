"""The local-folder BlobStore: blobs are files under `SPEECHFLOW_HOME/blobs/{container}/{blob}`.

Upload and read URLs imitate Azure SAS URLs closely enough that a client cannot tell the two apart:
`PUT {url}` with `x-ms-blob-type: BlockBlob` stores the blob, and the Block Blob protocol (Put Block,
Put Block List, Get Block List) works on the same URL, as azure-storage-blob uses it above 64 MiB.
They point at the API (`/blobs/{container}/{blob}?se=…&sp=…&sig=…`, served by `functions.api.blobs`)
and carry an HMAC-SHA256 signature over the permission, expiry, container and blob, so a URL grants
exactly one operation on exactly one blob until it expires.

Blocks are files too: uncommitted ones under `blobs/.blocks/{key}/`, one file per block, named by
the block id in hex; the layout of a committed blob under `blobs/.blocklists/{key}.json`, tied to the
ETag of the file it describes, so a blob replaced by any other write simply has no block list.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

from shared.core.errors import BlobNotFound
from shared.storage.blocks import (
    MAX_BLOCK_BYTES,
    MAX_COMMITTED_BLOCKS,
    MAX_UNCOMMITTED_BLOCKS,
    UNCOMMITTED_BLOCK_TTL_SECONDS,
    Block,
    BlockKind,
    BlockRejected,
    decode_block_id,
)
from shared.storage.names import validate_blob_name, validate_container_name
from shared.storage.signing import (
    READ,
    UPLOAD_PERMISSIONS,
    UrlSigner,
    load_signing_key,
)

if TYPE_CHECKING:
    from shared.core.config import Settings


_COPY_CHUNK = 1024 * 1024
_STAGING = ".staging"
"""Where blobs are written before they are renamed into place; not a valid container name."""
_BLOCKS = ".blocks"
_BLOCK_LISTS = ".blocklists"


class StagedBlob:
    """A blob being written: a temporary file in the store, renamed over the blob on commit."""

    def __init__(self, file: IO[bytes], temporary: Path, target: Path) -> None:
        self.file = file
        self.target = target
        self._temporary = temporary

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._temporary.replace(self.target)

    def discard(self) -> None:
        """Drop what was written unless it was committed; safe to call more than once."""
        self.file.close()
        self._temporary.unlink(missing_ok=True)


class StagedBlock:
    """An uncommitted block being written; `max_bytes` is how large it may grow."""

    def __init__(self, staged: StagedBlob, *, max_bytes: int) -> None:
        self.file = staged.file
        self.max_bytes = max_bytes
        self._staged = staged

    def commit(self) -> None:
        self._staged.commit()
        # The folder's time is the blob's last Put Block, from which its uncommitted blocks expire.
        with contextlib.suppress(FileNotFoundError):  # a concurrent commit just took the blocks
            os.utime(self._staged.target.parent)

    def discard(self) -> None:
        self._staged.discard()


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
        return self._stage_to(self.path(container, blob))

    def _stage_to(self, target: Path) -> StagedBlob:
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

    # --- blocks (Put Block, Put Block List, Get Block List) -------------------------------------

    def _block_key(self, container: str, blob: str) -> str:
        # A digest, not the name: blob names nest and run to 1024 characters, a folder name cannot.
        self.path(container, blob)
        return hashlib.sha256(f"{container}\n{blob}".encode()).hexdigest()

    def _uncommitted_folder(self, container: str, blob: str) -> Path:
        return self.root / _BLOCKS / self._block_key(container, blob)

    def _block_list_file(self, container: str, blob: str) -> Path:
        return self.root / _BLOCK_LISTS / f"{self._block_key(container, blob)}.json"

    def stage_block(self, container: str, blob: str, block_id: str) -> StagedBlock:
        """Start writing one uncommitted block; it replaces any block of the same id once committed.

        Raises BlockRejected for an invalid id, an id whose length differs from the blob's other
        blocks (Azure requires one length per blob) or one block too many.
        """
        raw = decode_block_id(block_id)
        uncommitted = self.uncommitted_blocks(container, blob)
        known = uncommitted or self.committed_blocks(container, blob)
        if known and len(decode_block_id(known[0].id)) != len(raw):
            message = "all block ids of a blob must have the same length"
            raise BlockRejected(400, "InvalidBlobOrBlock", message)
        others = [block for block in uncommitted if block.id != block_id]
        if len(others) >= MAX_UNCOMMITTED_BLOCKS:
            message = f"a blob may have at most {MAX_UNCOMMITTED_BLOCKS} uncommitted blocks"
            raise BlockRejected(409, "BlockCountExceedsLimit", message)
        # Uncommitted blocks together stay within the upload limit, so an upload URL cannot fill the disk.
        room = self._settings.max_upload_bytes - sum(block.size for block in others)
        folder = self._uncommitted_folder(container, blob)
        folder.mkdir(parents=True, exist_ok=True)
        staged = self._stage_to(folder / raw.hex())
        return StagedBlock(staged, max_bytes=max(0, min(MAX_BLOCK_BYTES, room)))

    def uncommitted_blocks(self, container: str, blob: str, *, now: float | None = None) -> list[Block]:
        """The blob's uncommitted blocks in the order they were staged; none once they expired."""
        folder = self._uncommitted_folder(container, blob)
        try:
            if folder.stat().st_mtime < (time.time() if now is None else now) - UNCOMMITTED_BLOCK_TTL_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
                return []
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        found: list[tuple[int, str, int]] = []
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # a commit may be clearing the folder
                stat = entry.stat()
                found.append((stat.st_mtime_ns, entry.name, stat.st_size))
        found.sort()
        return [Block(_block_id(name), size) for _, name, size in found]

    def committed_blocks(self, container: str, blob: str) -> list[Block]:
        """The blocks the blob was last committed from; none if it was written any other way."""
        try:
            recorded = json.loads(self._block_list_file(container, blob).read_text(encoding="utf-8"))
            current = self.etag(container, blob)
        except (FileNotFoundError, BlobNotFound, ValueError):
            return []
        if recorded.get("etag") != current:
            return []
        return [Block(block_id, size) for block_id, size in recorded["blocks"]]

    def commit_blocks(self, container: str, blob: str, choices: Sequence[tuple[BlockKind, str]]) -> None:
        """Write the blob as the concatenation of the chosen blocks (Put Block List), all or nothing.

        Each choice names a block id and where to look it up: among the uncommitted blocks, the
        committed ones, or the uncommitted first ("Latest"). The blocks are copied chunk by chunk
        into a staged file that replaces the blob on success; then the uncommitted blocks go.
        """
        if len(choices) > MAX_COMMITTED_BLOCKS:
            message = f"the block list may not contain more than {MAX_COMMITTED_BLOCKS} blocks"
            raise BlockRejected(400, "BlockListTooLong", message)
        folder = self._uncommitted_folder(container, blob)
        uncommitted = {block.id: block for block in self.uncommitted_blocks(container, blob)}
        committed: dict[str, tuple[int, int]] = {}
        offset = 0
        for block in self.committed_blocks(container, blob):
            committed.setdefault(block.id, (offset, block.size))
            offset += block.size

        # (an uncommitted block's file, or None for a range of the committed blob; offset; size)
        sources: list[tuple[Path | None, int, int]] = []
        for kind, block_id in choices:
            if kind != "Committed" and block_id in uncommitted:
                sources.append((folder / decode_block_id(block_id).hex(), 0, uncommitted[block_id].size))
            elif kind != "Uncommitted" and block_id in committed:
                sources.append((None, *committed[block_id]))
            else:
                raise BlockRejected(400, "InvalidBlockList", f"the block list names an unknown block {block_id!r}")
        total = sum(size for _, _, size in sources)
        if total > self._settings.max_upload_bytes:
            message = f"the blob would be {total} bytes, more than the {self._settings.max_upload_bytes} allowed"
            raise BlockRejected(413, "RequestBodyTooLarge", message)

        blocks = [Block(block_id, size) for (_, block_id), (_, _, size) in zip(choices, sources, strict=True)]
        with contextlib.ExitStack() as stack:
            current = None
            if any(path is None for path, _, _ in sources):
                # Opened before the new version replaces it, so committed ranges come from the old one.
                try:
                    current = stack.enter_context(self.path(container, blob).open("rb"))
                except FileNotFoundError:
                    raise BlockRejected(400, "InvalidBlockList", "the committed blob is gone") from None
            staged = self._stage_to(self.path(container, blob))
            stack.callback(staged.discard)
            for path, start, size in sources:
                if path is None:
                    assert current is not None
                    current.seek(start)
                    _copy_exactly(current, staged.file, size)
                    continue
                try:
                    source = path.open("rb")
                except FileNotFoundError:  # expired or committed by a concurrent request
                    raise BlockRejected(400, "InvalidBlockList", f"block {path.name} is gone") from None
                with source:
                    _copy_exactly(source, staged.file, size)
            staged.commit()
        record = {"etag": self.etag(container, blob), "blocks": [[block.id, block.size] for block in blocks]}
        encoded = json.dumps(record).encode("utf-8")
        _write_file_atomically(self._block_list_file(container, blob), lambda file: file.write(encoded))
        shutil.rmtree(folder, ignore_errors=True)

    def discard_blocks(self, container: str, blob: str) -> None:
        """Forget the blob's uncommitted blocks and block list, as Azure does on Put Blob and delete."""
        shutil.rmtree(self._uncommitted_folder(container, blob), ignore_errors=True)
        self._block_list_file(container, blob).unlink(missing_ok=True)

    def discard_expired_blocks(self, *, now: float | None = None) -> int:
        """Delete the uncommitted blocks of every blob not staged to for a week; returns how many blobs."""
        cutoff = (time.time() if now is None else now) - UNCOMMITTED_BLOCK_TTL_SECONDS
        discarded = 0
        with contextlib.suppress(FileNotFoundError):
            for folder in (self.root / _BLOCKS).iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if folder.stat().st_mtime < cutoff:
                        shutil.rmtree(folder, ignore_errors=True)
                        discarded += 1
        return discarded

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

    def put_file(
        self, container: str, blob: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> None:
        with path.open("rb") as source, self.staged_write(container, blob) as file:
            shutil.copyfileobj(source, file, _COPY_CHUNK)

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

    def copy(self, container: str, source: str, target: str) -> None:
        # A second name for the same file (a hard link), put in place with a rename: no data is
        # copied, and every write here replaces a blob's file rather than changing it in place, so a
        # later write to either name leaves the other as it was. Where links are not possible, a copy.
        source_path = self._existing_path(container, source)
        target_path = self.path(container, target)
        staging = self.root / _STAGING
        staging.mkdir(parents=True, exist_ok=True)
        temporary = staging / f"link-{secrets.token_hex(16)}"
        try:
            try:
                os.link(source_path, temporary)
            except FileNotFoundError:
                raise BlobNotFound(f"blob {container}/{source} does not exist") from None
            except OSError:
                with source_path.open("rb") as file, self.staged_write(container, target) as copied:
                    shutil.copyfileobj(file, copied, _COPY_CHUNK)
            else:
                target_path.parent.mkdir(parents=True, exist_ok=True)
                temporary.replace(target_path)
        finally:
            temporary.unlink(missing_ok=True)
        # The target is a new blob: whatever blocks were staged or committed to it before are gone.
        self.discard_blocks(container, target)

    def delete(self, container: str, blob: str) -> None:
        path = self.path(container, blob)
        path.unlink(missing_ok=True)
        self.discard_blocks(container, blob)
        # A blob store has no folders: the folder a blob needed goes with its last blob.
        top = self.root / validate_container_name(container)
        for folder in path.parents:
            if folder == top or not folder.is_relative_to(top):
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): the folders above are not empty either
                break

    def folders(self, container: str) -> list[str]:
        """The names of the top-level folders (`{job_id}/` prefixes) in the container."""
        try:
            return sorted(
                entry.name for entry in (self.root / validate_container_name(container)).iterdir() if entry.is_dir()
            )
        except FileNotFoundError:
            return []

    def delete_prefix(self, container: str, prefix: str) -> int:
        # Only whole folders: every caller deletes a job's folder, and a partial name would have to
        # be matched against every file in the container.
        if not prefix.endswith("/"):
            raise ValueError(f"delete_prefix takes a folder (ending in '/'), not {prefix!r}")
        folder = self.path(container, prefix.rstrip("/"))
        if not folder.is_dir():
            return 0
        removed = 0
        for path in sorted(folder.rglob("*"), reverse=True):
            if not path.is_symlink() and not path.exists():
                continue  # a folder that deleting its last blob removed
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
                continue
            self.delete(container, path.relative_to(self.root / container).as_posix())
            removed += 1
        with contextlib.suppress(FileNotFoundError):
            folder.rmdir()
        return removed

    def discard_stale_staging(self, *, older_than_seconds: float, now: float | None = None) -> int:
        """Delete staging files left by writes that never finished (a process killed mid-write), which
        would otherwise keep a copy of a blob's content; returns how many."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for path in (self.root / _STAGING).iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed

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


def _block_id(file_name: str) -> str:
    return base64.b64encode(bytes.fromhex(file_name)).decode("ascii")


def _copy_exactly(source: IO[bytes], target: IO[bytes], size: int) -> None:
    """Copy `size` bytes chunk by chunk; a source that ends early means it changed under us."""
    left = size
    while left:
        chunk = source.read(min(_COPY_CHUNK, left))
        if not chunk:
            raise BlockRejected(400, "InvalidBlockList", "a block changed while the block list was committed")
        target.write(chunk)
        left -= len(chunk)
