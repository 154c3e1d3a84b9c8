"""The connections one process holds: database, bus and blob store, built from Settings on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from shared.bus import make_bus
from shared.core.config import Settings, get_settings
from shared.core.db import make_engine, make_sessionmaker
from shared.storage import make_blob_store

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from shared.bus import MessageBus
    from shared.storage import BlobStore


@dataclass
class Runtime:
    """Lazily connected adapters; nothing is opened until first used."""

    settings: Settings
    _closed: bool = field(default=False, init=False)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def bus(self) -> MessageBus:

        return make_bus(self.settings, self.engine)

    @cached_property
    def blobs(self) -> BlobStore:

        return make_blob_store(self.settings)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if "bus" in self.__dict__:
            self.bus.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


_process_runtime: Runtime | None = None


def process_runtime() -> Runtime:
    """The one Runtime of a Functions worker process, built on first use (the host imports the
    function modules before any message arrives, so nothing connects at import)."""
    global _process_runtime  # noqa: PLW0603 - one set of connections per process, by design
    if _process_runtime is None:
        _process_runtime = Runtime(get_settings())
    return _process_runtime
