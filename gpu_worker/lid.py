"""The language identification worker on lid-jobs: LID (shared/steps/lid.py)."""

from __future__ import annotations

from typing import ClassVar

from gpu_worker.registry_worker import RegistryWorker


class LidWorker(RegistryWorker):
    step_types: ClassVar[tuple[str, ...]] = ("LID",)
