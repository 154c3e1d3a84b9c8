"""The live component as the ops dashboard reads it (shared/jobs/live_ops.py): turn latency estimated from the
histogram's buckets, the figures from a /metrics text, and "not running" when it does not answer."""

from __future__ import annotations

import json
import math
import socket

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from shared.core.config import Settings
from shared.jobs import live_ops
from shared.jobs.live_ops import histogram_quantile, live_status_from, parse_live_metrics, read_live_status

INF = math.inf
BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, INF)


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    # 100 turns: 10 under 0.25 s, 60 more under 0.5 s, 25 more under 1 s, 5 over 10 s.
    buckets = [(0.25, 10.0), (0.5, 70.0), (1.0, 95.0), (10.0, 95.0), (INF, 100.0)]
    # rank 50 falls in (0.25, 0.5]: 40 of its 60 turns in → 0.25 + 0.25 · 40/60
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.25 + 0.25 * 40 / 60)
    # rank 95 is the last turn of (0.5, 1]: its upper bound
    assert histogram_quantile(buckets, 0.95) == pytest.approx(1.0)
    # rank 5 falls in the first bucket, counted from 0
    assert histogram_quantile(buckets, 0.05) == pytest.approx(0.125)
    # past the last finite bucket: the highest finite bound, as Prometheus answers
    assert histogram_quantile(buckets, 0.99) == pytest.approx(10.0)


def test_bucket_order_does_not_matter_and_nothing_observed_is_none() -> None:
    buckets = [(INF, 4.0), (1.0, 4.0), (0.5, 2.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.5)
    assert histogram_quantile(buckets, 0.75) == pytest.approx(0.75)
    assert histogram_quantile([(0.5, 0.0), (INF, 0.0)], 0.5) is None
    assert histogram_quantile([], 0.5) is None
    with pytest.raises(ValueError):
        histogram_quantile(buckets, 1.5)


def live_exposition(latencies: list[float], *, sessions: int, audio: float, skipped: int) -> str:
    """The live metrics as prometheus_client writes them (shared/runtime/metrics.py's names and buckets)."""
    registry = CollectorRegistry()
    Gauge("speechflow_live_sessions", "open", registry=registry).set(sessions)
    histogram = Histogram("speechflow_live_turn_latency_seconds", "latency", buckets=BUCKETS, registry=registry)
    for latency in latencies:
        histogram.observe(latency)
    Counter("speechflow_live_audio_seconds", "audio", registry=registry).inc(audio)
    Counter("speechflow_live_partials_skipped", "skipped", registry=registry).inc(skipped)
    Counter("speechflow_jobs_created", "unrelated", registry=registry).inc(7)
    return generate_latest(registry).decode()


def test_the_live_figures_are_read_from_a_metrics_text() -> None:
    # 20 turns: 10 in (0.25, 0.5], 9 in (0.5, 0.75], 1 in (2, 3]
    text = live_exposition([0.4] * 10 + [0.6] * 9 + [2.5], sessions=3, audio=61.5, skipped=4)
    figures = parse_live_metrics(text)
    assert figures.sessions == 3
    assert figures.turns == 20
    assert figures.turn_latency_p50 == pytest.approx(0.5)  # rank 10: the last of (0.25, 0.5]
    assert figures.turn_latency_p95 == pytest.approx(0.75)  # rank 19: the last of (0.5, 0.75]
    assert figures.audio_seconds == pytest.approx(61.5)
    assert figures.partials_skipped == 4


def test_a_metrics_text_without_the_live_metrics_has_none_of_them() -> None:
    figures = parse_live_metrics("# TYPE other_total counter\nother_total 3.0\n")
    assert figures == live_ops.LiveMetrics()
    no_turns = parse_live_metrics(live_exposition([], sessions=0, audio=0, skipped=0))
    assert no_turns.turns == 0 and no_turns.turn_latency_p50 is None and no_turns.turn_latency_p95 is None


def test_ready_and_metrics_bodies_make_the_status() -> None:
    ready = json.dumps({"status": "ok", "sessions": 2, "max_sessions": 8}).encode()
    status = live_status_from(ready, live_exposition([0.3], sessions=2, audio=5, skipped=0))
    assert status.running and status.capacity == "2 / 8"
    assert status.metrics is not None and status.metrics.turns == 1
    answered_without_metrics = live_status_from(ready, "this is { not prometheus")
    assert answered_without_metrics.running and answered_without_metrics.metrics is None
    assert live_status_from(b"<html>", None).capacity == "not running"
    assert live_status_from(None, None, reason="refused").reason == "refused"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_absent_live_component_is_not_running() -> None:
    settings = Settings(realtime_host="127.0.0.1", realtime_port=free_port())
    status = read_live_status(settings, timeout=0.5)
    assert not status.running
    assert status.capacity == "not running"
    assert status.metrics is None
    assert status.reason and f":{settings.realtime_port}" in status.reason


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:7072"), ("0.0.0.0", "http://127.0.0.1:7072"), ("::", "http://[::1]:7072")],
)
def test_a_wildcard_bind_address_is_read_as_this_machine(host: str, url: str) -> None:
    assert live_ops.live_base_url(Settings(realtime_host=host, realtime_port=7072)) == url
