"""Fixtures shared by every tier.

Real services: PostgreSQL is found at TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test)
and a fresh database is created for the session; Azurite is started by tests/support/azurite.py. When a
service is missing its tests skip with the reason — except when SPEECHFLOW_REQUIRE_SERVICES=1 (set by
.ci/run), where a missing service fails the run instead.
"""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.core.config import Settings

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
REQUIRE_SERVICES = os.environ.get("SPEECHFLOW_REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> None:
    """Skip the test, or fail it where the services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except Exception as error:
        service_missing(f"PostgreSQL not reachable at {url}: {error.__class__.__name__}")
    return url


@pytest.fixture(scope="session")
def pg_database_factory(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Creates empty PostgreSQL databases for this test session; drops them all at the end."""
    created: list[str] = []
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")

    def create() -> str:
        name = f"sf_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)

    yield create

    def drop(name: str) -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    # A session makes hundreds of databases and PostgreSQL takes ~0.1 s to drop each; dropped side by
    # side they share the server's waits (measured 0.12 s each one by one, 0.05 s eight at a time).
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(drop, created))
    admin.dispose()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the embedded default under a temporary SPEECHFLOW_HOME, with overrides."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"speechflow_home": tmp_path / "home", "retry_backoff_seconds": 0.05}
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on each backend."""
    from shared.core.db import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'speechflow.db'}"
    else:
        url = request.getfixturevalue("pg_database_factory")()
    migrate(Settings(database_url=url, speechflow_home=tmp_path / "home"))
    return url
