"""Short-turn conversations of held-out voices (bench/diarize.py, the short-turn table).

The voices are none of those the other tables use, so that what was tuned on those is measured on
audio it has not seen. Each is made here, with eSpeak NG and SoX:

- eSpeak NG voice variants far apart to CAM++ (cosine of their mean embeddings 0.51–0.80, where
  en-us against en-gb+f3 is 0.95): `en-us+m3` low-pitched, `en-gb+f4` high-pitched, `en-us+klatt2`,
  `en-gb-scotland+m7` fast, `en-029+f2`, each reading sentences of its own;
- the fixture voices with their pitch shifted by SoX (`pitch`, which keeps the timing, so a clip's
  reference words are the original clip's): the LibriVox reader 350 cents lower and 400 higher
  (0.55–0.62 to the reader and to each other), the Kokoro English voice 450 lower, French 350
  higher, Mandarin 400 lower (the Kokoro voices stay alike to CAM++ whatever the pitch: 0.83–0.91).

Clips are cut between words into turns of 1–4 s and laid out one speaker after another, as
bench/diarize.py lays out its conversations, once per seed. Sets (the most alike pair of voices in
a set, about: 0.52 in the 3-speaker set, 0.67 the two eSpeak voices of the 4-speaker set, 0.62 and 0.61
the eSpeak and the LibriVox pairs of the 5-speaker set):

- `3 spk`: LibriVox +400, eSpeak Scottish, Kokoro fr +350;
- `4 spk`: LibriVox -350, eSpeak en-gb+f4, eSpeak klatt2, Kokoro en -450;
- `5 spk`: LibriVox, LibriVox -350, eSpeak en-us+m3, eSpeak en-029+f2, Kokoro zh -400.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ESPEAK_VOICES = {
    "espeak-m3": ("en-us+m3", "-p", "30"),
    "espeak-f4": ("en-gb+f4", "-p", "75"),
    "espeak-klatt": ("en-us+klatt2",),
    "espeak-scot": ("en-gb-scotland+m7", "-s", "170"),
    "espeak-f2": ("en-029+f2", "-p", "60"),
}
SENTENCES = (
    "Did you see the letter that came this morning from the bank? "
    "They want us to come in on Thursday and sign the new papers. "
    "I told them the old address twice, and still it went to the wrong house.",
    "No, I left before the post arrived, so what did it say? "
    "Thursday is difficult for me, could we ask for Friday instead? "
    "My sister can look after the children if we go early in the day.",
    "The garden needs water again, the roses are dry and the grass is turning brown. "
    "If it does not rain by Sunday, I will put the sprinkler on at night.",
    "Somebody parked across the gate again last night, and the delivery van could not get in. "
    "I left a note on the windscreen, but nobody came back for the car.",
    "We should book the tickets now, before the prices go up for the summer. "
    "The early train is cheaper, and it gets in before lunch on the coast.",
)
PITCHED = {
    # name: (fixture voice, cents)
    "libri+400": ("libri", 400),
    "libri-350": ("libri", -350),
    "kokoro-en-450": ("kokoro-en", -450),
    "kokoro-fr+350": ("kokoro-fr", 350),
    "kokoro-zh-400": ("kokoro-zh", -400),
}
SETS = {
    "3 spk": ("libri+400", "espeak-scot", "kokoro-fr+350"),
    "4 spk": ("libri-350", "espeak-f4", "espeak-klatt", "kokoro-en-450"),
    "5 spk": ("libri", "libri-350", "espeak-m3", "espeak-f2", "kokoro-zh-400"),
}
TURN_SECONDS = (1.0, 4.0)
CONVERSATION_SECONDS = 60.0


@dataclass(frozen=True)
class Voice:
    name: str
    paths: tuple[Path, ...]
    language: str
    words_from: tuple[Path, ...] | None = None
    """The clips whose reference words these clips share (a pitch shift keeps the timing); None:
    transcribe these clips themselves."""


def _sox(source: Path, target: Path, *effect: str) -> None:
    # 16 kHz mono 16-bit, as the fixtures; -V1: SoX warns about the Kokoro WAVs' short header and a few clipped samples.
    subprocess.run(["sox", "-V1", str(source), "-r", "16000", "-c", "1", "-b", "16", str(target), *effect], check=True)


def voices(fixture_clips: dict[str, list[tuple[Path, str]]], workdir: Path) -> dict[str, Voice]:
    """Every voice of SETS, made in `workdir`; `fixture_clips` maps a fixture voice to its
    (path, language) clips."""
    made: dict[str, Voice] = {}
    for index, (name, options) in enumerate(ESPEAK_VOICES.items()):
        paths = []
        # Each voice reads a different rotation of the sentences, one clip per sentence.
        for number in range(len(SENTENCES)):
            sentence = SENTENCES[(index + number) % len(SENTENCES)]
            raw, path = workdir / f"{name}-{number}-raw.wav", workdir / f"{name}-{number}.wav"
            subprocess.run(["espeak-ng", "-v", *options, "-w", str(raw), sentence], check=True)
            _sox(raw, path)
            paths.append(path)
        made[name] = Voice(name, tuple(paths), "en")
    for name, (source, cents) in PITCHED.items():
        originals = tuple(path for path, _language in fixture_clips[source])
        paths = []
        for original in originals:
            path = workdir / f"{name}-{original.stem}.wav"
            _sox(original, path, "pitch", str(cents))
            paths.append(path)
        made[name] = Voice(name, tuple(paths), fixture_clips[source][0][1], words_from=originals)
    made["libri"] = Voice("libri", tuple(path for path, _ in fixture_clips["libri"]), "en")
    return made


def conversations(
    seeds: list[int],
    cut: Callable[[str, tuple[float, float], random.Random], list[Any]],
    lay_out: Callable[[str, dict[str, list[Any]], float, random.Random], Any],
) -> list[tuple[str, int, Any]]:
    """(set name, seed, conversation) for every set and seed: `cut(voice, span, rng)` cuts a voice's
    clips into pieces, `lay_out` is bench/diarize.py's. Each set and seed has a random sequence of its
    own, so a set's conversation does not change when another set is added."""
    built = []
    for seed in seeds:
        for name, members in SETS.items():
            rng = random.Random(f"{name}/{seed}")
            pools = {voice: cut(voice, TURN_SECONDS, rng) for voice in members}
            built.append((name, seed, lay_out(f"{name}, seed {seed}", pools, CONVERSATION_SECONDS, rng)))
    return built
