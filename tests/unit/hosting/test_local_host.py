"""The local host: its own API key for the embedded default, and a probe port per worker."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.core.config import local_api_key
from shared.hosting.host import ensure_local_api_key


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
    from shared.hosting.host import Supervisor

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


BAD_SETTINGS = [
    ({"RESULT_RETENTION_SECONDS": "40"}, "RESULT_RETENTION_SECONDS=40: Input should be greater than or equal to 60"),
    ({"WHISPER_DEVICE": "tpu"}, "WHISPER_DEVICE=tpu: Input should be 'auto', 'cpu' or 'cuda'"),
    ({"API_PORT": "http"}, "API_PORT=http: Input should be a valid integer, unable to parse string as an integer"),
    ({"DASHBOARD_PORT": "70000"}, "DASHBOARD_PORT=70000: Input should be less than or equal to 65535"),
]


@pytest.mark.parametrize(("environment", "line"), BAD_SETTINGS)
@pytest.mark.parametrize("entry", [["shared.hosting", "up"], ["gpu_worker", "whisper"]])
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, environment: dict[str, str], line: str, entry: list[str]
) -> None:
    env = {**os.environ, "SPEECHFLOW_HOME": str(tmp_path), **environment}
    result = subprocess.run(
        [sys.executable, "-m", *entry], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"speechflow: bad setting {line}"]
    assert not (tmp_path / "speechflow.db").exists()  # stopped before touching anything


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something is listening on (another stack, say), on 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_make_up_with_a_port_in_use_stops_with_one_line_before_touching_anything(
    tmp_path: Path, taken_port: int
) -> None:
    # As when `make up` runs while a stack is already up: the API's port is taken, the others are free.
    ports = {"REALTIME_PORT": str(free_port()), "DASHBOARD_PORT": str(free_port()), "HEALTH_PORT": "0"}
    env = {**os.environ, "SPEECHFLOW_HOME": str(tmp_path), "API_PORT": str(taken_port), **ports}
    result = subprocess.run(
        [sys.executable, "-m", "shared.hosting", "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"speechflow: port {taken_port} on 127.0.0.1 (API_PORT, the API) is in use: is SpeechFlow already running?"
        " Stop it, or set API_PORT to a free port"
    ]
    assert not (tmp_path / "speechflow.db").exists()


def test_every_server_port_is_checked_and_one_coming_free_is_waited_for(make_settings, taken_port: int) -> None:
    from shared.hosting.supervisor import PortInUse, Supervisor

    settings = make_settings(api_port=free_port(), realtime_port=free_port(), dashboard_port=taken_port)
    supervisor = Supervisor(settings, ["api", "router", "whisper", "realtime", "dashboard"])
    listeners = {(listener.setting, listener.port) for listener in supervisor.listeners()}
    assert listeners == {
        ("API_PORT", settings.api_port),
        ("REALTIME_PORT", settings.realtime_port),
        ("DASHBOARD_PORT", taken_port),
    }
    with pytest.raises(PortInUse, match=f"port {taken_port} on 127.0.0.1 \\(DASHBOARD_PORT, the dashboard\\)"):
        supervisor.check_ports(patience=0.3)
    assert all(child.process is None for child in supervisor.children)  # nothing started

    # A stack stopped a moment ago lets go of its port: start-up waits for that rather than refusing.
    settings = make_settings(api_port=free_port(), dashboard_port=free_port())
    holder = socket.socket()
    holder.bind(("127.0.0.1", settings.api_port))
    holder.listen()
    threading.Timer(0.5, holder.close).start()
    Supervisor(settings, ["api", "dashboard"]).check_ports(patience=5.0)


def test_a_setting_that_may_hold_a_secret_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.core.config import Settings, describe_invalid_settings

    with pytest.raises(ValidationError) as caught:
        Settings(environment="production", signing_key=SecretStr("changeme"))
    line = describe_invalid_settings(caught.value)
    assert "changeme" not in line and line.startswith("bad setting ")
    assert "\n" not in line


@pytest.mark.parametrize(
    ("cores", "memory_gib", "overrides", "expected"),
    [
        (2, 24, {}, (2, 1)),  # the measured machine: 2 × 1 beat 1 × 2
        (8, 64, {}, (8, 1)),
        (8, 4, {}, (1, 8)),  # memory holds one worker: it gets every core
        (16, 8, {}, (3, 5)),
        (1, 24, {}, (1, 1)),
        (2, 24, {"workers": 1}, (1, 2)),
        (2, 24, {"workers": 1, "cpu_threads": 1}, (1, 1)),
        (4, 24, {"cpu_threads": 2}, (4, 2)),
        (8, 64, {"model": "large-v3"}, (8, 1)),
        (8, 16, {"model": "large-v3"}, (2, 4)),
        (8, 64, {"device": "cuda", "compute_type": "float16"}, (1, 8)),
    ],
)
def test_the_transcription_workers_are_laid_out_from_the_machine(
    make_settings, cores: int, memory_gib: int, overrides: dict[str, object], expected: tuple[int, int]
) -> None:
    from shared.core.config import WhisperSettings
    from shared.hosting.supervisor import GIB, whisper_layout

    settings = make_settings(whisper=WhisperSettings(**overrides))
    layout = whisper_layout(settings, cores=cores, memory=memory_gib * GIB)

    assert (layout.workers, layout.threads) == expected
    assert layout.reason


def test_the_supervisor_starts_the_laid_out_workers_with_their_threads(make_settings, monkeypatch) -> None:
    from shared.hosting import supervisor

    monkeypatch.setattr(supervisor, "machine_cores", lambda: 4)
    monkeypatch.setattr(supervisor, "machine_memory", lambda: 32 * supervisor.GIB)
    started: list[tuple[str, str | None]] = []

    class Recorded:
        pid = 1

    def popen(argv: list[str], env: dict[str, str]) -> Recorded:
        started.append((argv[-1], env.get("WHISPER_CPU_THREADS")))
        return Recorded()

    monkeypatch.setattr(supervisor.subprocess, "Popen", popen)
    stack = supervisor.Supervisor(make_settings(health_port=0), ["api", "whisper"], env={})
    for child in stack.children:
        stack.start(child)

    assert [child.name for child in stack.children] == ["api", "whisper", "whisper-2", "whisper-3", "whisper-4"]
    assert started == [("api", None)] + [("whisper", "1")] * 4


def test_the_dashboard_binds_where_the_api_does_never_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20.9: Streamlit listened on *:8501 while the API bound 127.0.0.1."""
    from shared.core.config import Settings
    from shared.hosting import host

    started: list[list[str]] = []
    monkeypatch.setattr(host.os, "execve", lambda _path, argv, _env: started.append(list(argv)))
    for api_host in ("127.0.0.1", "10.1.2.3"):
        host.run_dashboard(Settings(api_host=api_host))
        argv = started[-1]
        assert argv[argv.index("--server.address") + 1] == api_host
