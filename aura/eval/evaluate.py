"""`aura eval`: AuRA against its baselines on one or more manifests, accuracy and latency from one run.

Every system answers through the same interface (`System.answer` for batches, `System.stream` for one
example, yielding text as it is generated) and, except `cascade-fast`, through the same decoding loop
(`aura.infer.decoding.Decoding`: greedy, KV cache), so differences in the numbers come from the systems, not from
the harness:

- `aura`: the AuRA checkpoint; audio enters through the embedding layer, no encoder runs.
- `bridge`: the baseline checkpoint (frozen Whisper encoder -> projector -> LLM+LoRA).
- `cascade` / `cascade-beam`: the teacher Whisper transcribes (greedy / beam search), then the base LLM
  without LoRA answers from the transcript placed where the audio was.
- `cascade-fast`: the cascade users run on a CPU, on the same registry files: faster-whisper (CTranslate2,
  int8, greedy) transcribes, llama.cpp (the GGUF) answers (`aura.eval.fast_cascade`; optional extra).
- `text`: the base LLM given the gold transcript: the ceiling for the LLM's answers.
- `whisper`: the teacher alone, greedy, on the `asr` examples: the transcription WER AuRA is held to.

The cascades and `text` answer the QA tasks only: asked to "transcribe" a transcript, a chat LLM copies or
paraphrases it, which is no measure of hearing; on `asr` the teacher's own WER (`whisper`) is the cascade's.

Latency is measured in the caller's thread from the moment the clip (or, for `text`, the transcript) is
in memory: time to first generated text, total time, real-time factor, and throughput at batch 1 and 8.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from aura.eval.items import EvalError, EvalItem, load_items
from aura.eval.latency import THROUGHPUT_BATCH, Record, latency_summary, throughput, timed_stream
from aura.eval.report import SystemReport, score, write_report
from aura.eval.systems import System, SystemFactory, parse_systems


def evaluate_system(
    system: System,
    items: Sequence[EvalItem],
    throughput_items: int = 16,
    progress: bool = True,
) -> SystemReport:
    """Answer every example (streamed and timed), score, then measure batch-1 and batch-8 throughput.

    One untimed warm-up answer comes first so one-off costs (lazy init, allocator growth) do not land
    on the first example. A failed example counts as an empty (wrong) answer and keeps its error.
    """
    with contextlib.suppress(Exception):  # the per-example pass records any error properly
        system.answer(items[:1])
    records = [
        timed_stream(system, item)
        for item in tqdm(items, desc=f"eval {system.name}", unit="ex", disable=not progress, leave=False)
    ]
    metrics = score(items, [r.prediction for r in records])
    latency = latency_summary(records)
    # throughput on examples that answered, so one bad example cannot void a whole batch
    subset = [item for item, record in zip(items, records, strict=True) if record.error is None][
        :throughput_items
    ]
    for batch_size in (1, THROUGHPUT_BATCH):
        measured = throughput(system, subset, batch_size)
        if measured is not None:
            latency[f"throughput_b{batch_size}"] = measured
    return SystemReport(system.name, records, metrics, latency)


def run_eval(
    data: str | Path | Sequence[str | Path],
    systems: str | Sequence[str],
    out: str | Path,
    *,
    model: str | Path | None = None,
    bridge_model: str | Path | None = None,
    llm: str | None = None,
    teacher: str | None = None,
    limit: int | None = None,
    beam_size: int = 5,
    max_new_tokens: int = 64,
    throughput_items: int = 16,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """`aura eval`: evaluate each system on the manifest(s), then write the report, table and plots.
    `dtype` is the checkpoints' (aura, bridge, extras); the baselines' LLMs run in float32."""
    names = parse_systems(systems)
    if "aura" in names and model is None:
        raise EvalError("the `aura` system needs --model RUN_DIR (a checkpoint from `aura train`).")
    if "bridge" in names and bridge_model is None:
        raise EvalError(
            "the `bridge` system needs --bridge-model RUN_DIR (`aura train` with model.arch=bridge)."
        )
    items = load_items(data, limit)
    extra = {name: path for name, path in names.items() if path is not None}
    factory = SystemFactory(model, bridge_model, llm, teacher, beam_size, max_new_tokens, extra, dtype)
    # read the checkpoints' configs first: they fix the base LLM and teacher the baselines must share
    for name in names:
        if name in ("aura", "bridge") or name in extra:
            factory.inspect(name)
    reports = []
    for name in names:
        system = factory.build(name)
        mine = [item for item in items if system.handles(item.task)]
        if mine:
            reports.append(evaluate_system(system, mine, throughput_items, progress))
        factory.release(name)
    label = str(data) if isinstance(data, str | Path) else ", ".join(map(str, data))
    return write_report(reports, items, label, Path(out))


def rescore(out: str | Path, data: str | Path | Sequence[str | Path]) -> dict[str, Any]:
    """Recompute the metrics of an earlier `aura eval` in `out` from its predictions.jsonl and the (possibly
    updated) manifests, keeping its timings: for a metric or manifest change without regenerating."""
    out = Path(out)
    try:
        old = json.loads((out / "report.json").read_text())
        lines = (out / "predictions.jsonl").read_text().splitlines()
    except (OSError, json.JSONDecodeError) as err:
        raise EvalError(
            f"{out}: no readable report.json and predictions.jsonl from `aura eval` ({err})."
        ) from err
    items = load_items(data)
    by_id = {item.id: item for item in items}
    records: dict[str, list[Record]] = {}
    for line in lines:
        row = json.loads(line)
        records.setdefault(row.pop("system"), []).append(Record(**row))
    reports = []
    for name, mine in records.items():
        missing = [r.id for r in mine if r.id not in by_id]
        if missing:
            raise EvalError(
                f"{out}: {name} answered {missing[0]!r}, which is not in the given --data manifests."
            )
        metrics = score([by_id[r.id] for r in mine], [r.prediction for r in mine])
        reports.append(SystemReport(name, mine, metrics, old["systems"][name]["latency"]))
    answered = {r.id for mine in records.values() for r in mine}
    return write_report(reports, [item for item in items if item.id in answered], old["data"], out)
