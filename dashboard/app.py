"""SpeechFlow ops dashboard (Streamlit): `streamlit run dashboard/app.py`, started by `make up` on :8501.

Views: overview (job statistics, status breakdown), queues (depth per queue with dead letters, over
time), steps (throughput and latency per step type), jobs (recent jobs with filters) and a job's
drill-down (steps, retries, errors, timings, transcript preview, audio player). Everything is read
through shared.jobs.ops and the bus adapter; the page holds no SQL. The live parts refresh themselves.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from shared.core.config import Settings, local_api_key
from shared.domain.status import JOB_STATUSES
from shared.domain.workflow import WORKFLOW_TYPES
from shared.jobs import live_ops, ops
from shared.runtime import Runtime

VIEWS = ("Overview", "Queues", "Steps", "Jobs", "Job detail")
STATUS_ICONS = {
    "pending_upload": "⚪",
    "queued": "🔵",
    "processing": "🟡",
    "completed": "🟢",
    "partial_complete": "🟠",
    "failed": "🔴",
    "cancelled": "⚫",
    "pending": "🔵",
}
WINDOWS = {"1 hour": timedelta(hours=1), "24 hours": timedelta(hours=24), "7 days": timedelta(days=7)}
MAX_QUEUE_SAMPLES = 720


@st.cache_resource(show_spinner=False)
def _runtime_for(settings_key: str) -> Runtime:
    """One Runtime (engine, bus, blob store) per configuration, shared by every session of this server."""
    del settings_key  # the cache key: a different configuration gets its own connections
    return Runtime(Settings())


def runtime() -> Runtime:
    return _runtime_for(Settings().model_dump_json())


def status_label(status: str) -> str:
    return f"{STATUS_ICONS.get(status, '❔')} {status}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _latency(value: float | None) -> str:
    """Sub-second latencies with two decimals (a live turn's 0.35 s is not 0.3 s)."""
    return "–" if value is None else f"{value:.2f} s" if value < 10 else _seconds(value)


# --- views


def overview_view(window: timedelta) -> None:
    with runtime().sessions() as session:
        stats = ops.job_stats(session=session, window=window)
    st.subheader("Jobs")
    total, active, created, finished, turnaround = st.columns(5)
    total.metric("Total jobs", stats.total)
    active.metric("Active (queued + processing)", stats.active)
    created.metric("Created in window", stats.created_in_window)
    finished.metric("Finished in window", stats.finished_in_window)
    turnaround.metric("Mean turnaround", _seconds(stats.mean_turnaround_seconds))
    st.subheader("Status breakdown")
    frame = pd.DataFrame(
        {"status": [status_label(s) for s in stats.by_status], "jobs": list(stats.by_status.values())}
    ).set_index("status")
    st.bar_chart(frame, y="jobs", horizontal=True)
    st.dataframe(frame, width="stretch")
    usage_section(window)
    live_section(window)
    retention_section()


def usage_section(window: timedelta) -> None:
    """Usage and estimated cost of the jobs created in the window (shared/domain/usage.py)."""
    rt = runtime()
    with rt.sessions() as session:
        usage = ops.usage_since(session=session, settings=rt.settings, since=datetime.now(UTC) - window)
    shown = usage.as_dict()
    st.subheader("Usage (jobs created in window)")
    audio, compute, tokens, cost = st.columns(4)
    audio.metric("Audio", _seconds(usage.audio_seconds))
    compute.metric("Compute", _seconds(usage.compute_seconds))
    tokens.metric("LLM tokens in / out", f"{usage.input_tokens} / {usage.output_tokens}")
    cost.metric("Estimated cost", f"{shown['estimated_cost']['amount']:.4f} {shown['estimated_cost']['currency']}")
    if shown["steps"]:
        st.dataframe(pd.DataFrame(shown["steps"]), width="stretch", hide_index=True)


def live_section(window: timedelta) -> None:
    """Live transcription: the live component now (its /ready and /metrics, shared/jobs/live_ops.py) and the
    live sessions recorded as jobs in the window."""
    rt = runtime()
    status = live_ops.read_live_status(rt.settings)
    with rt.sessions() as session:
        jobs = ops.live_jobs_since(session=session, since=datetime.now(UTC) - window)
    st.subheader("Live transcription")
    metrics = status.metrics or live_ops.LiveMetrics()
    open_now, p50, p95, audio, skipped = st.columns(5)
    open_now.metric("Live sessions open / capacity", status.capacity)
    p50.metric("Turn latency p50", _latency(metrics.turn_latency_p50))
    p95.metric("Turn latency p95", _latency(metrics.turn_latency_p95))
    audio.metric("Live audio received", _seconds(metrics.audio_seconds))
    skipped.metric("Partials skipped", "–" if metrics.partials_skipped is None else f"{metrics.partials_skipped:.0f}")
    if not status.running:
        st.caption(f"The live component is not running: {status.reason}.")
    elif status.metrics is None:
        st.caption("The live component answered /ready but not /metrics.")
    else:
        st.caption(
            f"Since the live component started; latency over {metrics.turns} turns (commit → transcript),"
            " estimated from the histogram's buckets."
        )
    count, minutes, recovered = st.columns(3)
    count.metric("Live jobs in window", jobs.count)
    minutes.metric("Live audio in window", f"{jobs.audio_seconds / 60:.1f} min")
    recovered.metric("Recovered after a crash", jobs.recovered)


def retention_section() -> None:
    """What the retention pass has to do (shared/jobs/retention.py): audio and purges due, and done."""
    rt = runtime()
    with rt.sessions() as session:
        status = ops.retention_status(session=session, settings=rt.settings)
    st.subheader("Data retention")
    audio_due, purge_due, audio_deleted, purged = st.columns(4)
    audio_due.metric("Audio due for deletion", status.audio_due)
    purge_due.metric("Jobs due for purge", status.purge_due)
    audio_deleted.metric("Audio deleted", status.audio_deleted)
    purged.metric("Jobs purged", status.purged)
    st.caption(
        f"Audio kept {_seconds(rt.settings.audio_retention_seconds)}, results"
        f" {_seconds(rt.settings.result_retention_seconds)} after a job ends; checked every"
        f" {_seconds(rt.settings.purge_interval_seconds)}."
    )


def queues_view() -> None:
    depths = runtime().bus.queue_depths()
    now = datetime.now(UTC)
    samples: list[dict[str, Any]] = st.session_state.setdefault("queue_samples", [])
    for queue, depth in depths.items():
        samples.append(
            {
                "time": now,
                "queue": queue,
                "active": depth.active,
                "scheduled": depth.scheduled,
                "dead_letter": depth.dead_letter,
            }
        )
    del samples[: max(0, len(samples) - MAX_QUEUE_SAMPLES)]
    st.subheader("Queue depth now")
    current = pd.DataFrame(
        [
            {"queue": q, "active": d.active, "scheduled": d.scheduled, "dead_letter": d.dead_letter}
            for q, d in depths.items()
        ]
    ).set_index("queue")
    st.dataframe(current, width="stretch")
    st.bar_chart(current, stack=True)
    dead = {queue: depth.dead_letter for queue, depth in depths.items() if depth.dead_letter}
    if dead:
        st.error("Dead letters: " + ", ".join(f"{queue} ({count})" for queue, count in dead.items()))
    st.subheader("Depth over time (this browser session)")
    history = pd.DataFrame(samples)
    history["waiting"] = history["active"] + history["scheduled"]
    st.line_chart(history.pivot_table(index="time", columns="queue", values="waiting", aggfunc="last"))
    st.caption("Dead letters over time")
    st.line_chart(history.pivot_table(index="time", columns="queue", values="dead_letter", aggfunc="last"))


def steps_view(window: timedelta) -> None:
    with runtime().sessions() as session:
        stats = ops.step_stats(session=session, window=window)
    frame = pd.DataFrame(
        [
            {
                "step_type": s.step_type,
                "completed": s.completed,
                "failed": s.failed,
                "processing": s.processing,
                "retries": s.retries,
                "per_minute": round(s.per_minute, 3),
                "p50_s": s.p50_seconds,
                "p95_s": s.p95_seconds,
                "mean_s": s.mean_seconds,
                "audio_s": round(s.audio_seconds, 1),
            }
            for s in stats
        ]
    ).set_index("step_type")
    st.subheader("Throughput per step type (completed per minute)")
    st.bar_chart(frame, y="per_minute")
    st.subheader("Latency per step type (seconds, started → completed)")
    st.bar_chart(frame[["p50_s", "p95_s"]].fillna(0.0), stack=False)
    st.dataframe(frame, width="stretch")


def jobs_view(filters: ops.JobFilter, limit: int) -> None:
    with runtime().sessions() as session:
        rows = ops.recent_jobs(session=session, filters=filters, limit=limit)
    st.subheader(f"Recent jobs ({len(rows)})")
    if not rows:
        st.info("No jobs match these filters.")
        return
    frame = pd.DataFrame(
        [
            {
                "job_id": str(row.job_id),
                "status": status_label(row.status),
                "workflow": row.workflow_type,
                "file": row.audio_filename,
                "language": row.language or "",
                "steps": f"{row.steps_done}/{row.steps_total}",
                "retries": row.retries,
                "duration": _seconds(row.duration_seconds),
                "created": row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                "error": row.error_message or "",
            }
            for row in rows
        ]
    )
    st.dataframe(frame, width="stretch", hide_index=True)


def job_detail_view(job_id_text: str) -> None:
    if not job_id_text.strip():
        st.info("Enter a job id (or pick one from the sidebar) to see its steps.")
        return
    try:
        job_id = uuid.UUID(job_id_text.strip())
    except ValueError:
        st.error(f"Not a job id: {job_id_text}")
        return
    rt = runtime()
    with rt.sessions() as session:
        detail = ops.job_detail(session=session, job_id=job_id)
    if detail is None:
        st.warning(f"Job {job_id} not found.")
        return
    st.subheader(f"Job {detail.job_id}")
    status, workflow, language, duration = st.columns(4)
    status.metric("Status", status_label(detail.status))
    workflow.metric("Workflow", detail.workflow_type)
    language.metric("Language", detail.detected_language or detail.source_language or "–")
    duration.metric("Audio", _seconds(detail.audio_duration_seconds))
    if detail.error_message:
        st.error(detail.error_message)
    st.caption(
        f"file {detail.audio_filename} · created {detail.created_at:%Y-%m-%d %H:%M:%S} · "
        f"updated {detail.updated_at:%Y-%m-%d %H:%M:%S}"
        + (f" · finished {detail.completed_at:%Y-%m-%d %H:%M:%S}" if detail.completed_at else "")
    )
    st.markdown("**Steps**")
    steps = pd.DataFrame(
        [
            {
                "step": step.step_type,
                "status": status_label(step.status),
                "retries": step.retry_count,
                "attempts": step.attempt,
                "worker": step.worker_id or "",
                "started": step.started_at.strftime("%H:%M:%S") if step.started_at else "",
                "took": _seconds(step.duration_seconds),
                "progress": step.progress,
                "error": step.error_message or "",
            }
            for step in detail.steps
        ]
    )
    if steps.empty:
        st.info("No steps yet.")
    else:
        st.dataframe(steps, width="stretch", hide_index=True)
    for step in detail.steps:
        if step.details:
            with st.expander(f"{step.step_type} details"):
                st.json(step.details)
    speakers = ops.job_speakers(runtime=rt, job_id=detail.job_id)
    if speakers:
        st.markdown("**Speakers**")
        st.dataframe(
            pd.DataFrame(
                [
                    {"speaker": s.speaker, "talk time (s)": round(s.talk_seconds, 1), "channel": s.channel}
                    for s in speakers
                ]
            ),
            hide_index=True,
        )
    transcript = ops.transcript_preview(runtime=rt, job_id=detail.job_id)
    st.markdown("**Transcript preview**")
    if transcript:
        st.text(transcript)
    else:
        st.caption("No transcript yet.")
    audio = ops.uploaded_audio(runtime=rt, detail=detail)
    if audio is not None:
        st.markdown("**Uploaded audio**")
        st.audio(audio)


# --- the page


def sidebar() -> dict[str, Any]:
    st.sidebar.title("SpeechFlow ops")
    params = st.query_params
    default_view = params.get("view", "Overview")
    start_at = VIEWS.index(default_view) if default_view in VIEWS else 0
    view = st.sidebar.radio("View", VIEWS, index=start_at, key="view")
    window_name = st.sidebar.selectbox("Time window", list(WINDOWS), index=1, key="window")
    st.sidebar.markdown("**Job filters**")
    status = st.sidebar.selectbox("Status", ["all", *JOB_STATUSES], key="status_filter")
    workflow = st.sidebar.selectbox("Workflow", ["all", *WORKFLOW_TYPES], key="workflow_filter")
    search = st.sidebar.text_input("Search (job id or file name)", key="search")
    limit = st.sidebar.slider("Rows", 10, 500, 100, step=10, key="limit")
    job_id = st.sidebar.text_input("Job id for the detail view", value=params.get("job", ""), key="job_id")
    refresh = st.sidebar.toggle("Auto-refresh", value=True, key="auto_refresh")
    every = st.sidebar.number_input("Every (seconds)", 2, 300, 5, key="refresh_seconds")
    window = WINDOWS[window_name]
    filters = ops.JobFilter(
        status=None if status == "all" else status,
        workflow_type=None if workflow == "all" else workflow,
        search=search or None,
        since=datetime.now(UTC) - window,
    )
    return {
        "view": view,
        "window": window,
        "filters": filters,
        "limit": limit,
        "job_id": job_id,
        "run_every": timedelta(seconds=int(every)) if refresh else None,
    }


def render(choice: dict[str, Any]) -> None:
    view = choice["view"]
    if view == "Overview":
        overview_view(choice["window"])
    elif view == "Queues":
        queues_view()
    elif view == "Steps":
        steps_view(choice["window"])
    elif view == "Jobs":
        jobs_view(choice["filters"], choice["limit"])
    else:
        job_detail_view(choice["job_id"])
    st.caption(f"Updated {datetime.now(UTC):%H:%M:%S} UTC")


def operator_key(settings: Settings) -> str | None:
    """DASHBOARD_OPERATOR_KEY, or else the stack's bootstrap API key (SPEECHFLOW_API_KEY, or the one
    `make up` keeps under SPEECHFLOW_HOME): whoever holds it may already read every job."""
    for secret in (settings.operator_key, settings.api_key):
        if secret is not None and secret.get_secret_value():
            return secret.get_secret_value()
    return local_api_key(settings)


def signed_in() -> bool:
    """The operator sign-in: the page shows nothing else until the operator key is given (docs/SECURITY.md)."""
    if st.session_state.get("operator_signed_in"):
        return True
    expected = operator_key(Settings())
    st.title("SpeechFlow ops")
    if expected is None:
        st.error("No operator key is configured: set DASHBOARD_OPERATOR_KEY (or SPEECHFLOW_API_KEY).")
        return False
    with st.form("sign_in"):
        given = st.text_input("Operator key", type="password", key="operator_key_input")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if hmac.compare_digest(given.encode(), expected.encode()):
            st.session_state["operator_signed_in"] = True
            st.session_state.pop("operator_key_input", None)
            st.rerun()
        st.error("That is not the operator key.")
    return False


def main() -> None:
    st.set_page_config(page_title="SpeechFlow ops", page_icon="🎙️", layout="wide")
    if not signed_in():
        st.stop()
    choice = sidebar()
    st.title(choice["view"])

    @st.fragment(run_every=choice["run_every"])
    def live() -> None:
        render(choice)

    live()


main()
