"""Container and blob names as Azure Blob Storage allows them, checked before any path is built from
them (a name must never leave its container's folder)."""

from __future__ import annotations

import re
from pathlib import Path

_CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
"""Azure's container naming rule: 3-63 lowercase letters, digits and single inner hyphens."""


_MAX_BLOB_NAME = 1024


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
