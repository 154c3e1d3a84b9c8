"""The Block Blob protocol's pieces for the local-folder store (Put Block, Put Block List, Get Block
List, as azure-storage-blob uses them above 64 MiB): a block, its id, Azure's limits, and a refusal
with Azure's status and code."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shared.core.errors import SpeechFlowError

if TYPE_CHECKING:
    pass


UNCOMMITTED_BLOCK_TTL_SECONDS = 7 * 24 * 3600
"""Uncommitted blocks are dropped a week after the last Put Block on their blob, as Azure does."""


MAX_BLOCK_ID_BYTES = 64


MAX_BLOCK_BYTES = 4000 * 1024 * 1024
"""Azure's limit on one Put Block; the upload size limit (MAX_UPLOAD_BYTES) is usually lower."""


MAX_UNCOMMITTED_BLOCKS = 100_000


MAX_COMMITTED_BLOCKS = 50_000


BlockKind = Literal["Committed", "Uncommitted", "Latest"]


class BlockRejected(SpeechFlowError):
    """A block request that Azure would refuse; carries Azure's status and error code."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


@dataclass(frozen=True)
class Block:
    """One block of a block blob: its id (base64, as the client sent it) and its size in bytes."""

    id: str
    size: int


def decode_block_id(block_id: str) -> bytes:
    """The raw bytes of a block id; raise BlockRejected unless it is canonical base64 of 1-64 bytes."""
    try:
        raw = base64.b64decode(block_id, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    # Only the canonical encoding is accepted, so one block never goes by two ids.
    if not raw or base64.b64encode(raw).decode("ascii") != block_id:
        raise BlockRejected(400, "InvalidQueryParameterValue", f"the block id {block_id!r} is not valid base64")
    if len(raw) > MAX_BLOCK_ID_BYTES:
        raise BlockRejected(400, "OutOfRangeInput", f"a block id is at most {MAX_BLOCK_ID_BYTES} bytes long")
    return raw
