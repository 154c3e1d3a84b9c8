"""The local host: its own API key for the embedded default, and a probe port per worker."""

from __future__ import annotations

import stat

from shared.config import local_api_key
from shared.host import ensure_local_api_key


def test_the_local_key_is_made_once_private_and_found_again(make_settings) -> None:
    settings = make_settings()
    assert local_api_key(settings) is None
    key = ensure_local_api_key(settings)
    assert key.startswith("sfk_local_") and len(key) > 40
    path = settings.speechflow_home / "api.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_local_api_key(settings) == key
    assert local_api_key(settings) == key


def test_each_worker_on_one_machine_gets_its_own_probe_port(make_settings) -> None:
    from shared.host import Supervisor

    settings = make_settings(health_port=9100)
    settings.whisper.workers = 2
    supervisor = Supervisor(settings, ["api", "router", "lid", "whisper"])
    ports = {child.name: child.health_port for child in supervisor.children}
    assert ports == {"api": None, "router": None, "lid": 9100, "whisper": 9101, "whisper-2": 9102}


def test_azure_ai_consumer_runs_one_thread_on_sqlite_and_four_on_postgresql(make_settings) -> None:
    sqlite = make_settings()
    postgres = make_settings(database_url="postgresql://postgres@db/speechflow")
    assert sqlite.concurrency(sqlite.azure_ai_concurrency) == 1
    assert postgres.concurrency(postgres.azure_ai_concurrency) == 4
    assert sqlite.concurrency(3) == 3
    assert postgres.router_concurrency == 1
