"""`speechflow jobs results` and `submit --wait` with subtitle cue rules, against the API in this process
(tests/unit/test_cli.py's stack), and the rules' refusals in one line."""

from __future__ import annotations

import pytest

from tests.integration.api.test_subtitle_options import TEXT, long_transcript
from tests.support.pipeline import Stack, with_behaviours
from tests.unit.cli.test_cli import one_line_error, run, stack  # noqa: F401  (the fixture)


def test_results_are_cut_to_the_rules(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    with_behaviours(stack.workers[1], [long_transcript])
    job_id = stack.submit("transcribe_only", source_language="eng")
    stack.start(job_id)
    stack.drive(job_id)

    assert run(stack, "jobs", "results", str(job_id), "-f", "srt", "--max-line-chars", "25", "--max-lines", "1") == 0
    blocks = capsys.readouterr().out.strip().split("\n\n")
    lines = [line for block in blocks for line in block.split("\n")[2:]]
    assert all(len(line) <= 25 for line in lines) and len(lines) == len(blocks)
    assert " ".join(lines).split() == TEXT.split()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["jobs", "results", "x", "-f", "srt", "--max-lines", "0"], "--max-lines must be between 1 and 6"),
        (["jobs", "results", "x", "-f", "txt", "--max-lines", "2"], "need --format srt or vtt"),
        (["submit", "--url", "https://example.com/a.wav", "--max-cue-seconds", "3"], "need --format srt or vtt"),
        (["jobs", "results", "x", "-f", "vtt", "--max-line-chars", "500"], "--max-line-chars must be"),
    ],
)
def test_bad_rules_are_refused_before_anything_is_sent(
    stack: Stack,  # noqa: F811
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(stack, *argv) == 1
    assert says in one_line_error(capsys)
