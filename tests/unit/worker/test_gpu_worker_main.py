"""`python -m gpu_worker <component>`: the registry's workers, and `realtime` (the live component)."""

from __future__ import annotations

from typing import Any

import pytest

import gpu_worker.__main__ as entry
from shared.core.config import Settings


def test_realtime_runs_the_live_server(monkeypatch: pytest.MonkeyPatch) -> None:

    import gpu_worker.realtime.server as server

    calls: list[Settings] = []

    def serve(settings: Settings) -> int:
        calls.append(settings)
        return 0

    def no_worker(*args: Any) -> Any:
        raise AssertionError("realtime is not a queue worker")

    monkeypatch.setattr(server, "main", serve)
    monkeypatch.setattr(entry, "worker_for", no_worker)
    settings = Settings()
    assert entry.main(["realtime"], settings=settings) == 0
    assert calls == [settings]


def test_registry_components_still_run_their_worker(monkeypatch: pytest.MonkeyPatch) -> None:

    import gpu_worker.realtime.server as server

    ran: list[str] = []

    class Worker:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def run(self) -> int:
            ran.append(self.kind)
            return 0

    def not_live(settings: Settings) -> int:
        raise AssertionError("whisper is not the live component")

    monkeypatch.setattr(entry, "worker_for", lambda settings, kind: Worker(kind))
    monkeypatch.setattr(server, "main", not_live)
    assert entry.main(["whisper"], settings=Settings()) == 0
    assert ran == ["whisper"]


def test_an_unknown_component_is_refused() -> None:
    with pytest.raises(SystemExit):
        entry.main(["nonsense"], settings=Settings())


def test_the_live_component_is_not_a_registry_component() -> None:
    # `realtime` must not shadow (or be shadowed by) a step's component of the same name.
    from shared.domain.registry import worker_components

    assert entry.REALTIME not in worker_components(Settings())
