"""Live transcription, without a socket: the protocol's events read and written (gpu_worker/realtime/protocol.py),
the streaming engine's parts (shared/engines/speech/streaming.py) and live client secrets (shared/jobs/keys.py)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from gpu_worker.realtime.protocol import (
    Append,
    Clear,
    Commit,
    ProtocolError,
    SessionConfig,
    TurnDetection,
    Update,
    error_event,
    parse,
)
from shared.engines.speech.streaming import FRAME_MS, AudioInput, LocalAgreement, TurnDetector, words_of
from shared.jobs.keys import client_secret_principal, issue_client_secret

CONFIG = SessionConfig()


def event(**fields: object) -> str:
    return json.dumps(fields)


def test_an_append_carries_the_decoded_bytes_and_commit_and_clear_are_read() -> None:
    command, event_id = parse(event(type="input_audio_buffer.append", audio="AAEC", event_id="evt_1"), CONFIG)
    assert command == Append(b"\x00\x01\x02") and event_id == "evt_1"
    assert isinstance(parse(event(type="input_audio_buffer.commit"), CONFIG)[0], Commit)
    assert isinstance(parse(event(type="input_audio_buffer.clear"), CONFIG)[0], Clear)


def test_the_ga_session_update_sets_format_transcription_turn_detection_and_logprobs() -> None:
    update = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "fr", "prompt": "Bonjour"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700},
                }
            },
            "include": ["item.input_audio_transcription.logprobs"],
        },
    }
    command, _ = parse(json.dumps(update), CONFIG)

    assert isinstance(command, Update)
    config = command.config
    assert (config.audio_format, config.rate, config.language, config.prompt) == ("g711_ulaw", 8000, "fr", "Bonjour")
    assert config.turn_detection == TurnDetection(0.6, 300, 700)
    assert config.logprobs
    shown = config.describe("job-id")
    assert shown["type"] == "transcription" and shown["id"] == "job-id"
    assert shown["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert shown["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 700


def test_the_beta_schema_and_manual_turns_are_read() -> None:
    update = {
        "type": "transcription_session.update",
        "session": {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": None,
        },
    }
    command, _ = parse(json.dumps(update), CONFIG)

    assert isinstance(command, Update)
    assert command.config.schema == "beta" and command.config.turn_detection is None
    assert command.config.describe("x")["input_audio_format"] == "pcm16"


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_event", None),
        (event(type="response.create"), "invalid_event", "type"),
        (event(type="input_audio_buffer.append", audio="***"), "invalid_base64", "audio"),
        (event(type="input_audio_buffer.append", audio=17), "invalid_value", "audio"),
        (event(type="session.update", session={"type": "realtime"}), "invalid_value", "session.type"),
        (
            event(type="session.update", session={"audio": {"input": {"format": {"type": "audio/flac"}}}}),
            "invalid_value",
            "session.audio.input.format.type",
        ),
        (
            event(type="session.update", session={"audio": {"input": {"transcription": {"language": "zz"}}}}),
            "invalid_value",
            "session.audio.input.transcription.language",
        ),
        (
            event(type="session.update", session={"audio": {"input": {"turn_detection": {"threshold": 2}}}}),
            "invalid_value",
            "session.audio.input.turn_detection.threshold",
        ),
        (
            event(type="transcription_session.update", session={"input_audio_format": "mp3"}),
            "invalid_value",
            "session.input_audio_format",
        ),
    ],
)
def test_a_malformed_event_is_an_error_in_openais_shape(text: str, code: str, param: str | None) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse(text, CONFIG)

    answer = error_event(refused.value)
    assert answer["type"] == "error" and answer["event_id"].startswith("event_")
    assert answer["error"]["type"] == "invalid_request_error"
    assert (answer["error"]["code"], answer["error"]["param"]) == (code, param)
    assert answer["error"]["message"]


def test_an_append_over_15_mib_is_refused_unread() -> None:
    huge = base64.b64encode(b"\x00" * (15 * 1024 * 1024 + 3)).decode()
    with pytest.raises(ProtocolError) as refused:
        parse(event(type="input_audio_buffer.append", audio=huge, event_id="big"), CONFIG)
    assert refused.value.code == "audio_too_large" and refused.value.event_id == "big"


def test_pcm16_at_24_khz_and_g711_become_16_khz_float32() -> None:
    tone = (np.sin(2 * np.pi * 440 * np.arange(24000) / 24000) * 16000).astype("<i2").tobytes()
    pcm = AudioInput("pcm16", 24000)
    # An odd number of bytes in one chunk: the half sample waits for the next.
    samples = np.concatenate([pcm.convert(tone[:1001]), pcm.convert(tone[1001:])])
    assert samples.dtype == np.float32
    assert abs(len(samples) - 16000) <= 64
    assert 0.45 < float(np.abs(samples).max()) < 0.52

    ulaw = AudioInput("g711_ulaw")
    decoded = ulaw.convert(bytes([0x00, 0x80]) * 4000)  # μ-law extremes, 1 s at 8 kHz
    assert abs(len(decoded) - 16000) <= 64 and float(np.abs(decoded).max()) > 0.9
    alaw = AudioInput("g711_alaw")
    assert abs(len(alaw.convert(bytes([0xD5]) * 8000)) - 16000) <= 64


def test_two_decodes_must_agree_before_a_word_is_confirmed_and_it_is_never_taken_back() -> None:
    agreement = LocalAgreement()

    assert agreement.update(words_of(" I think")) == []
    assert agreement.update(words_of(" I think that we")) == [" I", " think"]
    # The next decode changes its mind about a confirmed word: it stays as sent; what follows is compared.
    assert agreement.update(words_of(" I thought that we should")) == [" that", " we"]
    assert agreement.update(words_of(" I think that we should go.")) == [" should"]
    assert agreement.text == " I think that we should"
    # Case and punctuation do not count as disagreement.
    assert agreement.update(words_of(" I think that we should Go")) == [" Go"]


def probabilities(pattern: str) -> list[float]:
    """One character a 32 ms frame: `s` speech, `.` silence."""
    return [0.9 if mark == "s" else 0.05 for mark in pattern]


def test_turns_start_with_padding_pause_early_and_stop_after_the_silence() -> None:
    detector = TurnDetector(threshold=0.5, prefix_padding_ms=64, silence_duration_ms=320, early_final_ms=96)
    events = detector.feed(probabilities("." * 10 + "s" * 20 + "." * 12))

    kinds = [(event.kind, event.at_ms) for event in events]
    assert kinds == [
        ("speech_started", 10 * FRAME_MS - 64),
        ("speech_paused", 30 * FRAME_MS),
        ("speech_stopped", 40 * FRAME_MS),
    ]


def test_speech_after_a_short_pause_resumes_the_same_turn() -> None:
    detector = TurnDetector(silence_duration_ms=320, early_final_ms=96)
    events = detector.feed(probabilities("s" * 10 + "." * 5 + "s" * 10 + "." * 11))
    assert [event.kind for event in events] == [
        "speech_started",
        "speech_paused",
        "speech_resumed",
        "speech_paused",
        "speech_stopped",
    ]


def test_a_turn_about_to_pass_its_longest_is_cut_at_its_quietest_frame() -> None:
    detector = TurnDetector(max_turn_seconds=2.0, silence_duration_ms=500)
    frames = [0.9] * 50 + [0.35] + [0.9] * 30  # a dip at frame 50, never 500 ms of silence
    events = detector.feed(frames)

    stops = [event for event in events if event.kind == "speech_stopped"]
    assert stops and stops[0].cut
    assert stops[0].at_ms == 51 * FRAME_MS  # the end of the quietest frame of the turn's last third
    assert [event.kind for event in events].count("speech_started") == 2


def test_a_client_secret_stands_for_its_key_until_it_expires_and_cannot_be_forged() -> None:
    key = b"k" * 32
    value, expires = issue_client_secret(principal_id="key_ab12", signing_key=key, ttl_seconds=60, now=1000.0)

    assert value.startswith("ek_") and expires == 1060
    assert client_secret_principal(value, signing_key=key, now=1059.0) == "key_ab12"
    assert client_secret_principal(value, signing_key=key, now=1060.0) is None  # expired
    assert client_secret_principal(value, signing_key=b"x" * 32, now=1001.0) is None  # another server's
    _body, signature = value.split(".")
    other, _ = issue_client_secret(principal_id="key_zz99", signing_key=key, ttl_seconds=60, now=1000.0)
    assert client_secret_principal(other.split(".")[0] + "." + signature, signing_key=key, now=1001.0) is None
    assert client_secret_principal("ek_garbage", signing_key=key, now=1001.0) is None
    assert client_secret_principal("sfk_notasecret", signing_key=key, now=1001.0) is None
