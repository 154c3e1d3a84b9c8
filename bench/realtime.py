"""Live transcription: latency, accuracy and capacity of the live component, streamed at real-time pace.

    .venv/bin/python bench/realtime.py [--sessions 1 2 4 6] [--silence-ms 500] [--model-cache DIR]

A local stack (`python -m shared.hosting up --only api router whisper realtime`, SQLite, bundled model, int8)
is started once. The recording is the English LibriVox fixtures one after another, 1.2 s of silence
between them (each reading is a turn); every session streams it at real-time pace in 100 ms appends
(24 kHz PCM16, server VAD with `--silence-ms`), through the API's /v1/realtime, N sessions at once.

Printed per number of sessions:
- end of turn → completed: from the moment the last chunk of a reading's audio was sent to its
  `completed` event (the silence that ends the turn included), p50 and p95 over every turn;
- speech start → first delta: from the moment the first chunk of a reading was sent to the turn's first
  `delta`;
- WER of the completed transcripts against the readings' texts;
- the live worker's resident memory: idle, and its peak with N sessions (per session: the difference / N).
Then the same recording through POST /v1/audio/transcriptions (the batch path: WER and time), and raw
faster-whisper on each reading alone (greedy as the live final decode, and beam 5), for comparison.
The load average is printed at the start and the end: other processes share the cores.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from shared.engines.audio import decode  # noqa: E402
from tests.support.wer import wer  # noqa: E402

CLIPS = sorted((REPO / "tests" / "fixtures" / "audio" / "en").glob("librivox-*.wav"))
GAP_SECONDS = 1.2
CHUNK_MS = 100


@dataclass
class Turn:
    first_sent: float = 0.0
    last_sent: float = 0.0


@dataclass
class SessionRun:
    turns: list[Turn]
    completed: list[tuple[float, str]] = field(default_factory=list)
    first_deltas: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, list[str]] = field(default_factory=dict)
    item_order: list[str] = field(default_factory=list)
    item_start_ms: dict[str, int] = field(default_factory=dict)
    completed_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def by_reading(self, spans: list[tuple[int, int]]) -> list[list[str]]:
        """The items (turns the server found) of each reading, by where their speech started."""
        readings: list[list[str]] = [[] for _ in spans]
        for item in self.item_order:
            at = self.item_start_ms.get(item, 0) * 48  # ms → 24 kHz PCM16 bytes
            index = max((i for i, (start, _) in enumerate(spans) if start - 48 * 400 <= at), default=0)
            readings[index].append(item)
        return readings


def recording() -> tuple[bytes, list[tuple[int, int]], str]:
    """24 kHz PCM16 of the readings with gaps; each reading's byte range; the reference text."""
    import av

    pieces: list[np.ndarray] = [np.zeros(8000, np.float32)]
    spans: list[tuple[int, int]] = []
    at = 8000
    for clip in CLIPS:
        audio = decode(clip)
        spans.append((at, at + len(audio)))
        pieces += [audio, np.zeros(int(16000 * GAP_SECONDS), np.float32)]
        at += len(audio) + int(16000 * GAP_SECONDS)
    samples = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype(np.int16)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=24000)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    pcm = b"".join(piece.to_ndarray().tobytes() for piece in [*resampler.resample(frame), *resampler.resample(None)])
    byte_spans = [(start * 3, end * 3) for start, end in spans]  # 16 kHz samples → 24 kHz bytes (×1.5 × 2)
    text = " ".join(clip.with_suffix(".txt").read_text().strip() for clip in CLIPS)
    return pcm, byte_spans, text


def stream(url: str, key: str, pcm: bytes, spans: list[tuple[int, int]], silence_ms: int) -> SessionRun:
    from websockets.sync.client import connect

    run = SessionRun(turns=[Turn() for _ in spans])
    chunk = 24000 * 2 * CHUNK_MS // 1000
    with connect(url, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None) as socket:
        socket.recv(timeout=30)
        socket.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "whisper-1", "language": "en"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
                            }
                        },
                    },
                }
            )
        )

        def send() -> None:
            started = time.monotonic()
            for index, at in enumerate(range(0, len(pcm), chunk)):
                due = started + index * CHUNK_MS / 1000
                time.sleep(max(0.0, due - time.monotonic()))
                socket.send(
                    json.dumps(
                        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[at : at + chunk]).decode()}
                    )
                )
                now = time.monotonic()
                for turn, (start, end) in zip(run.turns, spans, strict=True):
                    if start < at + chunk and turn.first_sent == 0.0:
                        turn.first_sent = now
                    if at < end <= at + chunk:
                        turn.last_sent = now

        sender_done = threading.Event()

        def send_then_mark() -> None:
            send()
            time.sleep(2.0)  # the last turn's silence, and its final
            sender_done.set()

        sender = threading.Thread(target=send_then_mark)
        sender.start()
        while len(run.completed) < len(spans) or len(run.completed) < len(run.item_order):
            if sender_done.is_set() and len(run.completed) >= len(run.item_order) and run.completed:
                break
            try:
                event = json.loads(socket.recv(timeout=60))
            except TimeoutError:
                run.errors.append("timed out waiting for events")
                break
            kind = event["type"]
            if kind == "conversation.item.input_audio_transcription.delta":
                run.first_deltas.setdefault(event["item_id"], time.monotonic())
                run.deltas.setdefault(event["item_id"], []).append(event["delta"])
            elif kind == "input_audio_buffer.speech_started":
                run.item_start_ms[event["item_id"]] = event["audio_start_ms"]
            elif kind == "input_audio_buffer.committed":
                run.item_order.append(event["item_id"])
            elif kind == "conversation.item.input_audio_transcription.completed":
                run.completed.append((time.monotonic(), event["transcript"]))
                run.completed_at[event["item_id"]] = time.monotonic()
            elif kind == "error":
                run.errors.append(event["error"]["message"])
        sender.join()
    return run


def memory(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 6])
    parser.add_argument("--silence-ms", type=int, default=500)
    parser.add_argument(
        "--show-text", action="store_true", help="print one session's deltas per reading ('|' between deltas)"
    )
    parser.add_argument("--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "models")
    parser.add_argument("--skip-offline", action="store_true")
    args = parser.parse_args()
    from transcribe import local_stack  # bench/transcribe.py: the same stack harness

    from tests.e2e.conftest import free_port

    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs)")
    pcm, spans, reference = recording()
    seconds = len(pcm) / 2 / 24000
    print(
        f"recording: {len(CLIPS)} readings, {seconds:.1f} s, {len(reference.split())} words;"
        f" silence {args.silence_ms} ms"
    )
    live_port = free_port()
    env = {
        "REALTIME_PORT": str(live_port),
        "WHISPER_WORKERS": "1",
        "REALTIME_MAX_SESSIONS": "16",
        "REALTIME_MAX_SESSIONS_PER_KEY": "16",
    }
    with (
        tempfile.TemporaryDirectory() as home,
        local_stack(
            Path(home),
            model_cache=args.model_cache,
            env=env,
            database_url=None,
            workers=1,
            components=("api", "router", "whisper", "realtime"),
        ) as stack,
    ):
        key = stack.client.headers["x-api-key"]
        url = str(stack.client.base_url).replace("http://", "ws://").rstrip("/") + "/v1/realtime?intent=transcription"
        live_pid = next(pid for pid, name in stack.children().items() if name == "realtime")
        deadline = time.monotonic() + 120
        from websockets.sync.client import connect

        while time.monotonic() < deadline:  # the live model loaded and listening
            try:
                with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as probe:
                    probe.recv(timeout=10)
                break
            except Exception:
                time.sleep(1)
        idle = memory(live_pid, "VmRSS")
        print(f"\nlive worker resident memory, idle: {idle:.0f} MiB")
        print(
            f"{'sessions':>8} {'end→final p50':>14} {'p95':>6} {'start→delta p50':>16} {'p95':>6}"
            f" {'WER %':>6} {'peak MiB':>9} {'MiB/session':>12}"
        )
        for count in args.sessions:
            runs: list[SessionRun] = []
            threads = [
                threading.Thread(target=lambda into=runs: into.append(stream(url, key, pcm, spans, args.silence_ms)))
                for _ in range(count)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            finals, firsts, errors = [], [], []
            rates = []
            for run in runs:
                errors += run.errors
                for turn, items in zip(run.turns, run.by_reading(spans), strict=True):
                    done = [run.completed_at[item] for item in items if item in run.completed_at]
                    if done:
                        finals.append(max(done) - turn.last_sent)
                    deltas = [run.first_deltas[item] for item in items if item in run.first_deltas]
                    if deltas:
                        firsts.append(min(deltas) - turn.first_sent)
                rates.append(wer(reference, " ".join(text for _, text in run.completed)))
            peak = memory(live_pid, "VmHWM")
            print(
                f"{count:>8} {statistics.median(finals):>13.2f}s {percentile(finals, 0.95):>5.2f}s"
                f" {statistics.median(firsts) if firsts else float('nan'):>15.2f}s"
                f" {percentile(firsts, 0.95) if firsts else float('nan'):>5.2f}s"
                f" {100 * statistics.mean(rates):>6.2f} {peak:>9.0f} {(peak - idle) / count:>12.0f}"
                + (f"  errors: {errors[:2]}" if errors else "")
            )
            if args.show_text:
                first = runs[0]
                for index, (turn, items) in enumerate(zip(first.turns, first.by_reading(spans), strict=True)):
                    deltas = [first.first_deltas[item] for item in items if item in first.first_deltas]
                    after = f"{min(deltas) - turn.first_sent:.2f} s" if deltas else "-"
                    sent = " | ".join(delta for item in items for delta in first.deltas.get(item, []))
                    print(f"    reading {index + 1}, first delta {after}: {sent}")
        # The batch path, same recording, through the OpenAI front.
        import io
        import wave

        from openai import OpenAI

        with io.BytesIO() as buffer:
            with wave.open(buffer, "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(24000)
                out.writeframes(pcm)
            body = buffer.getvalue()
        client = OpenAI(api_key=key, base_url=str(stack.client.base_url).rstrip("/") + "/v1", timeout=300)
        started = time.perf_counter()
        answer = client.audio.transcriptions.create(model="whisper-1", file=("rec.wav", body), language="en")
        print(
            f"\nPOST /v1/audio/transcriptions: WER {100 * wer(reference, answer.text):.2f} %,"
            f" {time.perf_counter() - started:.1f} s"
        )
    if not args.skip_offline:
        from faster_whisper import WhisperModel

        from shared.engines.speech.bundled_model import resolve_model

        model = WhisperModel(
            resolve_model("bundled", args.model_cache), device="cpu", compute_type="int8", cpu_threads=1
        )
        for beam in (1, 5):
            texts, times = [], []
            for clip in CLIPS:
                audio = decode(clip)
                started = time.perf_counter()
                segments, _ = model.transcribe(
                    audio, language="en", beam_size=beam, word_timestamps=True, vad_filter=False
                )
                texts.append("".join(segment.text for segment in segments))
                times.append(time.perf_counter() - started)
            print(
                f"raw faster-whisper, each reading alone, 1 thread, beam {beam}:"
                f" WER {100 * wer(reference, ' '.join(texts)):.2f} %,"
                f" decode p50 {statistics.median(times):.2f} s, max {max(times):.2f} s"
            )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
