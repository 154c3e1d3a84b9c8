"""What every command does with the API's answers and with files: an answer read or turned into one
line saying why it was refused, and a file read in chunks for an upload, counting what is sent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from shared.cli.errors import CliError

CHUNK = 1024 * 1024


def checked(response: httpx.Response, doing: str) -> dict[str, Any]:
    """The answer's JSON, or a CliError naming what was being done and the API's reason."""
    if response.is_success:
        data: dict[str, Any] = response.json()
        return data
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    raise CliError(f"{doing} failed ({response.status_code}): {message}")


def file_chunks(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
            advance(len(chunk))
