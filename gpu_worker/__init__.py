"""Long-lived workers: language identification and Whisper transcription."""
