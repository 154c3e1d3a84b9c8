"""Engine, sessions and migrations for the JobStore (SQLite for the embedded default, PostgreSQL
for everything else)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from shared.core.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.speechflow_home.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _tune_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    return create_engine(url, **kwargs)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Our own BEGIN IMMEDIATE below: pysqlite's implicit transactions would take the write lock
        # late and deadlock two writers that both read first.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # A purge (shared/jobs/retention.py) must leave no transcript text in the file: freed and overwritten
        # content is zeroed instead of lingering in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any error."""
    with sessions() as session, session.begin():
        yield session


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(settings: Settings) -> None:
    """Bring the database to the newest schema (`alembic upgrade head`)."""
    from alembic import command

    if settings.effective_database_url.startswith("sqlite"):
        settings.speechflow_home.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.effective_database_url), "head")


def schema_sql() -> str:
    """The PostgreSQL DDL the migrations run (`alembic upgrade head --sql`), as kept in
    infra/database/schema.sql."""
    import io

    from alembic import command

    buffer = io.StringIO()
    config = alembic_config("postgresql+psycopg2://schema@localhost/schema")
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    lines = [
        line.rstrip() for line in buffer.getvalue().replace(" RETURNING alembic_version.version_num", "").splitlines()
    ]
    header = [
        "-- SpeechFlow database schema (PostgreSQL). Generated from the Alembic migrations (migrations/) with",
        "-- `make schema`; tests/integration/core/test_schema.py checks that it equals what the migrations create.",
        "-- Applying it leaves the database at Alembic head, so later migrations apply on top.",
        "",
    ]
    return "\n".join(header + lines).rstrip() + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["schema"]:
        sys.exit("usage: python -m shared.core.db schema")
    sys.stdout.write(schema_sql())
