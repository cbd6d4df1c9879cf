"""`aura diagnose`: how close the student's audio states are to the teacher's, layer by layer, and whether
they carry the words.

Per mapped layer, over all audio tokens of the clips: linear CKA between the raw student states and the
teacher's pooled states (no heads needed, widths may differ); and, through the distillation heads kept
beside the inference checkpoint (RUN_DIR/heads.safetensors), raw cosine, centred cosine (the per-layer
training-set mean target removed from both sides: Whisper states share a large common direction, so raw
cosine flatters) and, for reference, the raw cosine that always predicting that mean would score.

Decoder probe (`aura.distill.probe`): the student's last mapped states read by the teacher's own Whisper decoder.

Listening: the LM loss of the manifest's responses with each clip's own audio and with another clip's
audio. Alignment says the states look like Whisper's; only this gap says the LLM reads them. Attention:
the share of the response tokens' attention on the audio span, beside the base LLM's share on the
transcript written in its place.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from tqdm import tqdm

from aura.config import AuraConfig
from aura.distill.heads import HEADS_FILE, DistillHeads, layer_map, linear_cka
from aura.distill.listening import listening
from aura.distill.probe import Clip, decoder_probe, load_clips, student_states, teacher_states
from aura.model.checkpoint import read_train_config, run_folders
from aura.model.llm import base_model
from aura.model.prompt import with_transcript
from aura.model.student import AuraStudent
from aura.teacher.whisper import Teacher, load_teacher


def _run_config(run_dir: Path, student: AuraStudent) -> AuraConfig:
    """The training config (prompt context, seed) when the run directory has it, else the defaults."""
    config = read_train_config(run_dir) or AuraConfig()
    config.model = student.config
    return config


@torch.no_grad()
def attention_to_audio(
    student: AuraStudent,
    clips: Sequence[Clip],
    mels: Sequence[torch.Tensor],
    system_prompt: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Where the response looks: the share of the response tokens' attention (mean over heads and clips, per
    layer) that lands on the audio span, beside the base LLM's share on the clip's reference transcript
    written where the audio was. Listening says whether the audio changes the answer; this says whether
    the LLM looks at it at all."""
    base = base_model(student.llm)
    previous = base.config._attn_implementation
    base.set_attn_implementation("eager")  # only eager attention returns its weights
    audio: list[list[float]] = []
    text: list[list[float]] = []
    counts: dict[str, list[int]] = {"audio": [], "transcript": []}
    try:
        pairs = tqdm(
            zip(clips, mels, strict=True),
            total=len(clips),
            desc="attention",
            disable=not progress,
            leave=False,
        )
        for clip, mel in pairs:
            prompt = student.render_prompt(clip.prompt, system_prompt)
            batch = student.build_batch([prompt], [[mel]], [clip.response])
            with student.positions(batch.audio_mask):
                weights = student.llm(
                    inputs_embeds=batch.embeds,
                    attention_mask=batch.mask,
                    position_ids=batch.positions,
                    output_attentions=True,
                ).attentions
            response, span = batch.labels[0] != -100, batch.audio_mask[0]
            audio.append([float(a[0][:, response][:, :, span].sum(-1).mean()) for a in weights])
            counts["audio"].append(int(span.sum()))
            if clip.reference:
                shares, tokens = _transcript_attention(student, clip, system_prompt)
                text.append(shares)
                counts["transcript"].append(tokens)
    finally:
        base.set_attn_implementation(previous)
    result: dict[str, Any] = {"clips": len(audio)}
    for name, shares in (("audio", audio), ("transcript", text)):
        if shares:
            result[name] = float(np.mean(shares))
            result[f"{name}_per_layer"] = np.mean(shares, axis=0).round(4).tolist()
            result[f"{name}_tokens"] = float(np.mean(counts[name]))
    return result


def _transcript_attention(
    student: AuraStudent, clip: Clip, system_prompt: str | None
) -> tuple[list[float], int]:
    """The base LLM's attention share (per layer) on the clip's reference transcript written where its audio
    was, and how many tokens the transcript takes."""
    prompt = student.render_prompt(with_transcript(clip.prompt, clip.reference), system_prompt, audio=False)
    full = prompt + student.response_text(clip.response)
    start = full.index(clip.reference)
    encoded = student.tokenizer(
        full, add_special_tokens=False, return_offsets_mapping=True, return_tensors="pt"
    )
    offsets = encoded["offset_mapping"][0]
    span = (offsets[:, 1] > start) & (offsets[:, 0] < start + len(clip.reference))  # overlaps it
    response = offsets[:, 0] >= len(prompt)
    off = student.llm.disable_adapter() if isinstance(student.llm, PeftModel) else contextlib.nullcontext()
    with off:
        weights = student.llm(input_ids=encoded["input_ids"], output_attentions=True).attentions
    return [float(a[0][:, response][:, :, span].sum(-1).mean()) for a in weights], int(span.sum())


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).mean())


def layer_alignment(
    pairs: Sequence[tuple[int, int]],
    student: dict[int, list[torch.Tensor]],
    teacher: dict[int, list[torch.Tensor]],
    heads: DistillHeads | None,
) -> list[dict[str, float | int]]:
    """CKA per pair, and with heads raw/centred cosine and the mean-target baseline cosine."""
    rows = []
    for j, (s, t) in enumerate(pairs):
        x = torch.cat(student[s])
        y = torch.cat(teacher[t])
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"layer {s}->{t}: {x.shape[0]} student audio tokens but {y.shape[0]} teacher tokens."
            )
        row: dict[str, float | int] = {"student": s, "teacher": t, "cka": float(linear_cka(x, y))}
        if heads is not None:
            with torch.no_grad():
                prediction = heads.to_teacher_space(j, heads(j, x)).float()
            mean = heads.target_mean[j].float()
            row["cosine"] = _cosine(prediction, y)
            row["centred_cosine"] = _cosine(prediction - mean, y - mean)
            row["mean_target_cosine"] = _cosine(mean.expand_as(y), y)
        rows.append(row)
    return rows


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    x = [row["teacher"] for row in layers]
    series = [  # (key in each layer row, label, line style, colour, alpha)
        ("cka", "linear CKA (trained)", "o-", "C0", 1.0),
        ("untrained_cka", "linear CKA (untrained)", "o--", "C0", 0.5),
        ("cosine", "cosine via heads", "s-", "C1", 1.0),
        ("centred_cosine", "centred cosine via heads", "^-", "C2", 1.0),
        ("mean_target_cosine", "cosine of mean target", ":", "C1", 0.6),
    ]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lowest = 0.0
    for key, label, style, colour, alpha in series:
        if key in layers[0]:
            values = [row[key] for row in layers]
            lowest = min(lowest, *values)
            ax.plot(x, values, style, color=colour, alpha=alpha, label=label)
    ax.set_xlabel("teacher layer (0 = conv stem + positions)")
    ax.set_ylabel("similarity")
    ax.set_xticks(x)
    ax.set_ylim(lowest - 0.05, 1.02)
    probe = result.get("probe", {})
    title = f"student vs teacher alignment ({result['clips']} clips)"
    if "student_wer" in probe:
        title += f"\ndecoder probe WER: student {probe['student_wer']:.0%}, teacher (same input) {probe['teacher_pooled_wer']:.0%}"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _trained_student(model: str | Path) -> tuple[Path, Path, AuraStudent]:
    """(checkpoint folder, run directory, student) of an AuRA run; the bridge has no student states to compare."""
    folder, run_dir = run_folders(model)
    student = AuraStudent.from_pretrained(folder)
    if student.config.arch != "aura":
        raise ValueError(
            f"{folder}: a `{student.config.arch}` checkpoint; diagnose compares an AuRA student with its teacher."
        )
    return folder, run_dir, student


def _add_untrained_cka(
    rows: list[dict[str, Any]],
    student: AuraStudent,
    teacher: Any,
    clips: Sequence[Clip],
    pairs: list[tuple[int, int]],
    theirs: dict[int, list[torch.Tensor]],
    config: AuraConfig,
) -> None:
    """Each row's CKA of the same student before training (seeded as its run was), for comparison."""
    torch.manual_seed(config.train.seed)
    untrained = AuraStudent.build(student.config, teacher).eval()
    s_layers = sorted({s for s, _ in pairs})
    before = layer_alignment(pairs, student_states(untrained, clips, s_layers, config), theirs, None)
    for row, old in zip(rows, before, strict=True):
        row["untrained_cka"] = old["cka"]


def _layer_pairs(heads: DistillHeads | None, student: AuraStudent, teacher: Teacher) -> list[tuple[int, int]]:
    """The (student, teacher) layer pairs the run was distilled on: its heads', else the config's map."""
    if heads is not None:
        return heads.pairs
    return layer_map(student.config.layer_map, student.num_blocks, teacher.num_layers)


def diagnose(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    limit: int | None = 64,
    compare_untrained: bool = False,
    probe: bool = True,
    probe_data: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `OUT/alignment.json` and `OUT/alignment.png` for a trained AuRA run (see module docstring).

    `probe_data`: a manifest for the decoder probe instead of `data`, all of it (real recorded speech: the
    alignment on synthetic clips says little about how the distilled encoder hears people)."""
    folder, run_dir, student = _trained_student(model)
    config = _run_config(run_dir, student)
    clips = load_clips(data, limit)
    if any(clip.response is None for clip in clips):
        raise ValueError(
            f"{data}: untranscribed clips have no response to measure listening on; pass asr clips."
        )
    teacher = load_teacher(student.config.teacher)
    heads_path = run_dir / HEADS_FILE
    heads = DistillHeads.load(heads_path) if heads_path.is_file() else None
    pairs = _layer_pairs(heads, student, teacher)
    s_layers = sorted({s for s, _ in pairs})
    t_layers = sorted({t for _, t in pairs})
    k = student.config.k
    ours = student_states(student, clips, s_layers, config, progress=progress)
    theirs = teacher_states(teacher, clips, t_layers, k)
    rows = layer_alignment(pairs, ours, theirs, heads)
    if compare_untrained:
        _add_untrained_cka(rows, student, teacher, clips, pairs, theirs, config)
    result: dict[str, Any] = {
        "model": str(folder),
        "data": str(data),
        "teacher": teacher.name,
        "clips": len(clips),
        "audio_tokens": int(sum(t.shape[0] for t in theirs[t_layers[0]])),
        "heads": str(heads_path) if heads is not None else None,
        "layers": rows,
        "mean": {
            key: float(np.mean([r[key] for r in rows]))
            for key in rows[0]
            if key not in ("student", "teacher")
        },
    }
    result.update(_hearing(student, clips, config, progress))
    if heads is None:
        result["note"] = (
            f"no {heads_path}: cosines through the heads and the decoder probe need the training run's heads."
        )
    elif probe:
        probe_clips = (clips, ours, theirs) if probe_data is None else (load_clips(probe_data), None, None)
        result["probe"] = _probe(student, teacher, heads, config, *probe_clips, progress)
        result["probe"]["data"] = str(probe_data or data)
    _write(result, Path(out))
    return result


def _hearing(
    student: AuraStudent, clips: Sequence[Clip], config: AuraConfig, progress: bool = False
) -> dict[str, Any]:
    """Whether the LLM reads the audio: the listening gap and where the response's attention goes."""
    mels = [student.audio_features(c.wave) for c in clips]
    prompts, responses = [c.prompt for c in clips], [c.response for c in clips]
    system = config.data.system_prompt
    return {
        "listening": listening(student, prompts, responses, mels, system, progress=progress),
        "attention": attention_to_audio(student, clips, mels, system, progress=progress),
    }


def _write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "alignment.json").write_text(json.dumps(result, indent=2))
    _plot(result, out / "alignment.png")


def _probe(
    student: AuraStudent,
    teacher: Any,
    heads: DistillHeads,
    config: AuraConfig,
    clips: Sequence[Clip],
    ours: dict[int, list[torch.Tensor]] | None,
    theirs: dict[int, list[torch.Tensor]] | None,
    progress: bool,
) -> dict[str, Any]:
    """The decoder probe on the pair that maps onto the teacher's last layer (the states its decoder
    reads); `ours`/`theirs` are the clips' states when already computed."""
    pairs, k = heads.pairs, student.config.k
    last = max(range(len(pairs)), key=lambda j: pairs[j][1])
    if pairs[last][1] != teacher.num_layers:
        return {"skipped": f"the layer map does not reach the teacher's last layer ({teacher.num_layers})."}
    s, t = pairs[last]
    student_side = ours[s] if ours is not None else student_states(student, clips, [s], config)[s]
    teacher_side = theirs[t] if theirs is not None else teacher_states(teacher, clips, [t], k)[t]
    return decoder_probe(teacher, heads, last, clips, student_side, teacher_side, progress)
