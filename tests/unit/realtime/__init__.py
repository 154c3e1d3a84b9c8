"""Unit tests of live transcription (gpu_worker/realtime, shared/engines/speech/streaming.py)."""
