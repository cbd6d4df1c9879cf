"""Time to the first token as the audio grows (1–60 s): AuRA's single prefill vs cascade and bridge.

AuRA's cost grows with 12.5 audio tokens per second inside one LLM pass; the cascade must first run
Whisper's encoder and its autoregressive decoder over every 30-s window; the bridge runs the encoder
before the LLM can start.
"""

from __future__ import annotations

from aura.eval.items import EvalItem
from aura.eval.latency import timed_stream
from aura.eval.systems import SystemFactory
from benchmarks.checkpoints import checkpoint, clips, compare_main
from benchmarks.common import summarize, write_result

SECONDS = (1, 2, 5, 10, 20, 30, 60)


def run(repeats: int = 3, model: str | None = None, bridge_model: str | None = None) -> dict:
    factory = SystemFactory(
        model=checkpoint("aura", model), bridge_model=checkpoint("bridge", bridge_model), max_new_tokens=1
    )
    systems = [factory.build(name) for name in ("aura", "cascade", "bridge")]
    rows = []
    for seconds in SECONDS:
        item = EvalItem(
            id=f"{seconds}s",
            task="asr",
            prompt="Transcribe the audio.",
            response="",
            transcript="",
            wave=clips(seconds),
        )
        row: dict = {"audio_seconds": seconds}
        for system in systems:
            timed_stream(system, item)  # warm-up at this length
            times = []
            for _ in range(repeats):
                record = timed_stream(system, item)
                if record.error:
                    raise RuntimeError(f"{system.name} at {seconds} s: {record.error}")
                times.append(record.ttft_s * 1000)
            row[system.name] = summarize(times)
        row["cascade_over_aura"] = row["cascade"]["median_ms"] / row["aura"]["median_ms"]
        row["bridge_over_aura"] = row["bridge"]["median_ms"] / row["aura"]["median_ms"]
        print(
            f"{seconds:>3} s audio: aura {row['aura']['median_ms']:.0f} ms, cascade {row['cascade']['median_ms']:.0f} ms, "
            f"bridge {row['bridge']['median_ms']:.0f} ms"
        )
        rows.append(row)
    write_result("scaling", {"metric": "time to first token (ms)", "repeats": repeats, "rows": rows})
    return {"rows": rows}


def main() -> None:
    compare_main(__doc__, run, repeats=3)


if __name__ == "__main__":
    main()
