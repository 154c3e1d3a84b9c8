"""Engines: audio decoding and probing, speech (Whisper transcription and translation, language
identification, diarization, chunking), text models (translation, summary) and PII masking, each behind
a small interface and loaded once per process on first use, never at import. They know nothing of jobs,
queues or storage."""
