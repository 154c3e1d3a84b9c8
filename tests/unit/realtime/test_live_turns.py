"""The decisions behind a live turn's words (gpu_worker/realtime/turns.py, shared/engines/speech/streaming.py):
which words of a partial decode are confirmed, and which words of the final decode are new."""

from __future__ import annotations

from gpu_worker.realtime.turns import DecodeLoad, Limits, Word, partial_due, repeated_after, words_after
from shared.engines.speech.streaming import LocalAgreement, words_of


def final(text: str) -> list[Word]:
    return [Word(word, 0.3 * index, 0.3 * (index + 1), 0.9) for index, word in enumerate(words_of(text))]


def test_a_word_the_newer_decode_hears_cut_off_is_not_confirmed_even_where_both_agree() -> None:
    agreement = LocalAgreement()
    agreement.update(words_of(" And Mr. John De..."))

    # "De-" and "De..." agree once punctuation is set aside, but the audio ended inside the word.
    assert agreement.update(words_of(" And Mr. John De-")) == [" And", " Mr.", " John"]
    assert agreement.update(words_of(" And Mr. John Dashwood had")) == []
    assert agreement.update(words_of(" And Mr. John Dashwood had then")) == [" Dashwood", " had"]
    # The older decode's cut-off spelling does not stop a word the newer one hears whole.
    assert agreement.update(words_of(" And Mr. John Dashwood had then leisure to...")) == [" then"]
    assert agreement.update(words_of(" And Mr. John Dashwood had then leisure to consider")) == [" leisure", " to"]
    assert agreement.update(words_of(" And Mr. John Dashwood had then leisure to consider…")) == []
    assert agreement.text == " And Mr. John Dashwood had then leisure to"


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


def test_words_past_the_audio_the_previous_decode_heard_are_not_confirmed() -> None:
    # Seen with 4 sessions: decodes of 1.2 s and 1.5 s of "Had he married a more amiable woman" both ran on
    # with the previous turn's text from the prompt ("ill-disposed young man"), and agreed on it.
    agreement = LocalAgreement()
    agreement.update(
        words_of(" Had he married a more-disposed young man?"), ends=[0.4, 0.5, 0.8, 1.0, 1.2, 1.2, 1.2], heard=1.2
    )
    agreed = agreement.update(
        words_of(" Had he married a more-disposed young man?"), ends=[0.4, 0.5, 0.8, 1.0, 1.35, 1.5, 1.5], heard=1.5
    )

    assert agreed == [" Had", " he", " married", " a"]
    # What the next decode hears in the audio both heard is confirmed then.
    agreed = agreement.update(
        words_of(" Had he married a more amiable woman"), ends=[0.4, 0.5, 0.8, 1.0, 1.2, 1.45, 1.7], heard=1.8
    )
    assert agreed == []  # "more" against "more-disposed": they disagree
    agreed = agreement.update(
        words_of(" Had he married a more amiable woman he"), ends=[0.4, 0.5, 0.8, 1.0, 1.2, 1.45, 1.7, 2.0], heard=2.1
    )
    assert agreed == [" more", " amiable", " woman"]
    assert agreement.text == " Had he married a more amiable woman"


def test_a_turn_is_decoded_every_0_3_s_from_0_6_s_until_its_first_words_then_every_0_6_s() -> None:
    limits = Limits()

    assert not partial_due(limits, heard=0.55, fresh=0.55, confirmed=False)
    assert partial_due(limits, heard=0.6, fresh=0.6, confirmed=False)
    assert not partial_due(limits, heard=0.85, fresh=0.25, confirmed=False)
    assert partial_due(limits, heard=0.9, fresh=0.3, confirmed=False)
    # Once a word is out, the rest come from decodes 0.6 s apart.
    assert not partial_due(limits, heard=1.5, fresh=0.3, confirmed=True)
    assert partial_due(limits, heard=1.8, fresh=0.6, confirmed=True)


def test_a_turn_waiting_for_its_first_words_holds_the_next_partial_for_a_second_at_most() -> None:
    load = DecodeLoad(first_waiting={"item_a": 100.0})

    assert load.first_words_waiting(besides="item_b", now=100.5)
    assert not load.first_words_waiting(besides="item_a", now=100.5)  # a turn does not wait for itself
    assert not load.first_words_waiting(besides="item_b", now=101.5)  # its session went: forgotten
    assert load.first_waiting == {}
