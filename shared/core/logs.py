"""Structured JSON logs: one object a line, carrying the stable keys (action, job_id, step_type,
attempt, …) that callers pass in `extra`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from shared.core.config import Settings
from shared.core.tracing import current_ids

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

_context: ContextVar[dict[str, Any]] = ContextVar("speechflow_log_context", default={})  # noqa: B039 - never mutated


@contextmanager
def log_context(**keys: Any) -> Iterator[None]:
    """Every log line written inside the block (by any logger, on this thread or task) carries these
    keys — job_id, step_type, attempt — unless the line sets them itself."""
    given = {key: value for key, value in keys.items() if value is not None}
    token = _context.set({**_context.get(), **given})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context.get())
        entry.update(_trace_ids())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _trace_ids() -> dict[str, str]:
    """trace_id and span_id of the current span, so that a log line can be found from its trace."""

    return current_ids()


def configure_logging(settings: Settings, *, level: int = logging.INFO) -> None:
    """JSON lines on stderr for every SpeechFlow process."""
    del settings  # reserved: log level and exporters come from Settings as they grow
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure", "httpx", "uvicorn.access", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
