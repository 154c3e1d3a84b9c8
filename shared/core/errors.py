"""One exception hierarchy: transient errors are retried, permanent ones fail the step at once."""

from __future__ import annotations


class SpeechFlowError(Exception):
    """Something went wrong in SpeechFlow."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class TransientError(SpeechFlowError):
    """A temporary failure; the step is retried with backoff."""


class PermanentError(SpeechFlowError):
    """A failure that retrying cannot fix (bad input, content filter, validation)."""


class Cancelled(PermanentError):
    """The job was cancelled while this step was running."""


class ShutdownRequested(TransientError):
    """The worker is shutting down and its grace period is over: the step is handed back unfinished."""


class LeaseLost(TransientError):
    """Another worker took this step over after our lease lapsed: stop, and record nothing."""


class MessageLockLost(TransientError):
    """The message's lock expired or was taken by another consumer before it was settled."""


class BlobNotFound(SpeechFlowError):
    """The blob does not exist."""


class ConfigurationError(SpeechFlowError):
    """The configuration is incomplete or contradictory."""
