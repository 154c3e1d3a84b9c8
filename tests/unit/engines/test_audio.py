"""shared.engines.audio: every common format becomes 16 kHz mono float32; unusable uploads fail permanently.

Inputs in other formats are encoded here with PyAV from a synthetic tone, so the repository holds
no binaries beyond the speech fixtures.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from shared.core.errors import PermanentError
from shared.domain.subtitles import to_srt
from shared.engines import audio

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "audio"
TONE_HZ = 440.0
TONE_SECONDS = 2.0


def encode_tone(
    path: Path, *, codec: str, rate: int, channels: int = 1, seconds: float = TONE_SECONDS, options: dict | None = None
) -> Path:
    """A sine tone at TONE_HZ written with PyAV in the container that `path`'s suffix names."""
    layout = "stereo" if channels == 2 else "mono"
    samples = np.arange(round(seconds * rate))
    wave = (0.5 * np.sin(2 * np.pi * TONE_HZ * samples / rate)).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout, options=options or {})
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, len(wave), frame_size):
            chunk = np.tile(wave[start : start + frame_size], (channels, 1))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def dominant_frequency(samples: np.ndarray, rate: int = audio.SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


FORMATS = [
    pytest.param("tone.flac", "flac", 44100, 2, id="flac-44k-stereo"),
    pytest.param("tone.mp3", "libmp3lame", 22050, 1, id="mp3-22k"),
    pytest.param("tone.ogg", "libopus", 48000, 2, id="ogg-opus-48k-stereo"),
    pytest.param("tone.m4a", "aac", 44100, 1, id="m4a-aac-44k"),
    pytest.param("tone.wav", "pcm_f32le", 48000, 2, id="wav-float32-48k-stereo"),
    pytest.param("tone-s16.wav", "pcm_s16le", 8000, 1, id="wav-s16-8k"),
]


@pytest.mark.parametrize(("name", "codec", "rate", "channels"), FORMATS)
def test_decodes_common_formats_to_16k_mono_float32(
    tmp_path: Path, name: str, codec: str, rate: int, channels: int
) -> None:
    path = encode_tone(tmp_path / name, codec=codec, rate=rate, channels=channels)

    samples = audio.decode(path)

    assert samples.dtype == np.float32
    assert samples.ndim == 1
    # Lossy codecs add priming and padding samples; a tenth of a second is far more than they add.
    assert abs(len(samples) / audio.SAMPLE_RATE - TONE_SECONDS) < 0.1
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
    assert dominant_frequency(middle) == pytest.approx(TONE_HZ, abs=5)
    # Down-mixing two identical channels must not double the level: 0.5 peak → RMS ≈ 0.354.
    assert float(np.sqrt(np.mean(middle**2))) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize(("name", "codec", "rate", "channels"), FORMATS)
def test_probe_describes_the_stream(tmp_path: Path, name: str, codec: str, rate: int, channels: int) -> None:
    path = encode_tone(tmp_path / name, codec=codec, rate=rate, channels=channels)

    info = audio.probe(path)

    assert info.duration_seconds == pytest.approx(TONE_SECONDS, abs=0.1)
    assert info.channels == channels
    assert info.sample_rate == rate
    assert info.codec in {codec, codec.removeprefix("lib"), "mp3float"}
    assert info.format_name


def test_float32_and_11khz_fixtures_decode() -> None:
    float_wav = FIXTURES / "en" / "kokoro-hello_world.wav"
    assert audio.probe(float_wav).codec == "pcm_f32le"
    speech = audio.decode(float_wav)
    assert len(speech) == round(audio.probe(float_wav).duration_seconds * audio.SAMPLE_RATE)
    assert 0.05 < float(np.abs(speech).max()) <= 1.0

    meeting = FIXTURES / "en" / "meeting-chan3.wav"
    info = audio.probe(meeting)
    assert info.sample_rate == 11025
    assert len(audio.decode(meeting)) == pytest.approx(info.duration_seconds * audio.SAMPLE_RATE, abs=16)


def test_window_and_chunks_match_the_whole_decode() -> None:
    path = FIXTURES / "en" / "meeting-chan3.wav"
    whole = audio.decode(path)

    window = audio.decode_window(path, 5.0, 2.5)
    start = 5 * audio.SAMPLE_RATE
    assert len(window) == round(2.5 * audio.SAMPLE_RATE)
    # Seeking restarts the resampler, whose filter sees slightly different history at the edge.
    np.testing.assert_allclose(window, whole[start : start + len(window)], atol=1e-3)

    chunks = list(audio.iter_chunks(path, chunk_seconds=7.0))
    assert [len(chunk) for chunk in chunks[:-1]] == [7 * audio.SAMPLE_RATE] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_window_past_the_end_is_short_or_empty() -> None:
    path = FIXTURES / "en" / "librivox-0880.wav"
    duration = audio.probe(path).duration_seconds

    tail = audio.decode_window(path, duration - 0.5, 5.0)

    assert len(tail) == pytest.approx(0.5 * audio.SAMPLE_RATE, abs=2)
    assert len(audio.decode_window(path, duration + 10, 1.0)) == 0


def test_longer_than_the_maximum_is_refused(tmp_path: Path) -> None:
    path = encode_tone(tmp_path / "long.flac", codec="flac", rate=16000, seconds=3.0)

    with pytest.raises(audio.AudioTooLong, match=r"^audio longer than the maximum of 2.5 s$"):
        audio.decode(path, max_seconds=2.5)
    assert len(audio.decode(path, max_seconds=3.5)) == 3 * audio.SAMPLE_RATE


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "upload.wav"
    path.write_bytes(b"")

    with pytest.raises(audio.EmptyAudioFile, match=r"^empty file$"):
        audio.probe(path)


@pytest.mark.parametrize(
    "content", [b"just some text that is not audio\n", np.random.default_rng(7).bytes(4096)], ids=["text", "noise"]
)
def test_not_an_audio_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload.mp3"
    path.write_bytes(content)

    with pytest.raises(audio.NotAnAudioFile, match=r"^not an audio file$"):
        audio.decode(path)


def test_media_without_audio(tmp_path: Path) -> None:
    # A subtitle file is a valid media file to FFmpeg, with one subtitle stream and no audio.
    path = tmp_path / "upload.srt"
    path.write_text(to_srt([{"start": 0.0, "end": 1.5, "text": "hello"}]))

    with pytest.raises(audio.NoAudioStream, match=r"^no audio stream$"):
        audio.decode(path)


def test_every_audio_error_is_permanent() -> None:
    for error in (audio.EmptyAudioFile, audio.NotAnAudioFile, audio.NoAudioStream, audio.CorruptAudio):
        assert issubclass(error, PermanentError)
    assert isinstance(audio.AudioTooLong(60), PermanentError)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(FIXTURES / "en" / "meeting-chan3.wav", id="s16-11khz"),
        pytest.param(FIXTURES / "en" / "librivox-0870.wav", id="s16-16khz"),
        pytest.param(FIXTURES / "en" / "kokoro-counting.wav", id="f32-16khz"),
    ],
)
def test_mono_sources_decode_exactly_as_faster_whisper(path: Path) -> None:
    from faster_whisper.audio import decode_audio

    np.testing.assert_array_equal(audio.decode(path), decode_audio(str(path)))


def test_each_channel_decodes_alone(tmp_path: Path) -> None:
    rate = 16000
    left = 0.4 * np.sin(2 * np.pi * 440.0 * np.arange(rate) / rate)
    right = 0.4 * np.sin(2 * np.pi * 1000.0 * np.arange(rate) / rate)
    path = tmp_path / "two-voices.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([left, right]).astype(np.float32), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)

    assert dominant_frequency(audio.decode(path, channel=0)) == pytest.approx(440.0, abs=2)
    assert dominant_frequency(audio.decode(path, channel=1)) == pytest.approx(1000.0, abs=2)
    window = audio.decode_window(path, 0.25, 0.5, channel=1)
    assert len(window) == rate // 2
    assert dominant_frequency(window) == pytest.approx(1000.0, abs=4)
    mixed = audio.decode(path)
    np.testing.assert_allclose(mixed, (left + right) / 2, atol=2e-3)
    with pytest.raises(audio.NoSuchChannel, match="2 channel"):
        audio.decode(path, channel=2)


def test_window_of_a_long_file_costs_memory_for_the_window_only(tmp_path: Path) -> None:
    import tracemalloc

    path = encode_tone(tmp_path / "long.flac", codec="flac", rate=16000, seconds=600.0)
    tracemalloc.start()
    try:
        window = audio.decode_window(path, 400.0, 10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(window) == 10 * audio.SAMPLE_RATE
    assert dominant_frequency(window) == pytest.approx(TONE_HZ, abs=2)
    # The whole file would be 600 s × 16000 × 4 bytes ≈ 38 MB; the window is 0.64 MB.
    assert peak < 4_000_000


def _tiny_wav() -> bytearray:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 8000)
    return bytearray(buffer.getvalue())


def test_a_wav_with_an_unknown_format_tag_is_refused_as_unsupported(tmp_path: Path) -> None:
    # Found by an outside probe: bytes 20-21 (the format tag) set to 0x9999 left PyAV's stream without a
    # codec context, and the probe's AttributeError became a 500 at start.
    content = _tiny_wav()
    content[20:22] = b"\x99\x99"
    path = tmp_path / "upload.wav"
    path.write_bytes(bytes(content))

    with pytest.raises(audio.UnsupportedCodec, match=r"^the audio is in a format \(codec\) that cannot be decoded$"):
        audio.probe(path)
    with pytest.raises(audio.UnsupportedCodec):
        audio.decode(path)


def test_a_wav_that_declares_no_channels_is_refused_by_the_probe(tmp_path: Path) -> None:
    content = _tiny_wav()
    content[22:24] = b"\0\0"
    path = tmp_path / "upload.wav"
    path.write_bytes(bytes(content))

    with pytest.raises(audio.CorruptAudio, match=r"^the audio stream declares no channels$"):
        audio.probe(path)


def test_any_corrupt_wav_header_probes_or_fails_as_an_audio_error(tmp_path: Path) -> None:
    """The whole class: whatever the 44 header bytes say, the probe describes usable audio or raises an
    AudioError (a 422 at start, a permanent failure in FETCH), never anything else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    path = tmp_path / "upload.wav"

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(st.lists(st.tuples(st.integers(0, 43), st.integers(0, 255)), min_size=1, max_size=6))
    def check(changes: list[tuple[int, int]]) -> None:
        content = _tiny_wav()
        for offset, value in changes:
            content[offset] = value
        path.write_bytes(bytes(content))
        try:
            info = audio.probe(path)
        except audio.AudioError:
            return
        assert info.channels > 0 and info.sample_rate > 0, info

    check()
