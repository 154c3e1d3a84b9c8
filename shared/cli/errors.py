"""How a command fails: a refusal or bad input (exit 1, one line saying why), or an API that does not
answer (exit 2)."""

from __future__ import annotations


class CliError(Exception):
    """A failure to report to the user in one line."""


class Unreachable(Exception):
    """SpeechFlow did not answer at all."""
