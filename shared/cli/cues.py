"""Subtitle cue rules on the command line (`--max-line-chars`, `--max-lines`, `--max-cue-seconds`),
checked as the API checks them."""

from __future__ import annotations

import argparse

from shared.cli.errors import CliError
from shared.domain.subtitle_cues import CueRules


def cue_arguments(command: argparse.ArgumentParser) -> None:
    rules = command.add_argument_group("subtitle cues (srt, vtt; 42 characters, 2 lines, 7 s when any is given)")
    rules.add_argument("--max-line-chars", type=int, metavar="N", help="characters a line")
    rules.add_argument("--max-lines", type=int, metavar="N", help="lines a cue")
    rules.add_argument("--max-cue-seconds", type=float, metavar="S", help="seconds a cue stays on screen")


def cue_rules(args: argparse.Namespace) -> dict[str, float]:
    """The cue rules given, checked as the API checks them (shared/domain/subtitle_cues.py)."""
    given = {
        name: value
        for name, value in (
            ("max_line_chars", args.max_line_chars),
            ("max_lines", args.max_lines),
            ("max_cue_seconds", args.max_cue_seconds),
        )
        if value is not None
    }
    if given and args.format not in ("srt", "vtt"):
        raise CliError("--max-line-chars, --max-lines and --max-cue-seconds need --format srt or vtt")
    try:
        CueRules.of(max_line_chars=args.max_line_chars, max_lines=args.max_lines, max_cue_seconds=args.max_cue_seconds)
    except ValueError as error:
        raise CliError(f"--{str(error).replace('_', '-', 2)}") from None
    return given
