"""Live transcription: the OpenAI Realtime-compatible WebSocket component (server), its sessions, the
protocol they speak, their Whisper decoding, and the job each session is recorded as."""
