"""`aura demo`: what AuRA does, with the shipped checkpoints, on this CPU in a few minutes.

1. Fresh speech: transcription and context-QA clips synthesised with held-out voices and entities, and,
   when the Debian Asterisk prompts are installed, real recorded speech.
2. The shipped `aura-smollm2-135m` and `aura-smollm2-135m-bridge` against the teacher Whisper (the WER
   AuRA is held to) and the cascade Whisper -> LLM (the latency AuRA beats), with the text ceiling and
   chance beside QA accuracy (`aura eval`).
3. The alignment picture of the shipped checkpoint (`aura diagnose`).
4. Training as a user meets it: a short adaptation of the shipped checkpoint to new data (noisy speech,
   `train.init_from=aura-smollm2-135m`), measured before and after on held-out clips. `--from-scratch`
   runs the same budget from the untrained student instead, to show that it cannot work at that size.

Every stage leaves a `.done` marker in its folder, so a rerun reuses finished stages unless `--fresh`.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from aura.data.manifest import DEFAULT_MAX_SECONDS, read_manifest, write_manifest
from aura.data.synth import synthesize
from aura.eval.demo_report import print_summary, write_summary

SHIPPED = "aura-smollm2-135m"
SHIPPED_BRIDGE = "aura-smollm2-135m-bridge"
DONE = ".done"
ADAPT_NOISE_DB = 10.0  # the new condition the adaptation stage trains on: speech in a noisy room
# a fifth of the shipped recipe's rate: a short fine-tune at 5e-4 moves every LoRA block far enough to
# lose what the checkpoint hears (measured: listening gap 0.92 -> 0.56 nats, WER 86 % -> 114 % in 8 steps)
ADAPT_LR = 1e-4
REAL_WORDS = (4, 12)  # the real prompts used: sentences as long as the synthetic ones


@dataclass(frozen=True)
class DemoBudget:
    """Clips and steps of one demo size; chosen by measurement on a loaded 2-core CPU (see README). The
    defaults are `aura demo --quick`."""

    test_asr: int = 3  # fresh synthetic transcription clips
    test_qa: int = 3  # fresh synthetic context-QA clips
    real: int = 3  # real recorded prompts (Asterisk, test half), when installed
    bridge: bool = False  # evaluate the shipped bridge too (its encoder makes it the slowest system here)
    diagnose_clips: int = 3
    adapt_train: int = 6  # fresh noisy clips the adaptation trains on
    adapt_dev: int = 3  # held-out noisy clips it is measured on, before and after
    adapt_steps: int = 4
    # also transcribe the held-out clips before and after (dev LM loss and gap are free)
    adapt_wer: bool = False
    batch_size: int = 2
    # enough for the test sentences (at most 12 words); the QA answers are a word or two
    max_new_tokens: int = 24


QUICK = DemoBudget()
FULL = DemoBudget(
    test_asr=4,
    test_qa=6,
    real=4,
    bridge=True,
    diagnose_clips=4,
    adapt_train=16,
    adapt_steps=16,
    adapt_wer=True,
)


class Stage:
    """A named, timed, resumable step: skipped when its folder holds the `.done` marker."""

    def __init__(self, console: Console, root: Path, fresh: bool):
        self.console, self.root, self.fresh = console, root, fresh
        self.times: dict[str, float] = {}

    def run(self, name: str, folder: Path, work: Callable[[], Any], resumable: bool = False) -> None:
        """Run `work` into `folder`; a `resumable` stage (training) keeps an interrupted folder to resume it."""
        marker = folder / DONE
        if marker.is_file() and not self.fresh:
            self.console.rule(f"[bold]{name}[/] — reused {folder}")
            self.times[name] = 0.0
            return
        if folder.exists() and (self.fresh or not resumable):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.console.rule(f"[bold]{name}[/]")
        start = time.perf_counter()
        work()
        self.times[name] = time.perf_counter() - start
        marker.write_text(f"{self.times[name]:.1f} s\n")
        self.console.print(f"[green]{name} done in {self.times[name]:.0f} s[/]")


@dataclass(frozen=True)
class DemoData:
    """The example sets of one demo folder, each `NAME/manifest.jsonl`: `test-asr`, `test-context-qa`,
    `adapt-train`, `adapt-dev`, and `real` (None while no real speech is installed)."""

    root: Path

    def manifest(self, name: str) -> Path:
        return self.root / name / "manifest.jsonl"

    @property
    def real(self) -> Path | None:
        path = self.manifest("real")
        return path if path.is_file() else None


def _real_speech(budget: DemoBudget, folder: Path) -> str:
    """The first clips of the Asterisk prompts' test half into `folder/real`, or why there are none."""
    from aura.data import importers

    try:
        # clips over 30 s go to its rejects: far longer than the sentences the token cap reads
        halves = importers.import_asterisk(
            folder / "asterisk", max_seconds=DEFAULT_MAX_SECONDS, progress=False
        )
    except FileNotFoundError as err:
        return f"real speech: skipped ({err})"
    # sentences, not the one-word prompts ("activated"): a transcription test, not word spotting; and
    # none longer than `max_new_tokens` can hold, which would count the cut-off words as deleted
    sentences = [
        ex
        for ex in read_manifest(halves["test"][0])
        if REAL_WORDS[0] <= len(ex.response.split()) <= REAL_WORDS[1]
    ]
    examples = sentences[: budget.real]
    write_manifest(examples, folder / "real" / "manifest.jsonl")
    return (
        f"real speech: {len(examples)} Asterisk prompts of {REAL_WORDS[0]}-{REAL_WORDS[1]} words "
        "(one recorded speaker, telephone audio)."
    )


def _synth_data(budget: DemoBudget, folder: Path) -> None:
    """Held-out test clips (test entities, voices training never heard), noisy adaptation clips, real speech."""
    quiet = {"progress": False}
    synthesize("asr", budget.test_asr, folder / "test-asr", split="test", seed=7, **quiet)
    synthesize("context-qa", budget.test_qa, folder / "test-context-qa", split="test", seed=7, **quiet)
    for split, n in (("train", budget.adapt_train), ("dev", budget.adapt_dev)):
        synthesize(
            "asr", n, folder / f"adapt-{split}", split=split, seed=7, noise_snr=ADAPT_NOISE_DB, **quiet
        )
    note = _real_speech(budget, folder) if budget.real else "real speech: not asked for."
    (folder / "notes.txt").write_text(note + "\n")


def _eval_shipped(data: DemoData, budget: DemoBudget, out: Path) -> None:
    from aura.eval.evaluate import run_eval

    manifests = [data.manifest("test-asr"), data.manifest("test-context-qa")] + (
        [data.real] if data.real else []
    )
    run_eval(
        manifests,
        "whisper,aura,bridge,cascade,text" if budget.bridge else "whisper,aura,cascade,text",
        out,
        model=SHIPPED,
        bridge_model=SHIPPED_BRIDGE if budget.bridge else None,
        max_new_tokens=budget.max_new_tokens,
        throughput_items=0,
    )


def _adapt(data: DemoData, budget: DemoBudget, run_dir: Path, from_scratch: bool) -> None:
    """The shipped checkpoint's own training config, on the fresh noisy clips, for a few dozen steps; the
    trainer's dev evaluation at step 0 and at the end gives the before/after numbers."""
    from aura.config import load_config
    from aura.model.checkpoint import run_folders
    from aura.train.trainer import train

    steps = budget.adapt_steps
    overrides = [
        f"data.train={data.manifest('adapt-train')}",
        f"data.dev={data.manifest('adapt-dev')}",
        "data.probe=null",
        f"distill.cache_dir={run_dir.parent / 'teacher-cache'}",  # the demo folder holds all it made
        f"train.max_steps={steps}",
        f"train.schedule_steps={steps}",
        f"train.warmup_steps={max(1, steps // 6)}",
        f"train.lr={ADAPT_LR}",
        f"train.head_lr={2 * ADAPT_LR}",
        f"train.batch_size={budget.batch_size}",
        f"train.dev_every={steps}",
        f"train.save_every={max(1, steps // 2)}",
        f"train.log_every={max(1, steps // 4)}",
        "train.bf16=false",
        f"train.init_from={'null' if from_scratch else SHIPPED}",
    ]
    if from_scratch:
        overrides += ["train.head_warmup_steps=0"]
    config = load_config(run_folders(SHIPPED)[1] / "config.yaml", overrides)
    # an interrupted (or finished) run in `run_dir` is continued, not refused
    train(config, run_dir, resume=(run_dir / "config.yaml").is_file())


def _eval_adapted(data: DemoData, budget: DemoBudget, run_dir: Path, out: Path, from_scratch: bool) -> None:
    from aura.eval.evaluate import run_eval

    before = "" if from_scratch else "aura,"
    run_eval(
        data.manifest("adapt-dev"),
        f"{before}adapted={run_dir / 'final'}",
        out,
        model=SHIPPED,
        max_new_tokens=budget.max_new_tokens,
        throughput_items=0,
    )


def _budget_changed(console: Console, root: Path, budget: DemoBudget) -> bool:
    """Record the size a demo folder is made with; True (redo every stage) when it was made with another,
    since reused stages would then hold other clips and steps than the tables name."""
    path, wanted = root / "budget.json", asdict(budget)
    stored = json.loads(path.read_text()) if path.is_file() else None
    path.write_text(json.dumps(wanted, indent=2))
    if stored is not None and stored != wanted:
        console.print(f"[yellow]{root} was made with another demo size; redoing every stage.[/]")
        return True
    return False


def run_demo(
    out: str | Path = "aura-demo",
    quick: bool = False,
    fresh: bool = False,
    from_scratch: bool = False,
    budget: DemoBudget | None = None,
) -> dict[str, Any]:
    """Run every stage into `out`, print the tables, write `demo.md` / `demo.json`; return the summary."""
    from aura.eval.diagnose import diagnose

    console = Console(width=None if sys.stdout.isatty() else 120)
    budget = budget or (QUICK if quick else FULL)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    stage = Stage(console, root, fresh or _budget_changed(console, root, budget))
    data = DemoData(root / "data")
    eval_dir, diag_dir = root / "eval", root / "diagnose"
    adapt_run = root / ("scratch" if from_scratch else "adapt")
    adapt_eval = root / f"{adapt_run.name}-eval"
    started = time.perf_counter()

    stage.run("1/5 synthesise fresh speech", data.root, lambda: _synth_data(budget, data.root))
    stage.run(
        "2/5 shipped checkpoints vs Whisper and the cascade",
        eval_dir,
        lambda: _eval_shipped(data, budget, eval_dir),
    )
    stage.run(
        "3/5 alignment of the shipped checkpoint",
        diag_dir,
        lambda: diagnose(
            SHIPPED, data.manifest("test-asr"), diag_dir, limit=budget.diagnose_clips, probe_data=data.real
        ),
    )
    what = "train from scratch" if from_scratch else "adapt the shipped checkpoint to noisy speech"
    stage.run(f"4/5 {what}", adapt_run, lambda: _adapt(data, budget, adapt_run, from_scratch), resumable=True)
    if budget.adapt_wer:
        stage.run(
            "5/5 transcribe the held-out clips before and after",
            adapt_eval,
            lambda: _eval_adapted(data, budget, adapt_run, adapt_eval, from_scratch),
        )
    summary = summarise(root, data, adapt_run, adapt_eval, budget, from_scratch)
    summary["stage_seconds"] = stage.times
    summary["total_seconds"] = time.perf_counter() - started
    summary["report"] = str(root / "demo.md")
    summary["model"] = SHIPPED
    write_summary(summary, root)
    print_summary(console, summary)
    return summary


# ------------------------------------------------------------------------------------------ summary
def _rows_by_set(eval_dir: Path, sets: dict[str, Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per example set and system: its metrics (`aura.eval.report.score`) and median TTFT over that set alone,
    from the evaluation's predictions (one evaluation answered all sets)."""
    from aura.eval.items import load_items
    from aura.eval.report import score

    records: dict[str, list[dict[str, Any]]] = {}
    for line in (eval_dir / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        records.setdefault(row["system"], []).append(row)
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for set_name, manifest in sets.items():
        items = {item.id: item for item in load_items(manifest)}
        for system, rows in records.items():
            mine = [r for r in rows if r["id"] in items]
            if not mine:
                continue
            metrics = score([items[r["id"]] for r in mine], [r["prediction"] for r in mine])
            ttfts = [1000 * r["ttft_s"] for r in mine if r["error"] is None]
            entry = next(iter(metrics.values()))
            entry["ttft_ms"] = float(np.median(ttfts)) if ttfts else None
            table.setdefault(set_name, {})[system] = entry
    return table


def _dev_rows(run_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The trainer's first (step 0, before any update) and last dev evaluation rows."""
    with (run_dir / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("dev_lm_loss")]
    keep = ("step", "dev_lm_loss", "dev_listening_gap", "dev_distill_loss")
    first, last = ({k: float(r[k]) for k in keep if r.get(k)} for r in (rows[0], rows[-1]))
    return first, last


def summarise(
    root: Path, data: DemoData, adapt_run: Path, adapt_eval: Path, budget: DemoBudget, from_scratch: bool
) -> dict[str, Any]:
    """Every number the demo shows, each under the name of what it measures."""
    sets = {
        "synthetic asr": data.manifest("test-asr"),
        "synthetic context-qa": data.manifest("test-context-qa"),
    }
    if data.real:
        sets["real asr"] = data.real
    shipped = _rows_by_set(root / "eval", sets)
    report = json.loads((root / "eval" / "report.json").read_text())
    alignment = json.loads((root / "diagnose" / "alignment.json").read_text())
    before, after = _dev_rows(adapt_run)
    wer: dict[str, float] = {}
    if budget.adapt_wer:
        adapted = json.loads((adapt_eval / "report.json").read_text())["systems"]
        wer = {name: entry["metrics"]["asr"]["wer"] for name, entry in adapted.items()}
    return {
        "budget": asdict(budget),
        "notes": (data.root / "notes.txt").read_text().strip(),
        "shipped": shipped,
        "qa_chance": report["chance_accuracy"].get("context-qa"),
        "alignment": {
            "clips": alignment["clips"],
            "mean_cka": alignment["mean"].get("cka"),
            "mean_centred_cosine": alignment["mean"].get("centred_cosine"),
            "listening_gap": alignment["listening"]["gap"],
            "probe": alignment.get("probe", {}),
        },
        "adaptation": {
            "from_scratch": from_scratch,
            "steps": budget.adapt_steps,
            "train_clips": budget.adapt_train,
            "dev_clips": budget.adapt_dev,
            "noise_snr_db": ADAPT_NOISE_DB,
            "before": {**before, "wer": wer.get("aura")},
            "after": {**after, "wer": wer.get("adapted")},
        },
        "files": {
            "eval report": str(root / "eval" / "report.md"),
            "plots": [*report.get("plots", []), str(root / "diagnose" / "alignment.png")],
            "adapted checkpoint": str(adapt_run / "final"),
            "example clip": str(
                next(iter(sorted(data.manifest("test-context-qa").parent.glob("audio/*.wav"))), "CLIP.wav")
            ),
        },
    }
