"""The transcription worker on whisper-jobs: TRANSCRIBE (shared/steps/transcribe.py), and offline
translation from the audio, which the registry routes here where the Whisper model is already loaded."""

from __future__ import annotations

from typing import ClassVar

from gpu_worker.registry_worker import RegistryWorker


class WhisperWorker(RegistryWorker):
    step_types: ClassVar[tuple[str, ...]] = ("TRANSCRIBE",)
