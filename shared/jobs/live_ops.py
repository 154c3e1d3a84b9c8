"""The live component (gpu_worker/realtime) as the ops dashboard sees it: its /ready (sessions open now,
capacity) and its /metrics (turn latency, audio received, partials skipped), read over plain HTTP on
REALTIME_HOST:REALTIME_PORT with a short timeout. Parsing and estimation are pure functions; only
`read_live_status` does I/O, and a component that does not answer is "not running", never an error.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from shared.core.config import Settings

SESSIONS = "speechflow_live_sessions"
TURN_LATENCY = "speechflow_live_turn_latency_seconds"
AUDIO_SECONDS = "speechflow_live_audio_seconds"
PARTIALS_SKIPPED = "speechflow_live_partials_skipped"
PROBE_TIMEOUT_SECONDS = 1.0
MAX_BODY_BYTES = 4 * 1024 * 1024
NOT_RUNNING = "not running"


def histogram_quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """The q-quantile estimated from cumulative histogram buckets (upper bound, count ≤ bound), as
    Prometheus' histogram_quantile does: linear within the bucket it falls in, from 0 for the first
    bucket; in the +Inf bucket, the highest finite bound. None when nothing was observed."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], not {q}")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                finite = [b for b, _ in ordered if not math.isinf(b)]
                return finite[-1] if finite else None
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class LiveMetrics:
    """What the live component's /metrics says (each None where it does not carry the metric)."""

    sessions: float | None = None
    turns: int = 0
    """Turns whose latency was observed (the histogram's count)."""
    turn_latency_p50: float | None = None
    turn_latency_p95: float | None = None
    audio_seconds: float | None = None
    partials_skipped: float | None = None


def parse_live_metrics(text: str) -> LiveMetrics:
    """The live figures from a Prometheus text exposition; other metrics are ignored."""
    sessions: float | None = None
    audio: float | None = None
    skipped: float | None = None
    buckets: dict[float, float] = {}
    turns = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SESSIONS:
                sessions = (sessions or 0.0) + sample.value
            elif sample.name in (AUDIO_SECONDS, f"{AUDIO_SECONDS}_total"):
                audio = (audio or 0.0) + sample.value
            elif sample.name in (PARTIALS_SKIPPED, f"{PARTIALS_SKIPPED}_total"):
                skipped = (skipped or 0.0) + sample.value
            elif sample.name == f"{TURN_LATENCY}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == f"{TURN_LATENCY}_count":
                turns += int(sample.value)
    pairs = sorted(buckets.items())
    return LiveMetrics(
        sessions=sessions,
        turns=turns,
        turn_latency_p50=histogram_quantile(pairs, 0.5),
        turn_latency_p95=histogram_quantile(pairs, 0.95),
        audio_seconds=audio,
        partials_skipped=skipped,
    )


@dataclass(frozen=True)
class LiveStatus:
    """The live component now: running (it answered /ready) or not, with what it said."""

    running: bool
    sessions: int | None = None
    max_sessions: int | None = None
    metrics: LiveMetrics | None = None
    """None when /metrics did not answer or could not be read."""
    reason: str | None = None
    """Why it counts as not running (for a caption)."""

    @property
    def capacity(self) -> str:
        """Sessions open of the most it holds ("3 / 8"), or "not running"."""
        if not self.running:
            return NOT_RUNNING
        held = "?" if self.sessions is None else str(self.sessions)
        most = "?" if self.max_sessions is None else str(self.max_sessions)
        return f"{held} / {most}"


def live_status_from(ready: bytes | None, metrics: str | None, *, reason: str | None = None) -> LiveStatus:
    """The status from the bodies of /ready and /metrics (None for one that did not answer)."""
    if ready is None:
        return LiveStatus(running=False, reason=reason or "no answer")
    try:
        answer: Any = json.loads(ready)
    except ValueError:
        return LiveStatus(running=False, reason="/ready did not answer JSON")
    if not isinstance(answer, dict):
        return LiveStatus(running=False, reason="/ready did not answer a JSON object")
    parsed: LiveMetrics | None = None
    if metrics is not None:
        try:
            parsed = parse_live_metrics(metrics)
        except (ValueError, KeyError, TypeError):
            parsed = None
    return LiveStatus(
        running=True,
        sessions=_int(answer.get("sessions")),
        max_sessions=_int(answer.get("max_sessions")),
        metrics=parsed,
    )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def live_base_url(settings: Settings) -> str:
    """http://REALTIME_HOST:REALTIME_PORT, a wildcard bind address read as this machine."""
    host = settings.realtime_host
    if host in ("", "0.0.0.0"):  # noqa: S104 (a bind address, read as where to connect)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.realtime_port}"


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http to the configured host)
        body: bytes = response.read(MAX_BODY_BYTES)
        return body


def read_live_status(settings: Settings, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> LiveStatus:
    """Ask the live component's /ready and /metrics; "not running" if /ready does not answer in time."""
    base = live_base_url(settings)
    try:
        ready = _get(f"{base}/ready", timeout)
    except (OSError, urllib.error.URLError, ValueError) as error:
        return live_status_from(None, None, reason=f"{base} did not answer ({error.__class__.__name__})")
    try:
        metrics: str | None = _get(f"{base}/metrics", timeout).decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError, ValueError):
        metrics = None
    return live_status_from(ready, metrics)
