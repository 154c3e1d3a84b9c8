"""infra/database/schema.sql equals what the Alembic migrations create, on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from shared.core.config import Settings
from shared.core.db import migrate, schema_sql
from shared.domain.models import Base

SCHEMA_SQL = Path(__file__).resolve().parents[3] / "infra" / "database" / "schema.sql"
pytestmark = pytest.mark.postgres


def describe(url: str) -> dict[str, Any]:
    """Every table's columns (type, nullability, default), keys, uniques and indexes."""
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        shape: dict[str, Any] = {}
        for table in sorted(inspector.get_table_names()):
            shape[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table),
                "foreign_keys": sorted(str(fk) for fk in inspector.get_foreign_keys(table)),
                "unique": sorted(str(u) for u in inspector.get_unique_constraints(table)),
                "indexes": sorted(str(i) for i in inspector.get_indexes(table)),
            }
        with engine.connect() as connection:
            shape["alembic_version"] = connection.execute(text("select version_num from alembic_version")).all()
        return shape
    finally:
        engine.dispose()


def test_schema_sql_equals_the_migrations(pg_database_factory, tmp_path: Path) -> None:
    migrated = pg_database_factory()
    migrate(Settings(database_url=migrated, speechflow_home=tmp_path))

    from_file = pg_database_factory()
    engine = create_engine(from_file, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(SCHEMA_SQL.read_text())
    engine.dispose()

    assert describe(from_file) == describe(migrated)


def test_schema_sql_is_regenerated_from_the_migrations() -> None:
    assert SCHEMA_SQL.read_text() == schema_sql(), "run `make schema`"


def test_migrations_match_the_models(pg_database_factory, tmp_path: Path) -> None:
    """No model change is missing a migration (what `alembic revision --autogenerate` would find)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = pg_database_factory()
    migrate(Settings(database_url=url, speechflow_home=tmp_path))
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_seed_columns_are_all_kept(pg_database_factory, tmp_path: Path) -> None:
    url = pg_database_factory()
    migrate(Settings(database_url=url, speechflow_home=tmp_path))
    inspector = inspect(create_engine(url))
    jobs = {c["name"] for c in inspector.get_columns("jobs")}
    steps = {c["name"] for c in inspector.get_columns("processing_steps")}
    assert {
        "id",
        "audio_filename",
        "workflow_type",
        "source_language",
        "target_language",
        "callback_url",
        "status",
        "created_at",
        "updated_at",
    } <= jobs
    assert {
        "id",
        "job_id",
        "step_type",
        "status",
        "worker_id",
        "started_at",
        "completed_at",
        "result_blob_path",
        "error_message",
        "retry_count",
        "created_at",
    } <= steps
    assert {"idx_jobs_status"} <= {i["name"] for i in inspector.get_indexes("jobs")}
    assert {"idx_steps_job_id", "idx_steps_status"} <= {i["name"] for i in inspector.get_indexes("processing_steps")}
