"""Code-switching: per-turn language and error rate on recordings whose language changes at turns.

    .venv/bin/python bench/languages.py [--seeds 1 2 3] [--turns 16] [--threads 2] [--small-pool]

Each recording is built here from turns of known language and text, laid end to end with pauses of
0.3–0.8 s: the fixtures' LibriVox reader and Kokoro voices (English, French, Mandarin, with their
reference texts) and eSpeak NG speaking sentences written for this bench in Spanish, Italian, Portuguese,
German and Japanese (kana), seven or eight each. eSpeak NG is required. Recordings:

- `every turn`: `--turns` turns, each in a different language from the one before, drawn from all eight;
- `es/en call`: Spanish and English turns alternating (a Spanish customer, an English agent);
- `en only`: English turns only, the control: code-switching must not hurt a one-language recording.

Ways of transcribing, all with the bundled Whisper model (int8, CPU) through SpeechFlow's Transcriber:

- `alone`: faster-whisper on each turn cut out alone, identifying its language itself — the reference
  the targets compare with;
- `code-switching`: the whole recording through `transcribe_code_switching` (what a job with
  `code_switching: true` runs), then `--languages`-narrowed for the call (`code-switching es,en`);
- `one language`: the whole recording transcribed as usual (one language detected for all of it).

For the whole-recording ways, each word belongs to the turn its middle falls in (turns extended to the
middle of the pauses); a turn's language is the language of most of its words (none: wrong). Printed per
recording and way: language accuracy over turns, error rate (WER; CER for Mandarin and Japanese) pooled
over turns and averaged per turn, and wall seconds. Targets (issue #23): accuracy no worse than `alone`,
error within 5 points of it.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.core.config import Settings
from shared.engines.audio import SAMPLE_RATE, AudioArray, decode
from shared.engines.speech.code_switching import transcribe_code_switching
from shared.engines.speech.model_cache import transcription_model
from shared.engines.speech.transcriber import Transcriber
from tests.support.wer import edit_distance, normalise

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "audio"
NO_SPACES = {"cmn", "jpn"}
UNSPACED = NO_SPACES | {"yue", "tha", "lao", "khm", "mya", "bod"}
"""Languages written without spaces between words: a whole-recording transcript's words (one per token
in these scripts) are joined without spaces, as Whisper writes them, before a turn is scored."""

ESPEAK_SENTENCES = {
    "spa": (
        "es",
        [
            "Buenos días, quería preguntar por el estado de mi pedido.",
            "Claro, ahora mismo lo reviso en el sistema.",
            "El paquete salió ayer por la tarde desde Madrid.",
            "Muchas gracias por su ayuda, que tenga un buen día.",
        ],
    ),
    "ita": (
        "it",
        [
            "Il treno per Milano parte alle nove dal binario tre.",
            "Va bene, allora ci vediamo alla stazione.",
            "Domani pomeriggio andiamo al mercato a comprare la frutta.",
        ],
    ),
    "por": (
        "pt",
        [
            "Eu gostaria de reservar uma mesa para quatro pessoas.",
            "O restaurante fica perto da praia e abre às oito horas.",
            "Obrigado, até amanhã à noite.",
        ],
    ),
    "deu": (
        "de",
        [
            "Wir treffen uns morgen früh vor dem Bahnhof.",
            "Das Wetter soll am Wochenende schön werden.",
            "Können Sie mir bitte die Rechnung schicken?",
        ],
    ),
    "jpn": (
        "ja",
        [
            "きょうは てんきが いいですね。",
            "あした また あいましょう。",
            "えきまで あるいて じゅっぷんです。",
        ],
    ),
}

MORE_SENTENCES = {
    "spa": [
        "La reunión empieza a las diez en la sala grande.",
        "No encuentro las llaves del coche por ninguna parte.",
        "Mi hermana vive en Sevilla desde hace tres años.",
        "¿Podría repetir el número de teléfono, por favor?",
    ],
    "ita": [
        "Questa sera cuciniamo la pasta con i pomodori.",
        "Il museo resta chiuso il lunedì mattina.",
        "Ho dimenticato l'ombrello sull'autobus.",
        "Quanto costa un biglietto per Roma?",
    ],
    "por": [
        "A minha casa fica ao lado da escola.",
        "Preciso de comprar pão e leite no mercado.",
        "O avião chegou atrasado por causa da chuva.",
        "Você pode me ajudar com esta mala?",
    ],
    "deu": [
        "Mein Bruder arbeitet in einer großen Bäckerei.",
        "Der Zug hat heute leider zwanzig Minuten Verspätung.",
        "Kannst du mir das Salz geben?",
        "Im Sommer fahren wir an die Ostsee.",
    ],
    "jpn": [
        "わたしは まいにち こうえんを さんぽします。",
        "この でんしゃは とうきょうえきに とまりますか。",
        "すみません、トイレは どこですか。",
        "きのうの よる ともだちと すしを たべました。",
    ],
}
"""Four more eSpeak NG sentences per language (`--small-pool` leaves them out): with three or four, one
sentence that Whisper base names by a coin toss (Japanese "きょうは てんきが いいですね" is Japanese or Thai
depending on 0.2 s of silence before it) decided the "every turn" figures."""

FIXTURE_CLIPS = {
    "eng": ["en/librivox-0870", "en/librivox-0880", "en/librivox-0890", "en/librivox-0920", "en/kokoro-hello_world"],
    "fra": ["fr/kokoro-bonjour_monde", "fr/kokoro-comptage", "fr/kokoro-pangrama"],
    "cmn": ["zh/kokoro-nihao_shijie", "zh/kokoro-jishu", "zh/kokoro-pangrama"],
}


@dataclass(frozen=True)
class Turn:
    language: str
    text: str
    audio: AudioArray


@dataclass(frozen=True)
class Recording:
    name: str
    audio: AudioArray
    turns: list[Turn]
    bounds: list[tuple[float, float]]
    """Each turn's span, extended to the middle of the pauses around it."""


def make_turns(workdir: Path, *, more: bool = True) -> dict[str, list[Turn]]:
    """Every turn there is, by language (ISO 639-3); without `more`, only the first eSpeak sentences."""
    turns: dict[str, list[Turn]] = {}
    for language, names in FIXTURE_CLIPS.items():
        for name in names:
            text = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8").strip()
            turns.setdefault(language, []).append(Turn(language, text, decode(FIXTURES / f"{name}.wav")))
    for language, (voice, sentences) in ESPEAK_SENTENCES.items():
        for index, sentence in enumerate(sentences + (MORE_SENTENCES[language] if more else [])):
            path = workdir / f"{language}-{index}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), sentence], check=True)
            turns.setdefault(language, []).append(Turn(language, sentence, decode(path)))
    return turns


def lay_out(name: str, turns: list[Turn], rng: random.Random) -> Recording:
    pieces: list[AudioArray] = []
    spans: list[tuple[float, float]] = []
    gaps: list[float] = []
    clock = 0.0
    for turn in turns:
        length = len(turn.audio) / SAMPLE_RATE
        spans.append((clock, clock + length))
        pause = rng.uniform(0.3, 0.8)
        gaps.append(pause)
        pieces += [turn.audio, np.zeros(round(pause * SAMPLE_RATE), dtype=np.float32)]
        clock += length + pause
    bounds = []
    for index, (start, end) in enumerate(spans):
        low = (spans[index - 1][1] + start) / 2 if index else 0.0
        high = (end + spans[index + 1][0]) / 2 if index + 1 < len(spans) else clock
        bounds.append((low, high))
    return Recording(name, np.concatenate(pieces).astype(np.float32), turns, bounds)


def recordings(pool: dict[str, list[Turn]], *, seed: int, count: int) -> list[Recording]:
    rng = random.Random(seed)
    chosen: list[Turn] = []
    previous = ""
    for _ in range(count):
        language = rng.choice([code for code in pool if code != previous])
        chosen.append(rng.choice(pool[language]))
        previous = language
    call = [rng.choice(pool["spa" if index % 2 == 0 else "eng"]) for index in range(min(count, 8))]
    english = [rng.choice(pool["eng"]) for _ in range(min(count, 8))]
    return [
        lay_out("every turn", chosen, rng),
        lay_out("es/en call", call, rng),
        lay_out("en only", english, rng),
    ]


def errors(turn: Turn, text: str) -> tuple[int, int]:
    """(edits, reference units): characters for Mandarin and Japanese, words otherwise."""
    if turn.language in NO_SPACES:
        reference = list(normalise(turn.text).replace(" ", ""))
        return edit_distance(reference, list(normalise(text).replace(" ", ""))), len(reference)
    words = normalise(turn.text).split()
    return edit_distance(words, normalise(text).split()), len(words)


def per_turn(recording: Recording, segments: list[dict[str, Any]], language: str) -> list[tuple[str, str]]:
    """Each turn's (language, text) from a whole-recording transcript."""
    found: list[tuple[list[str], dict[str, int]]] = [([], {}) for _ in recording.turns]
    for segment in segments:
        said = str(segment.get("language") or language)
        for word in segment.get("words") or []:
            middle = (float(word["start"]) + float(word["end"])) / 2
            for index, (low, high) in enumerate(recording.bounds):
                if low <= middle < high:
                    found[index][0].append(str(word["word"]))
                    found[index][1][said] = found[index][1].get(said, 0) + 1
                    break
    result = []
    for words, votes in found:
        chosen = max(votes, key=lambda code: votes[code]) if votes else ""
        result.append((chosen, ("" if chosen in UNSPACED else " ").join(words)))
    return result


def score(recording: Recording, answers: list[tuple[str, str]], seconds: float) -> dict[str, float]:
    right = sum(answer[0] == turn.language for turn, answer in zip(recording.turns, answers, strict=True))
    edits = units = 0
    rates = []
    for turn, (_, text) in zip(recording.turns, answers, strict=True):
        wrong, total = errors(turn, text)
        edits += wrong
        units += total
        rates.append(wrong / total)
    return {
        "accuracy": right / len(recording.turns),
        "pooled": edits / units,
        "mean": float(np.mean(rates)),
        "seconds": seconds,
    }


def run(transcriber: Transcriber, recording: Recording) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    began = time.perf_counter()
    alone = []
    for turn in recording.turns:
        found = transcriber.transcribe(turn.audio)
        alone.append((str(found["language"]), str(found["text"])))
    rows["alone"] = score(recording, alone, time.perf_counter() - began)

    began = time.perf_counter()
    found = transcribe_code_switching(transcriber, recording.audio)
    rows["code-switching"] = score(
        recording, per_turn(recording, found["segments"], found["language"]), time.perf_counter() - began
    )
    if recording.name == "es/en call":
        began = time.perf_counter()
        found = transcribe_code_switching(transcriber, recording.audio, languages=["spa", "eng"])
        rows["code-switching es,en"] = score(
            recording, per_turn(recording, found["segments"], found["language"]), time.perf_counter() - began
        )
    began = time.perf_counter()
    found = transcriber.transcribe(recording.audio)
    rows["one language"] = score(
        recording, per_turn(recording, found["segments"], str(found["language"])), time.perf_counter() - began
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--turns", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--small-pool", action="store_true", help="only the first 3-4 eSpeak sentences per language")
    arguments = parser.parse_args()
    if not shutil.which("espeak-ng"):
        sys.exit("bench/languages.py needs espeak-ng (apt-get install espeak-ng)")
    settings = Settings()
    settings = settings.model_copy(
        update={"whisper": settings.whisper.model_copy(update={"cpu_threads": arguments.threads})}
    )
    transcriber = Transcriber(settings.whisper, settings.model_cache_dir, model=transcription_model(settings))
    transcriber.load()
    totals: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="speechflow-bench-") as folder:
        pool = make_turns(Path(folder), more=not arguments.small_pool)
    print(
        f"{'seed':>4}  {'recording':<11} {'audio s':>7}  {'way':<21} {'lang acc':>8} {'err pooled':>10} "
        f"{'err/turn':>8} {'wall s':>7}"
    )
    for seed in arguments.seeds:
        for recording in recordings(pool, seed=seed, count=arguments.turns):
            audio_seconds = len(recording.audio) / SAMPLE_RATE
            for way, row in run(transcriber, recording).items():
                totals.setdefault((recording.name, way), []).append(row)
                print(
                    f"{seed:>4}  {recording.name:<11} {audio_seconds:>7.1f}  {way:<21} {row['accuracy']:>8.1%} "
                    f"{row['pooled']:>10.1%} {row['mean']:>8.1%} {row['seconds']:>7.1f}",
                    flush=True,
                )
    print("\nmean over seeds")
    for (name, way), rows in totals.items():
        print(
            f"      {name:<11} {'':>7}  {way:<21} {np.mean([r['accuracy'] for r in rows]):>8.1%} "
            f"{np.mean([r['pooled'] for r in rows]):>10.1%} {np.mean([r['mean'] for r in rows]):>8.1%} "
            f"{np.mean([r['seconds'] for r in rows]):>7.1f}"
        )


if __name__ == "__main__":
    main()
