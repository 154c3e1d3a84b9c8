"""Usage and estimated cost from step details (shared/domain/usage.py), and the counters a completed step adds."""

from __future__ import annotations

import pytest

from shared.core.config import Settings
from shared.domain.usage import Rates, device_of, job_usage, step_usage, total_usage
from shared.runtime import metrics

RATES = Rates(gpu_per_second=0.001, cpu_per_second=0.0001, per_1k_input_tokens=0.002, per_1k_output_tokens=0.008)

FULL_PIPELINE = [
    ("LID", {"backend": "whisper", "device": "cpu", "processing_seconds": 1.5, "audio_duration_seconds": 60.0}),
    ("TRANSCRIBE", {"model": "large-v3", "device": "cuda", "processing_seconds": 12.25, "model_seconds": 11.0}),
    (
        "TRANSLATE",
        {
            "engine": "azure-openai",
            "model": "gpt-4.1",
            "usage": {"requests": 2, "prompt_tokens": 1500, "completion_tokens": 700, "total_tokens": 2200},
            "processing_seconds": 3.0,
        },
    ),
    (
        "SUMMARIZE",
        {
            "engine": "azure-openai",
            "model": "gpt-4.1",
            "usage": {"requests": 1, "prompt_tokens": 500, "completion_tokens": 300, "total_tokens": 800},
            "processing_seconds": 2.0,
        },
    ),
]


def test_a_full_pipeline_sums_compute_tokens_and_cost() -> None:
    usage = job_usage(audio_seconds=60.0, steps=FULL_PIPELINE, rates=RATES)
    shown = usage.as_dict()
    assert shown["audio_seconds"] == 60.0
    assert shown["compute_seconds"] == 18.75
    assert [(s["step_type"], s["device"]) for s in shown["steps"]] == [
        ("LID", "cpu"),
        ("TRANSCRIBE", "gpu"),
        ("TRANSLATE", "remote"),
        ("SUMMARIZE", "remote"),
    ]
    assert shown["llm_tokens"] == {"input": 2000, "output": 1000}
    # 12.25 s GPU + 1.5 s CPU + 2k tokens in + 1k out; remote seconds are paid by the token only
    expected = 12.25 * 0.001 + 1.5 * 0.0001 + 2 * 0.002 + 1 * 0.008
    assert shown["estimated_cost"] == {"amount": pytest.approx(expected), "currency": "USD"}


def test_default_rates_cost_nothing_in_usd() -> None:
    usage = job_usage(audio_seconds=60.0, steps=FULL_PIPELINE, rates=Rates.of(Settings()))
    assert usage.as_dict()["estimated_cost"] == {"amount": 0.0, "currency": "USD"}
    assert usage.compute_seconds == 18.75, "usage is counted even when it is free"


def test_rates_come_from_settings() -> None:
    rates = Rates.of(Settings(cost_per_gpu_second=0.5, cost_currency="EUR"))
    assert rates == Rates(gpu_per_second=0.5, currency="EUR")
    usage = job_usage(
        audio_seconds=None, steps=[("TRANSCRIBE", {"device": "cuda:0", "processing_seconds": 4})], rates=rates
    )
    assert usage.as_dict()["estimated_cost"] == {"amount": 2.0, "currency": "EUR"}
    assert usage.audio_seconds == 0.0


@pytest.mark.parametrize(
    ("details", "device"),
    [
        ({"device": "cuda"}, "gpu"),
        ({"device": "CUDA:1"}, "gpu"),
        ({"device": "cpu"}, "cpu"),
        ({"device": "auto"}, "cpu"),
        ({}, "cpu"),
        ({"engine": "extractive"}, "cpu"),
        ({"engine": "openai-compatible"}, "remote"),
        ({"engine": "whisper-translate", "device": "cuda"}, "gpu"),
    ],
)
def test_device_classes(details: dict, device: str) -> None:
    assert device_of(details) == device


@pytest.mark.parametrize(
    "details",
    [
        None,
        {},
        {"skipped": True, "reason": "source language is English"},
        {"device": "cpu"},
        {"processing_seconds": -3, "usage": {"prompt_tokens": "many"}},
        {"processing_seconds": float("nan")},
        {"processing_seconds": True},
    ],
)
def test_steps_that_did_no_measurable_work_are_left_out(details: dict | None) -> None:
    assert step_usage("TRANSLATE", details) is None


def test_total_merges_jobs_by_step_type_and_device_and_folds_parts() -> None:
    one = job_usage(audio_seconds=60.0, steps=FULL_PIPELINE, rates=RATES)
    two = job_usage(
        audio_seconds=600.0,
        steps=[
            ("TRANSCRIBE.1", {"device": "cuda", "processing_seconds": 30.0}),
            ("TRANSCRIBE.2", {"device": "cuda", "processing_seconds": 29.0}),
            ("TRANSCRIBE", {"device": "cpu", "processing_seconds": 0.5}),
        ],
        rates=RATES,
    )
    total = total_usage([one, two], rates=RATES).as_dict()
    assert total["audio_seconds"] == 660.0
    by_key = {(s["step_type"], s["device"]): s for s in total["steps"]}
    assert by_key[("TRANSCRIBE", "gpu")]["compute_seconds"] == 71.25
    assert by_key[("TRANSCRIBE", "cpu")]["compute_seconds"] == 0.5
    assert by_key[("SUMMARIZE", "remote")]["input_tokens"] == 500
    assert total["compute_seconds"] == one.compute_seconds + two.compute_seconds
    assert total["estimated_cost"]["amount"] == pytest.approx(one.estimated_cost + two.estimated_cost)


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_completed_step_counts_its_compute_seconds_and_tokens() -> None:
    before = (
        _sample("speechflow_compute_seconds_total", step_type="SUMMARIZE", device="remote"),
        _sample("speechflow_llm_tokens_total", direction="input"),
        _sample("speechflow_llm_tokens_total", direction="output"),
    )
    metrics.record_step("SUMMARIZE", "completed", seconds=2.0, details=dict(FULL_PIPELINE[3][1]))
    metrics.record_step("SUMMARIZE", "failed", seconds=2.0, details=dict(FULL_PIPELINE[3][1]))
    after = (
        _sample("speechflow_compute_seconds_total", step_type="SUMMARIZE", device="remote"),
        _sample("speechflow_llm_tokens_total", direction="input"),
        _sample("speechflow_llm_tokens_total", direction="output"),
    )
    # Differences of counters that other tests moved first: compared as floats, not bit for bit.
    moved = [b - a for a, b in zip(before, after, strict=True)]
    assert moved == pytest.approx([2.0, 500, 300]), "only the completed run counts"
