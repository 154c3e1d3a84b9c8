"""Speech engines the workers call: Whisper transcription, language identification, language codes.

Nothing here loads a model or imports a heavy library at import time: models load on first use,
and torch/transformers are imported only by the MMS-LID backend.
"""
