"""`aura eval`: AuRA against its baselines on one or more manifests, accuracy and latency from one run.

Every system answers through the same interface (`System.answer` for batches, `System.stream` for one
example, yielding text as it is generated) and, except `cascade-fast`, through the same decoding loop
(`aura.infer.aura_model.Decoding`: greedy, KV cache), so differences in the numbers come from the systems, not from
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
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aura.audio.features import SAMPLE_RATE, load_audio
from aura.data.manifest import Example, read_manifest
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import Decoding, GenerationRequest, stop_token_ids
from aura.metrics import error_rates, qa_scores
from aura.model.batching import StudentBatch, span_attention_mask
from aura.model.checkpoint import checkpoint_folder, read_meta
from aura.model.prompt import with_transcript

SYSTEMS = ("aura", "cascade", "cascade-beam", "cascade-fast", "bridge", "text", "whisper")
ASR_TASK = "asr"
THROUGHPUT_BATCH = 8


class EvalError(ValueError):
    """A request `aura eval` cannot run (unknown system, missing checkpoint); the message says what to do."""


@dataclass(frozen=True)
class EvalItem:
    """One manifest example with its clip decoded: what every system receives."""

    id: str
    task: str
    prompt: str
    response: str
    transcript: str | None
    wave: np.ndarray = field(repr=False)
    distractors: tuple[str, ...] | None = None

    @property
    def duration(self) -> float:
        return self.wave.size / SAMPLE_RATE

    @classmethod
    def from_example(cls, example: Example) -> EvalItem:
        return cls(
            id=example.id,
            task=example.task,
            prompt=example.prompt,
            response=example.response,
            transcript=example.transcript,
            wave=load_audio(example.audio, name=example.id),
            distractors=None if example.distractors is None else tuple(example.distractors),
        )

    def text_prompt(self, transcript: str) -> str:
        return with_transcript(self.prompt, transcript)


def load_items(manifests: str | Path | Sequence[str | Path], limit: int | None = None) -> list[EvalItem]:
    """Read one or more manifests (bad lines fail with their line numbers) and decode their clips.

    Several manifests (e.g. the `asr` and `context-qa` test splits) make one evaluation set; `limit`
    keeps the first N examples of each, so every task stays represented. Clips of any length are
    evaluated: inference reads long audio in 30-s windows (the 30-s limit is for training data).
    """
    paths = [manifests] if isinstance(manifests, str | Path) else list(manifests)
    if not paths:
        raise EvalError("no manifest given; pass --data MANIFEST (repeat it for several).")
    examples = []
    for path in paths:
        examples += read_manifest(path, max_seconds=float("inf"))[:limit]
    seen: dict[str, int] = Counter(ex.id for ex in examples)
    repeated = sorted(ex_id for ex_id, count in seen.items() if count > 1)
    if repeated:
        raise EvalError(f"example id(s) {repeated[:5]} appear in more than one manifest; ids must be unique.")
    return [EvalItem.from_example(ex) for ex in examples]


# ------------------------------------------------------------------------------------------ systems
class System(ABC):
    """What `aura eval`, the demo and the benchmarks call: batched answers and a streamed answer."""

    name: str
    tasks: tuple[str, ...] | None = None  # the tasks it can answer (None = all)
    skips: tuple[str, ...] = ()  # tasks it is not evaluated on

    def handles(self, task: str) -> bool:
        return (self.tasks is None or task in self.tasks) and task not in self.skips

    @abstractmethod
    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        """Greedy answers for a batch, in order."""

    @abstractmethod
    def stream(self, item: EvalItem) -> Iterator[str]:
        """The answer to one example as text pieces, produced as they are generated."""


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """One user turn through the chat template (its default system prompt included), as token ids: the
    prompt every text-reading baseline gives its LLM, whatever runtime runs it."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class ChatLLM:
    """A plain causal LLM (no LoRA) answering chat-templated text prompts through `aura.infer.aura_model.Decoding`.

    The baselines go through the same prefill-then-cached-decode loop as the AuRA model, so their
    latencies compare implementations of the systems, not two generation loops.
    """

    def __init__(self, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int = 64):
        self.llm, self.tokenizer, self.max_new_tokens = llm.eval(), tokenizer, max_new_tokens
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.stop_ids = stop_token_ids(llm, tokenizer)

    @torch.inference_mode()
    def _prefill(self, prompts: Sequence[str]) -> StudentBatch:
        ids = [chat_prompt_ids(self.tokenizer, p) for p in prompts]
        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        length = max(len(row) for row in ids)
        tokens = torch.full((len(ids), length), self.tokenizer.pad_token_id, dtype=torch.long)
        valid = torch.zeros(len(ids), length, dtype=torch.bool)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = torch.tensor(row)
            valid[i, : len(row)] = True
        embeds = embed(tokens.to(device))
        mask = span_attention_mask(valid, torch.zeros_like(tokens), False, embeds.dtype)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        return StudentBatch(
            embeds=embeds,
            mask=mask.to(device),
            positions=positions.to(device),
            valid=valid.to(device),
            lengths=[len(row) for row in ids],
            audio_mask=torch.zeros_like(valid, device=device),
        )

    def decoding(self, prompts: Sequence[str]) -> Decoding:
        requests = [GenerationRequest(messages=[], max_new_tokens=self.max_new_tokens) for _ in prompts]
        return Decoding(self.llm, self.tokenizer, self._prefill(prompts), requests, self.stop_ids)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        decoding = self.decoding(prompts)
        for _ in decoding:
            pass
        return [result.text for result in decoding.results()]

    def stream(self, prompt: str) -> Iterator[str]:
        for _, piece in self.decoding([prompt]):
            yield piece


class TextSystem(System):
    """The ceiling: the base LLM reads the gold transcript where the audio was (QA tasks only)."""

    name = "text"
    skips = (ASR_TASK,)

    def __init__(self, llm: ChatLLM):
        self.llm = llm

    @staticmethod
    def _gold(item: EvalItem) -> str:
        if item.transcript is None:
            raise EvalError(f"example {item.id} has no transcript; the `text` system needs gold transcripts.")
        return item.text_prompt(item.transcript)

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        return self.llm.generate([self._gold(item) for item in items])

    def stream(self, item: EvalItem) -> Iterator[str]:
        yield from self.llm.stream(self._gold(item))


class CascadeSystem(System):
    """Whisper transcribes, then the base LLM answers from its transcript: the classic pipeline (QA tasks
    only: its transcription is the `whisper` system's)."""

    skips = (ASR_TASK,)

    def __init__(self, teacher: Any, llm: ChatLLM, beam_size: int = 1, name: str = "cascade"):
        self.teacher, self.llm, self.beam_size, self.name = teacher, llm, beam_size, name

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        transcripts = self.teacher.transcribe([item.wave for item in items], beam_size=self.beam_size)
        return self.llm.generate([item.text_prompt(t) for item, t in zip(items, transcripts, strict=True)])

    def stream(self, item: EvalItem) -> Iterator[str]:
        transcript = self.teacher.transcribe(item.wave, beam_size=self.beam_size)
        yield from self.llm.stream(item.text_prompt(transcript))


class WhisperSystem(System):
    """The teacher as a plain ASR model: its greedy transcript is the answer, on transcription tasks only."""

    tasks = (ASR_TASK,)

    def __init__(self, teacher: Any, name: str = "whisper"):
        self.teacher, self.name = teacher, name

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        return self.teacher.transcribe([item.wave for item in items])

    def stream(self, item: EvalItem) -> Iterator[str]:
        yield self.teacher.transcribe(item.wave)


# ------------------------------------------------------------------------------------------ running
@dataclass
class Record:
    """One system's answer to one example, with its timings (seconds) or the error it raised."""

    id: str
    task: str
    prediction: str = ""
    ttft_s: float | None = None
    total_s: float | None = None
    duration_s: float = 0.0
    error: str | None = None


def timed_stream(system: System, item: EvalItem) -> Record:
    """Run `system.stream` on one example, timing the first piece of text and the end."""
    record = Record(id=item.id, task=item.task, duration_s=item.duration)
    pieces: list[str] = []
    start = time.perf_counter()
    try:
        for piece in system.stream(item):
            if record.ttft_s is None:
                record.ttft_s = time.perf_counter() - start
            pieces.append(piece)
    except Exception as err:  # one failing example must not end the evaluation
        record.error = f"{type(err).__name__}: {err}"
        return record
    record.total_s = time.perf_counter() - start
    if record.ttft_s is None:  # the end-of-turn token came first: the first token is the last
        record.ttft_s = record.total_s
    record.prediction = "".join(pieces).strip()
    return record


def throughput(system: System, items: Sequence[EvalItem], batch_size: int) -> dict[str, float] | None:
    """Examples and audio seconds answered per second with `answer` on batches of `batch_size`."""
    done, audio, elapsed = 0, 0.0, 0.0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        began = time.perf_counter()
        try:
            system.answer(chunk)
        except Exception:  # failures are recorded by the per-example pass; skip the batch here
            continue
        elapsed += time.perf_counter() - began
        done += len(chunk)
        audio += sum(item.duration for item in chunk)
    if done == 0 or elapsed <= 0:
        return None
    return {"examples_per_s": done / elapsed, "audio_s_per_s": audio / elapsed, "examples": done}


def _spread(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Median with the 10th/90th percentiles: the spread of per-example timings."""
    arr = np.asarray(values, dtype=np.float64) * scale
    return {
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
    }


def latency_summary(records: Sequence[Record]) -> dict[str, Any]:
    """Median TTFT, total time and RTF (total / clip length) over the examples that succeeded."""
    ok = [r for r in records if r.error is None and r.total_s is not None]
    if not ok:
        return {}
    summary: dict[str, Any] = {}
    for key, values, scale in (
        ("ttft_ms", [r.ttft_s for r in ok], 1000.0),
        ("total_ms", [r.total_s for r in ok], 1000.0),
        ("rtf", [r.total_s / r.duration_s for r in ok], 1.0),
    ):
        stats = _spread(values, scale)
        summary[f"{key}_median" if key != "rtf" else "rtf"] = stats["median"]
        summary[f"{key}_p10"], summary[f"{key}_p90"] = stats["p10"], stats["p90"]
    return summary


def score(items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Metrics per task: WER/CER for `asr` (reference = the response), EM/F1/containment otherwise."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} examples but {len(predictions)} predictions")
    by_task: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_task.setdefault(item.task, []).append(i)
    metrics: dict[str, dict[str, float]] = {}
    for task, indices in sorted(by_task.items()):
        golds = [items[i].response for i in indices]
        preds = [predictions[i] for i in indices]
        if task == ASR_TASK:
            rates = error_rates(golds, preds)
            metrics[task] = {"wer": rates.wer, "cer": rates.cer, "n": len(indices)}
        else:
            rivals = [items[i].distractors for i in indices]
            known = None if any(r is None for r in rivals) else rivals
            metrics[task] = {**qa_scores(preds, golds, known), "n": len(indices)}
    return metrics


def chance_accuracy(items: Sequence[EvalItem]) -> dict[str, float]:
    """Per QA task whose examples all list distractors: the accuracy of picking one of the candidates the
    prompt offers uniformly, the floor a system that does not hear the question still reaches."""
    by_task: dict[str, list[int | None]] = {}  # per example: how many candidates the prompt offers
    for item in items:
        if item.task != ASR_TASK:
            candidates = None if item.distractors is None else 1 + len(item.distractors)
            by_task.setdefault(item.task, []).append(candidates)
    return {
        task: sum(1 / n for n in counts if n) / len(counts)
        for task, counts in sorted(by_task.items())
        if None not in counts
    }


@dataclass
class SystemReport:
    name: str
    records: list[Record]
    metrics: dict[str, dict[str, float]]
    latency: dict[str, Any]

    @property
    def failures(self) -> list[Record]:
        return [r for r in self.records if r.error is not None]


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


# ------------------------------------------------------------------------------------------ report
def _headline(task: str, values: dict[str, float]) -> tuple[str, float]:
    """The one accuracy number a task is plotted by (higher is better)."""
    if task == ASR_TASK:
        return "1 - WER", max(0.0, 1.0 - values["wer"])
    if "accuracy" in values:
        return "accuracy", values["accuracy"]
    return "answer contained", values["contained"]


def _markdown(reports: Sequence[SystemReport], n: int, data: str, chance: dict[str, float]) -> str:
    tasks = sorted({t for r in reports for t in r.metrics})
    columns = []
    for task in tasks:
        keys = ["wer", "cer"] if task == ASR_TASK else ["em", "f1", "contained", "accuracy"]
        columns += [(task, k) for k in keys if any(k in r.metrics.get(task, {}) for r in reports)]
    header = ["system"] + [f"{t} {k.upper() if k in ('wer', 'cer', 'em') else k}" for t, k in columns]
    header += ["TTFT ms (p10-p90)", "total ms", "RTF", "ex/s b1", "ex/s b8", "failed"]
    lines = [f"# aura eval: {n} examples from `{data}`", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for report in reports:
        cells = [report.name]
        for task, key in columns:
            value = report.metrics.get(task, {}).get(key)
            cells.append("" if value is None else f"{100 * value:.1f}%")
        lat = report.latency
        if lat:
            cells.append(f"{lat['ttft_ms_median']:.0f} ({lat['ttft_ms_p10']:.0f}-{lat['ttft_ms_p90']:.0f})")
            cells += [f"{lat['total_ms_median']:.0f}", f"{lat['rtf']:.3f}"]
            for b in (1, THROUGHPUT_BATCH):
                tp = lat.get(f"throughput_b{b}")
                cells.append(f"{tp['examples_per_s']:.2f}" if tp else "")
        else:
            cells += ["", "", "", "", ""]
        cells.append(str(len(report.failures)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "WER/CER after Whisper's English normaliser; EM/F1 with SQuAD normalisation; contained = the gold "
        "answer appears in the reply; accuracy = it does and no distractor the prompt offers does; TTFT from the moment the "
        "audio is in memory; RTF = total time / clip length (median); throughput = examples per second.",
    ]
    if chance:
        floors = ", ".join(f"{task} {100 * value:.1f}%" for task, value in chance.items())
        lines += [
            "",
            f"Chance accuracy (one of the candidates each prompt offers, picked uniformly): {floors}.",
        ]
    return "\n".join(lines) + "\n"


def _plots(reports: Sequence[SystemReport], out: Path, chance: dict[str, float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    markers = "osD^v<>"
    tasks = sorted({t for r in reports for t in r.metrics})
    for ri, report in enumerate(reports):
        lat = report.latency
        if not lat:
            continue
        for ti, task in enumerate(tasks):
            if task not in report.metrics:
                continue
            label, value = _headline(task, report.metrics[task])
            x = lat["ttft_ms_median"]
            ax.errorbar(
                x,
                value,
                xerr=[[x - lat["ttft_ms_p10"]], [lat["ttft_ms_p90"] - x]],
                fmt=markers[ti % len(markers)],
                color=f"C{ri}",
                capsize=3,
                label=f"{report.name} / {task} ({label})",
            )
    for task, floor in chance.items():
        ax.axhline(floor, color="grey", linestyle=":", label=f"chance / {task}")
    timed = [r.latency["ttft_ms_median"] for r in reports if r.latency]
    if timed and max(timed) > 10 * min(timed):
        ax.set_xscale("log")
    ax.set_xlabel("time to first token, ms (median, p10-p90)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("accuracy vs time to first token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    paths.append(out / "accuracy_vs_ttft.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [r.name for r in reports]
    for ax, key, title in ((axes[0], "ttft_s", "time to first token"), (axes[1], "total_s", "total time")):
        data = [
            [1000 * getattr(rec, key) for rec in r.records if rec.error is None] or [np.nan] for r in reports
        ]
        ax.boxplot(data, tick_labels=names, showfliers=True)
        for i, values in enumerate(data, start=1):
            jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(values))
            ax.scatter(np.full(len(values), i) + jitter, values, s=8, alpha=0.5, color=f"C{i - 1}")
        ax.set_ylabel("ms per example")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("per-example latency (batch 1)")
    fig.tight_layout()
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def write_report(
    reports: Sequence[SystemReport], items: Sequence[EvalItem], data: str, out: Path
) -> dict[str, Any]:
    """`report.json`, `report.md`, `predictions.jsonl` and the two PNG plots under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "data": data,
        "n": len(items),
        "tasks": dict(Counter(item.task for item in items)),
        "chance_accuracy": chance_accuracy(items),
        "machine": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "systems": {
            r.name: {
                "metrics": r.metrics,
                "latency": r.latency,
                "failed": len(r.failures),
                "failures": [{"id": f.id, "error": f.error} for f in r.failures],
            }
            for r in reports
        },
    }
    (out / "report.md").write_text(_markdown(reports, len(items), data, report["chance_accuracy"]))
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for r in reports:
            for rec in r.records:
                handle.write(json.dumps({"system": r.name, **asdict(rec)}) + "\n")
    report["plots"] = [str(p) for p in _plots(reports, out, report["chance_accuracy"])]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


# ------------------------------------------------------------------------------------------ building
class CheckpointSystem(System):
    """`aura` or `bridge`: a checkpoint trained by `aura train`, answering through `aura.infer.aura_model.AuraModel`."""

    def __init__(self, model: AuraModel, name: str = "aura", max_new_tokens: int = 64):
        self.model, self.name, self.max_new_tokens = model, name, max_new_tokens

    def answer(self, items: Sequence[EvalItem]) -> list[str]:
        answers = self.model.generate(
            audio=[item.wave for item in items],
            prompt=[item.prompt for item in items],
            max_new_tokens=self.max_new_tokens,
        )
        return list(answers)

    def stream(self, item: EvalItem) -> Iterator[str]:
        yield from self.model.stream(item.wave, item.prompt, max_new_tokens=self.max_new_tokens)


@dataclass
class SystemFactory:
    """Builds the requested systems on one base LLM and one teacher, loading each shared part once.

    The base LLM and teacher default to the ones the AuRA checkpoint was trained with, so a comparison
    cannot silently mix models; a bridge checkpoint trained on another LLM or teacher is refused.
    """

    model: str | Path | None = None
    bridge_model: str | Path | None = None
    llm: str | None = None
    teacher: str | None = None
    beam_size: int = 5
    max_new_tokens: int = 64
    extra: dict[str, str] = field(default_factory=dict)  # more checkpoints by system name (ablations)
    dtype: torch.dtype = torch.float32  # of the checkpoints' weights and activations
    _checkpoints: dict[str, AuraModel] = field(default_factory=dict)
    _chat: ChatLLM | None = None
    _teacher: Any = None

    def _path(self, name: str) -> str | Path:
        path = self.extra.get(name) or (self.model if name == "aura" else self.bridge_model)
        if path is None:
            flag = "--model" if name == "aura" else "--bridge-model"
            raise EvalError(
                f"the `{name}` system needs its checkpoint: pass {flag} RUN_DIR (from `aura train`)."
            )
        return path

    def inspect(self, name: str) -> None:
        """Read a checkpoint's config (cheap, no weights): check its architecture, adopt or check its models."""
        path = self._path(name)
        model = read_meta(checkpoint_folder(path)).model
        if name in ("aura", "bridge") and model.arch != name:
            raise EvalError(f"{path}: a checkpoint of the `{model.arch}` architecture, not `{name}`.")
        self._agree(name, model.llm, model.teacher)

    def checkpoint(self, name: str) -> AuraModel:
        """The checkpoint behind system `name` (`aura`, `bridge` or an extra NAME=DIR), loaded once."""
        if name not in self._checkpoints:
            self.inspect(name)
            self._checkpoints[name] = AuraModel.from_pretrained(self._path(name), dtype=self.dtype)
        return self._checkpoints[name]

    def _agree(self, source: str, llm: str, teacher: str) -> None:
        """Adopt the checkpoint's base LLM and teacher, or refuse one that differs from those in use."""
        for attr, value in (("llm", llm), ("teacher", teacher)):
            current = getattr(self, attr)
            if current is None:
                setattr(self, attr, value)
            elif str(current) != str(value):
                raise EvalError(
                    f"the `{source}` checkpoint was trained with {attr} {value!r} but the evaluation uses "
                    f"{current!r}; all systems must share the same base LLM and teacher."
                )

    def _defaults(self) -> None:
        """The checkpoints' base LLM and teacher, else the registry's defaults."""
        if self.model is not None:
            self.inspect("aura")
        if self.bridge_model is not None:
            self.inspect("bridge")
        from aura.registry import DEFAULT_STUDENT, DEFAULT_TEACHER

        self.llm = self.llm or DEFAULT_STUDENT
        self.teacher = self.teacher or DEFAULT_TEACHER

    def chat(self) -> ChatLLM:
        if self._chat is None:
            self._defaults()
            from aura.model.llm import load_llm

            self._chat = ChatLLM(*load_llm(self.llm), max_new_tokens=self.max_new_tokens)
        return self._chat

    def whisper(self) -> Any:
        if self._teacher is None:
            self._defaults()
            from aura.teacher.whisper import load_teacher

            self._teacher = load_teacher(self.teacher)
        return self._teacher

    def build(self, name: str) -> System:
        if name in ("aura", "bridge") or name in self.extra:
            return CheckpointSystem(self.checkpoint(name), name=name, max_new_tokens=self.max_new_tokens)
        if name == "text":
            return TextSystem(self.chat())
        if name == "cascade":
            return CascadeSystem(self.whisper(), self.chat(), beam_size=1, name=name)
        if name == "cascade-beam":
            return CascadeSystem(self.whisper(), self.chat(), beam_size=self.beam_size, name=name)
        if name == "whisper":
            return WhisperSystem(self.whisper())
        if name == "cascade-fast":
            from aura.eval.fast_cascade import FastCascadeSystem, FastWhisper, LlamaCppChat

            self._defaults()
            return FastCascadeSystem(
                FastWhisper(str(self.teacher)), LlamaCppChat(str(self.llm), self.max_new_tokens)
            )
        raise EvalError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}.")

    def release(self, name: str) -> None:
        """Drop a checkpoint once its system is done, so two LLM copies are never held for long."""
        self._checkpoints.pop(name, None)


def parse_systems(spec: str | Sequence[str]) -> dict[str, str | None]:
    """`"aura,cascade,nodistill=runs/nd"` -> `{"aura": None, "cascade": None, "nodistill": "runs/nd"}`.

    `NAME=DIR` adds a further checkpoint under its own name (an ablation beside `aura`); other entries
    must be built-in systems. Unknown or repeated names are refused.
    """
    entries = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    systems: dict[str, str | None] = {}
    for entry in entries:
        name, _, path = (part.strip() for part in entry.partition("="))
        if path and (not name or name in SYSTEMS):
            raise EvalError(f"{entry!r}: give an extra checkpoint a new name, e.g. nodistill=RUN_DIR.")
        if not path and name not in SYSTEMS:
            raise EvalError(
                f"unknown system {name!r}; choose from {', '.join(SYSTEMS)} or add a checkpoint as NAME=RUN_DIR."
            )
        if name in systems:
            raise EvalError(f"system {name!r} listed twice in {spec!r}.")
        systems[name] = path or None
    if not systems:
        raise EvalError(f"no systems in {spec!r}; choose from {', '.join(SYSTEMS)} (comma-separated).")
    return systems


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
