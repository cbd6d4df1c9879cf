"""How well Whisper tiny.en hears each espeak-ng voice: greedy WER on the same test sentences per voice.

espeak's voices are a base accent with a variant (+m1..m8, +f1..f5); some of them are hard to understand
even for people. The engine's `UNINTELLIGIBLE` list is read from this benchmark: a voice whose WER is
above `INTELLIGIBLE_WER` is not used, so the synthetic speech stays speech a listener can follow.
`python -m benchmarks.espeak_voices` writes `results/espeak_voices.json`.
"""

from __future__ import annotations

import random

from aura.data.corpus import sentences_in
from aura.data.engines.espeak import INTELLIGIBLE_WER, Espeak, candidates
from aura.metrics import error_rates, normalize_transcript
from benchmarks.common import write_result

CLIPS_PER_VOICE = 6


def run() -> dict:
    from aura.teacher.whisper import load_teacher

    engine = Espeak()
    voices = sorted({*candidates("train"), *candidates("heldout")})
    pool = list(sentences_in("test"))
    rng = random.Random(0)
    texts = rng.sample(pool, CLIPS_PER_VOICE)  # the same sentences for every voice: voices compare
    teacher = load_teacher("whisper-tiny.en")
    rows = {}
    for voice in voices:
        _, settings = engine.draw(rng, [voice])
        heard = teacher.transcribe([engine.speak(t, voice, settings) for t in texts])
        wer = error_rates([normalize_transcript(t) for t in texts], heard).wer
        rows[voice] = round(wer, 4)
        print(f"{voice:24s} {wer:6.1%}", flush=True)
    result = {
        "teacher": "whisper-tiny.en",
        "clips_per_voice": CLIPS_PER_VOICE,
        "intelligible_wer": INTELLIGIBLE_WER,
        "wer": rows,
        "unintelligible": sorted(v for v, w in rows.items() if w > INTELLIGIBLE_WER),
    }
    write_result("espeak_voices", result)
    return result


if __name__ == "__main__":
    run()
