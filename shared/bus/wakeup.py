"""Waking the SQL queue's waiting receivers the moment a message they wait for is committed.

Receivers of one process wait on a wake key (a queue, or `<queue>/$DeadLetterQueue`); a generation
counter per key is bumped by every send this process sees, so a receiver sleeps until its key moves.
Other processes are reached by the database's own channel: on PostgreSQL a listener thread holds
`LISTEN speechflow_queue` on a dedicated connection and every send notifies on commit; SQLite has no
such channel, so each process sharing a database file binds a UNIX datagram socket in a wake directory
for that file and a committed send writes its keys to every socket there. Where neither is available
(an in-memory database) there is no listener and receivers poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, literal
from sqlalchemy import event as sa_event
from sqlalchemy import select as sql_select

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "speechflow_queue"
DEAD_LETTER_SUFFIX = "/$DeadLetterQueue"
"""Service Bus names a queue's dead-letter sub-queue `<queue>/$DeadLetterQueue`; so do our wake-ups."""

_LISTEN_SAFETY_S = 5.0
"""Longest a LISTENing receiver sleeps without looking: a guard against a notification lost in transit."""
_LISTENER_READY_S = 5.0
_LISTENER_IDLE_PING_S = 60.0


def wake_key(queue: str, *, dead_letter: bool) -> str:
    """What a waiting receiver listens for: the queue, or its dead-letter sub-queue."""
    return queue + DEAD_LETTER_SUFFIX if dead_letter else queue


class WakeUps:
    """The wake-ups of one SQL queue in this process (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # A generation counter per wake key, bumped on every send seen by this process (and, on
        # PostgreSQL, on every notification); `_epoch` bumps wake every receiver at once.
        self._wakeup = threading.Condition()
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self._closed = False
        self._listener: NotificationListener | DatagramWaker | None = None
        self.directory = wake_directory(engine)
        self._listener_guard = threading.Lock()
        self._session_key = ("speechflow.sqlqueue.wake", id(self))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop listening and wake every waiting receiver (they find the queue closed)."""
        with self._listener_guard:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.wake(None)

    def generation(self, key: str) -> tuple[int, int]:
        with self._wakeup:
            return self._epoch, self._generations.get(key, 0)

    def wait(self, key: str, seen: tuple[int, int], timeout: float) -> None:
        def woken() -> bool:
            return self._closed or (self._epoch, self._generations.get(key, 0)) != seen

        with self._wakeup:
            self._wakeup.wait_for(woken, timeout)

    def wake(self, keys: Iterable[str] | None) -> None:
        """Wake receivers waiting on these keys; None wakes every receiver."""
        with self._wakeup:
            if keys is None:
                self._epoch += 1
            else:
                for key in keys:
                    self._generations[key] = self._generations.get(key, 0) + 1
            self._wakeup.notify_all()

    def notify(self, connection: Connection, keys: Iterable[str]) -> None:
        """PostgreSQL: tell receivers in other processes, on commit."""
        if self._postgres:
            for key in keys:
                connection.execute(sql_select(func.pg_notify(literal(NOTIFY_CHANNEL), literal(key))))

    def announce(self, keys: list[str]) -> None:
        """After a commit: wake this process's receivers, and on SQLite those of the other processes
        sharing the database file (PostgreSQL's NOTIFY, committed with the change, does that there)."""
        self.wake(keys)
        if self.directory is not None:
            broadcast_wake(self.directory, keys)

    def after_commit(self, session: Session, key: str) -> None:
        pending: set[str] | None = session.info.get(self._session_key)
        if pending is None:
            pending = session.info[self._session_key] = set()

            def on_commit(_session: Session) -> None:
                if pending:
                    keys = list(pending)
                    pending.clear()
                    self.announce(keys)

            def on_rollback(_session: Session) -> None:
                pending.clear()

            sa_event.listen(session, "after_commit", on_commit)
            sa_event.listen(session, "after_rollback", on_rollback)
        pending.add(key)

    def listener(self) -> NotificationListener | DatagramWaker | None:
        """Start listening before the first look at the queue, so no wake-up is missed: LISTEN on
        PostgreSQL, a datagram socket beside the other processes' on a SQLite file."""
        if not self._postgres and self.directory is None:
            return None
        with self._listener_guard:
            if self._closed:
                return None
            if self._listener is None:
                if self._postgres:
                    self._listener = NotificationListener(self._engine, self.wake)
                else:
                    assert self.directory is not None
                    self._listener = DatagramWaker(self.directory, self.wake)
                self._listener.start()
            listener = self._listener
        listener.wait_ready(_LISTENER_READY_S)
        return listener


def wake_directory(engine: Engine) -> Path | None:
    """Where the processes sharing one SQLite database file keep their wake-up sockets (a short path:
    UNIX socket paths are limited to about 100 bytes)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    digest = hashlib.sha256(str(Path(database).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"speechflow-wake-{digest}"


def broadcast_wake(directory: Path, keys: list[str]) -> None:
    """One datagram to every receiving process: the wake keys, a line each. Best effort — a receiver
    that misses one looks at the queue anyway within a second."""
    try:
        paths = list(directory.iterdir())
    except FileNotFoundError:
        return
    payload = "\n".join(keys).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in paths:
            try:
                sender.sendto(payload, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)  # its process is gone
            except OSError:
                pass  # its buffer is full: it is awake already


class DatagramWaker:
    """For SQLite, which has no LISTEN: a UNIX datagram socket per process in the database's wake
    directory; senders write the wake keys of what they committed to every socket there."""

    safety_seconds = 1.0

    def __init__(self, directory: Path, wake: Callable[[Iterable[str] | None], None]) -> None:
        self._path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wake = wake
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for attempt in range(3):
            directory.mkdir(mode=0o700, exist_ok=True)
            try:
                self._socket.bind(str(self._path))
                break
            except FileNotFoundError:  # the last receiver of another process removed it just now
                if attempt == 2:
                    raise
        self._stop_reader, self._stop_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="sqlqueue-waker", daemon=True)
        self.healthy = True

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> None:
        """Bound before start: nothing to wait for."""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stop_writer.send(b"x")
        self._thread.join(timeout=5)
        for handle in (self._socket, self._stop_reader, self._stop_writer):
            handle.close()
        self._path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._path.parent.rmdir()  # the last one out; fails harmlessly while others remain

    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self._socket, self._stop_reader], [], [])
            if self._stop_reader in readable:
                return
            try:
                payload = self._socket.recv(65536)
            except OSError:
                continue
            self._wake([key for key in payload.decode(errors="replace").split("\n") if key])


class NotificationListener:
    """A thread holding `LISTEN speechflow_queue` on a dedicated psycopg2 connection; each notification
    (its payload is a wake key) wakes the receivers of this process waiting on that key. If the
    connection breaks it reconnects, and until then `healthy` is False so receivers fall back to
    polling."""

    safety_seconds = _LISTEN_SAFETY_S

    def __init__(self, engine: Engine, wake: Callable[[Iterable[str] | None], None]) -> None:
        self._engine = engine
        self._wake = wake
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._stop_reader, self._stop_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="sqlqueue-listener", daemon=True)
        self.healthy = False

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> None:
        self._ready.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._stop_writer.send(b"x")
        self._thread.join(timeout=5)
        self._stop_reader.close()
        self._stop_writer.close()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            connection: Any = None
            try:
                connection = self._connect()
                self.healthy = True
                backoff = 0.1
                # Anything sent while we were not listening was missed: everyone looks again.
                self._wake(None)
                self._ready.set()
                self._listen(connection)
            except Exception:
                if not self._stop.is_set():
                    log.warning(
                        "queue listener connection failed; receivers poll until it is back",
                        exc_info=True,
                        extra={"action": "queue.listen_failed"},
                    )
            finally:
                self.healthy = False
                self._ready.set()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _connect(self) -> Any:
        """A psycopg2 connection of our own, LISTENing: taken from the engine (same URL and arguments)
        and detached from its pool, so that closing it really closes it."""
        pooled = self._engine.raw_connection()
        driver = pooled.driver_connection
        pooled.detach()
        assert driver is not None
        try:
            driver.rollback()
            driver.autocommit = True
            with driver.cursor() as cursor:
                cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception:
            driver.close()
            raise
        return driver

    def _listen(self, driver: Any) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([driver, self._stop_reader], [], [], _LISTENER_IDLE_PING_S)
            if self._stop_reader in readable:
                return
            if not readable:
                # Idle for a while: make sure the connection is still there.
                with driver.cursor() as cursor:
                    cursor.execute("SELECT 1")
            driver.poll()
            if driver.notifies:
                keys = {notification.payload for notification in driver.notifies}
                driver.notifies.clear()
                self._wake(keys)
