"""One Whisper model per process and configuration, shared by every step the process runs: the
transcription, speech translation and (where it uses Whisper on the same device) language
identification all use the model that is already loaded instead of loading their own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.engines.speech.language_id import whisper_settings_for_lid
from shared.engines.speech.transcriber import LazyWhisperModel
from shared.engines.speech.translation import whisper_model

if TYPE_CHECKING:
    from shared.core.config import Settings
    from shared.engines.speech.transcriber import LazyWhisperModel


def transcription_model(settings: Settings) -> LazyWhisperModel:
    """The process's Whisper model for WHISPER_* settings (loaded on first use)."""

    return whisper_model(settings)


def whisper_model_for_lid(settings: Settings) -> LazyWhisperModel:
    """The model LID scores windows with: the transcription model itself when LID runs on its device."""

    config = whisper_settings_for_lid(settings)
    same = (config.model, config.device, config.compute_type) == (
        settings.whisper.model,
        settings.whisper.device,
        settings.whisper.compute_type,
    )
    if same:
        return transcription_model(settings)
    return LazyWhisperModel(config, settings.model_cache_dir, device_setting="LID_DEVICE")
