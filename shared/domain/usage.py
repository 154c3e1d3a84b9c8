"""What a job used and what that is estimated to cost: pure functions over what its steps recorded.

Every step run records its details (shared/steps/runner.py): `processing_seconds` (claim to result, added by
run_step), the `device` it ran on, and for text models `usage` with `prompt_tokens` and
`completion_tokens`. A job's usage is the sum over its step rows — each row holds its last run, so a
retried step counts once, as the run that produced its result. Steps that ran on a remote text model
(Azure OpenAI, an OpenAI-compatible endpoint) are priced by their tokens; their seconds are spent
waiting on the endpoint and are counted as `remote`, not charged as compute.

The rates come from Settings (COST_PER_GPU_SECOND, COST_PER_CPU_SECOND, COST_PER_1K_INPUT_TOKENS,
COST_PER_1K_OUTPUT_TOKENS, COST_CURRENCY).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from shared.core.config import Settings

Device = Literal["cpu", "gpu", "remote"]
REMOTE_ENGINES = frozenset({"azure-openai", "openai-compatible"})
"""Text model engines that run elsewhere and are paid by the token (shared/engines/text)."""


@dataclass(frozen=True)
class Rates:
    gpu_per_second: float = 0.0
    cpu_per_second: float = 0.0
    per_1k_input_tokens: float = 0.0
    per_1k_output_tokens: float = 0.0
    currency: str = "USD"

    @classmethod
    def of(cls, settings: Settings) -> Rates:
        return cls(
            gpu_per_second=settings.cost_per_gpu_second,
            cpu_per_second=settings.cost_per_cpu_second,
            per_1k_input_tokens=settings.cost_per_1k_input_tokens,
            per_1k_output_tokens=settings.cost_per_1k_output_tokens,
            currency=settings.cost_currency,
        )


@dataclass(frozen=True)
class StepUsage:
    step_type: str
    device: Device
    compute_seconds: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Usage:
    """A job's usage, or the sum of several jobs'."""

    audio_seconds: float = 0.0
    steps: list[StepUsage] = field(default_factory=list)
    rates: Rates = field(default_factory=Rates)

    @property
    def compute_seconds(self) -> float:
        return round(sum(step.compute_seconds for step in self.steps), 3)

    @property
    def input_tokens(self) -> int:
        return sum(step.input_tokens for step in self.steps)

    @property
    def output_tokens(self) -> int:
        return sum(step.output_tokens for step in self.steps)

    def seconds_on(self, device: Device) -> float:
        return sum(step.compute_seconds for step in self.steps if step.device == device)

    @property
    def estimated_cost(self) -> float:
        rates = self.rates
        amount = (
            self.seconds_on("gpu") * rates.gpu_per_second
            + self.seconds_on("cpu") * rates.cpu_per_second
            + self.input_tokens / 1000 * rates.per_1k_input_tokens
            + self.output_tokens / 1000 * rates.per_1k_output_tokens
        )
        return round(amount, 6)

    def as_dict(self) -> dict[str, Any]:
        """The `usage` object of GET /jobs/{id} and GET /usage."""
        return {
            "audio_seconds": round(self.audio_seconds, 3),
            "compute_seconds": self.compute_seconds,
            "steps": [
                {
                    "step_type": step.step_type,
                    "device": step.device,
                    "compute_seconds": step.compute_seconds,
                    "input_tokens": step.input_tokens,
                    "output_tokens": step.output_tokens,
                }
                for step in self.steps
            ],
            "llm_tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "estimated_cost": {"amount": self.estimated_cost, "currency": self.rates.currency},
        }


def _number(value: Any) -> float:
    """A recorded figure, or 0 for anything that is not a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def device_of(details: Mapping[str, Any]) -> Device:
    """Where a step ran, as priced: a GPU (`cuda`, `cuda:0`, `gpu`), a remote text model, or a CPU —
    also when the step did not say (`auto` resolves to a CPU unless CUDA was configured)."""
    device = str(details.get("device") or "").lower()
    if device.startswith(("cuda", "gpu")):
        return "gpu"
    if not device and details.get("engine") in REMOTE_ENGINES:
        return "remote"
    return "cpu"


def step_usage(step_type: str, details: Mapping[str, Any] | None) -> StepUsage | None:
    """What one step run used, from its recorded details; None for a step that did no work (skipped,
    or never ran)."""
    if not details or details.get("skipped"):
        return None
    recorded = details.get("usage")
    tokens: Mapping[str, Any] = recorded if isinstance(recorded, Mapping) else {}
    seconds = _number(details.get("processing_seconds"))
    input_tokens = int(_number(tokens.get("prompt_tokens")))
    output_tokens = int(_number(tokens.get("completion_tokens")))
    if not seconds and not input_tokens and not output_tokens:
        return None
    return StepUsage(
        step_type=step_type,
        device=device_of(details),
        compute_seconds=round(seconds, 3),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def job_usage(
    *, audio_seconds: float | None, steps: Iterable[tuple[str, Mapping[str, Any] | None]], rates: Rates
) -> Usage:
    """A job's usage from its step rows (step type, details), in the rows' order."""
    found = [usage for step_type, details in steps if (usage := step_usage(step_type, details)) is not None]
    return Usage(audio_seconds=_number(audio_seconds), steps=found, rates=rates)


def total_usage(jobs: Iterable[Usage], *, rates: Rates) -> Usage:
    """Several jobs' usage summed, with one entry per step type and device."""
    audio = 0.0
    merged: dict[tuple[str, Device], StepUsage] = {}
    for usage in jobs:
        audio += usage.audio_seconds
        for step in usage.steps:
            key = (step.step_type.split(".", 1)[0], step.device)
            before = merged.get(key)
            merged[key] = StepUsage(
                step_type=key[0],
                device=step.device,
                compute_seconds=round((before.compute_seconds if before else 0.0) + step.compute_seconds, 3),
                input_tokens=(before.input_tokens if before else 0) + step.input_tokens,
                output_tokens=(before.output_tokens if before else 0) + step.output_tokens,
            )
    return Usage(audio_seconds=audio, steps=[merged[key] for key in sorted(merged)], rates=rates)
