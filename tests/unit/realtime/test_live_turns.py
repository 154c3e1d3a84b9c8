"""The decisions behind a live turn's words (gpu_worker/realtime/turns.py, shared/engines/speech/streaming.py):
which words of a partial decode are confirmed, and which words of the final decode are new."""

from __future__ import annotations

from gpu_worker.realtime.turns import Word, repeated_after, words_after
from shared.engines.speech.streaming import words_of


def final(text: str) -> list[Word]:
    return [Word(word, 0.3 * index, 0.3 * (index + 1), 0.9) for index, word in enumerate(words_of(text))]


def test_a_final_that_starts_the_turn_over_has_its_repeat_found() -> None:
    sent = " He was not"
    decoded = final(" He was not. He was not an ill-disposed young man.")

    after = words_after(decoded, sent)
    assert after == 3
    assert repeated_after(decoded[after:], sent) == 3
    assert "".join(word.word for word in decoded[after + 3 :]) == " an ill-disposed young man."


def test_a_final_that_goes_on_from_the_sent_words_repeats_nothing() -> None:
    sent = " He was not"
    goes_on = final(" He was not an ill-disposed young man.")
    assert repeated_after(goes_on[words_after(goes_on, sent) :], sent) == 0
    # A repeat of only part of the sent words is speech (the reading says "to be" twice), not a restart.
    sent = " Unless to be rather cold-hearted and rather selfish is to be"
    said = final(sent + " ill-disposed.")
    assert repeated_after(said[words_after(said, sent) :], sent) == 0
    partly = final(" Unless to be to be ill-disposed.")
    assert repeated_after(partly[words_after(partly, " Unless to be") :], " Unless to be") == 0
    # Nothing sent: nothing to repeat.
    assert repeated_after(final(" He was not."), "") == 0
