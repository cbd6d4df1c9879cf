from __future__ import annotations

import csv
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import (
    TOY_SENTENCES,
    build_tiny_llm,
    build_tiny_teacher,
    build_tiny_tokenizer,
    make_manifest,
    tone_clip,
)
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_runs import TinyRuns, tiny_runs
from typer.testing import CliRunner

from aura.audio.features import SAMPLE_RATE
from aura.cli.app import app
from aura.config import ConfigError, load_config
from aura.data.manifest import Example, write_manifest
from aura.distill.heads import DistillHeads
from aura.infer.aura_model import AuraModel
from aura.train.run_dir import TrainError, last_checkpoint
from aura.train.step import TrainModule
from aura.train.trainer import train

TINY = [
    "model.lora_rank=4",
    "model.lora_alpha=4",
    "train.batch_size=4",
    "train.warmup_steps=3",
    "train.lr=3e-3",
]


def _config(manifest: Path, cache: Path, *extra: str):
    return load_config(None, [f"data.train={manifest}", f"distill.cache_dir={cache}", *TINY, *extra])


def _train(config, run_dir: Path, resume: bool = False) -> Path:
    tokenizer = build_tiny_tokenizer()
    return train(
        config,
        run_dir,
        resume,
        teacher=build_tiny_teacher(),
        llm=build_tiny_llm(tokenizer),
        tokenizer=tokenizer,
        progress=False,
    )


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """As conftest's `one_thread`, for the module-scoped runs too (tiny models: 1 thread is fastest)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    return make_manifest(root / "data"), root / "cache"


@pytest.fixture(scope="module")
def distill_run(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 uninterrupted distillation steps, checkpoint every 10."""
    run = tmp_path_factory.mktemp("runs") / "full"
    _train(_config(*data, "train.max_steps=30", "train.save_every=10", "train.log_every=5"), run)
    return run


def test_distillation_loss_falls_and_alignment_rises(distill_run: Path) -> None:
    rows = _rows(distill_run)
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    first, last = rows[0], rows[-1]
    assert float(last["distill_loss"]) < 0.6 * float(first["distill_loss"])
    for layer in (0, 1, 2):  # N = teacher layers = 2: hidden states 0..2
        assert float(last[f"cos_{layer}"]) > float(first[f"cos_{layer}"])
        assert float(last[f"ccos_{layer}"]) > float(first[f"ccos_{layer}"])
        assert f"cka_{layer}" in last
    assert float(last["s_per_step"]) > 0 and float(last["tokens_per_s"]) > 0


def test_run_dir_contents(distill_run: Path) -> None:
    assert load_config(distill_run / "config.yaml").train.max_steps == 30
    assert list((distill_run / "tb").rglob("events.out.tfevents*"))
    final = distill_run / "final"
    files = {p.name for p in final.iterdir()}
    assert {
        "aura_config.yaml",
        "adapter_model.safetensors",
        "adapter_config.json",
        "audio_embedding.safetensors",
    } <= files
    for name in files:
        if name.endswith(".safetensors"):
            with safe_open(str(final / name), framework="pt") as handle:
                keys = list(handle.keys())  # noqa: SIM118
            assert keys and not any("head" in k or "encoder" in k or "whisper" in k for k in keys), name
    heads = DistillHeads.load(distill_run / "heads.safetensors")
    assert heads.pairs == [(0, 0), (1, 1), (2, 2)]
    assert heads.target_norm.min() > 0 and heads.target_std.min() > 0


def test_resume_reproduces_the_uninterrupted_run(
    distill_run: Path, data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(*data, "train.max_steps=30", "train.save_every=10", "train.log_every=5")
    calls = {"n": 0}
    original = TrainModule.forward

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TrainModule, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(config, tmp_path / "run")
    monkeypatch.setattr(TrainModule, "forward", original)
    assert not (tmp_path / "run" / "final").exists()
    with pytest.raises(TrainError, match="--resume"):
        _train(config, tmp_path / "run")
    _train(config, tmp_path / "run", resume=True)  # continues from step 10
    for name in ("adapter_model.safetensors", "audio_embedding.safetensors"):
        want = load_file(distill_run / "final" / name)
        got = load_file(tmp_path / "run" / "final" / name)
        assert all(torch.allclose(want[k], got[k], atol=1e-6) for k in want), name
    assert [r["step"] for r in _rows(tmp_path / "run")] == [r["step"] for r in _rows(distill_run)]


def test_run_paused_on_a_longer_schedule_continues_as_uninterrupted(
    distill_run: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    every = ("train.save_every=10", "train.log_every=5", "train.schedule_steps=30")
    _train(_config(*data, "train.max_steps=10", *every), tmp_path / "run")
    assert (tmp_path / "run" / "final").is_dir()
    assert (tmp_path / "run" / "checkpoints" / "step-0000010").is_dir()  # paused: resumable
    shutil.copytree(tmp_path / "run", tmp_path / "rebent")
    with pytest.warns(UserWarning, match=r"30-step schedule, resumed on a 20-step one.*schedule_steps=30"):
        _train(_config(*data, "train.max_steps=20", "train.save_every=10"), tmp_path / "rebent", resume=True)
    _train(_config(*data, "train.max_steps=30", *every), tmp_path / "run", resume=True)
    for name in ("adapter_model.safetensors", "audio_embedding.safetensors"):
        want = load_file(distill_run / "final" / name)
        got = load_file(tmp_path / "run" / "final" / name)
        assert all(torch.allclose(want[k], got[k], atol=1e-6) for k in want), name
    assert [r["lr"] for r in _rows(tmp_path / "run")] == [r["lr"] for r in _rows(distill_run)]
    with pytest.raises(ConfigError, match="schedule_steps=20 is shorter than train.max_steps=30"):
        _train(_config(*data, "train.max_steps=30", "train.schedule_steps=20"), tmp_path / "other")


def test_joint_stage_from_distilled_run_and_bridge(
    distill_run: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    joint = _config(
        *data,
        "train.stage=joint",
        "train.max_steps=4",
        "train.log_every=2",
        f"train.init_from={distill_run}",
        "train.head_warmup_steps=4",
        f"data.dev={data[0]}",
        "train.dev_every=4",
    )
    _train(joint, tmp_path / "joint")
    rows = _rows(tmp_path / "joint")
    dev = [r for r in rows if r.get("dev_listening_gap")]
    assert [r["step"] for r in dev] == ["0", "4"] and all(float(r["dev_lm_loss"]) > 0 for r in dev)
    rows = [r for r in rows if r.get("lm_loss")]
    assert float(rows[0]["lm_loss"]) > 0 and float(rows[0]["distill_loss"]) > 0
    assert float(rows[0]["lr"]) > 0  # the heads came trained from init_from: no heads-only warm-up
    # starting from the distilled weights: the alignment is already where the distillation run ended
    assert float(rows[0]["cos_2"]) > float(_rows(distill_run)[0]["cos_2"])
    bridge = _config(
        *data, "model.arch=bridge", "train.stage=joint", "train.max_steps=2", "train.log_every=1"
    )
    final = _train(bridge, tmp_path / "bridge")
    assert (
        float(_rows(tmp_path / "bridge")[-1]["lm_loss"]) > 0
        and not (tmp_path / "bridge" / "heads.safetensors").exists()
    )
    # the frozen encoder's outputs are kept in the cache folder for resumes and later runs
    assert list((data[1] / "bridge" / "tiny-random-whisper").glob("*/*.safetensors"))
    with safe_open(str(final / "audio_embedding.safetensors"), framework="pt") as handle:
        assert not any(k.startswith("encoder.") for k in handle.keys())  # noqa: SIM118


def test_two_process_cpu_run_keeps_ranks_identical(data: tuple[Path, Path], tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\n"
        "from safetensors.torch import save_file\n"
        "from conftest import build_tiny_llm, build_tiny_teacher, build_tiny_tokenizer\n"
        "from aura.config import load_config\n"
        "from aura.train.trainer import Models, Trainer\n"
        "out, overrides = sys.argv[1], sys.argv[2:]\n"
        "tok = build_tiny_tokenizer()\n"
        "models = Models(build_tiny_teacher(), build_tiny_llm(tok), tok, progress=False)\n"
        "trainer = Trainer(load_config(None, overrides), out, models=models)\n"
        "assert trainer.acc.num_processes == 2\n"
        "trainer.run()\n"
        "save_file(trainer._trainable(), f'{out}/rank{trainer.acc.process_index}.safetensors')\n"
    )
    manifest, cache = data
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(script),
        str(tmp_path / "run"),
        f"data.train={manifest}",
        f"distill.cache_dir={cache}",
        "train.max_steps=3",
        "train.batch_size=2",
        "train.log_every=1",
        *TINY[:2],
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (
        load_file(tmp_path / "run" / "rank0.safetensors"),
        load_file(tmp_path / "run" / "rank1.safetensors"),
    )
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert any(v.abs().sum() > 0 for k, v in rank0.items() if "lora_B" in k)  # trained: LoRA B starts at zero


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "data.train" in str(result.exception)
    result = runner.invoke(
        app, ["train", "--out", str(tmp_path / "r"), "--resume", f"data.train={tmp_path}/m.jsonl"]
    )
    assert result.exit_code != 0 and "m.jsonl" in str(result.exception)
    no_heads = ["model.arch=bridge", "train.stage=joint", "distill.decoder_weight=0.1"]
    result = runner.invoke(
        app, ["train", "--out", str(tmp_path / "r"), f"data.train={tmp_path}/m.jsonl", *no_heads]
    )
    assert result.exit_code != 0 and "distill.decoder_weight" in str(result.exception)


@pytest.mark.real
def test_real_models_train_end_to_end(tmp_path: Path) -> None:
    """SmolLM2-135M student + packaged whisper-tiny.en teacher, two distillation steps on two clips, with
    the transcript loss (tiny.en's own decoder reading the student)."""
    manifest = make_manifest(tmp_path / "data", count=2)
    config = load_config(
        None,
        [
            f"data.train={manifest}",
            f"distill.cache_dir={tmp_path / 'cache'}",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.log_every=1",
            "model.lora_rank=8",
            "model.lora_alpha=8",
            "distill.decoder_weight=0.1",
        ],
    )
    final = train(config, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2 and all(0 < float(r["distill_loss"]) < 2 for r in rows)
    assert all(0 < float(r["decoder_loss"]) < 30 for r in rows)
    assert float(rows[0]["loss"]) == pytest.approx(
        float(rows[0]["distill_loss"]) + 0.1 * float(rows[0]["decoder_loss"]), rel=1e-4
    )
    assert set(f"cos_{i}" for i in range(5)) <= set(rows[0])  # whisper-tiny.en: N = 4, states 0..4
    assert (final / "adapter_model.safetensors").is_file()


def test_heads_only_warmup_leaves_the_student_untouched(data: tuple[Path, Path], tmp_path: Path) -> None:
    config = _config(
        *data,
        "train.max_steps=2",
        "train.log_every=1",
        "train.head_warmup_steps=2",
        "train.grad_accum=2",
        "train.bf16=true",
    )
    final = _train(config, tmp_path / "run")
    adapter = load_file(final / "adapter_model.safetensors")
    assert all(not v.any() for k, v in adapter.items() if "lora_B" in k)  # LoRA B starts at zero, still zero
    rows = _rows(tmp_path / "run")
    assert float(rows[-1]["lr"]) == 0 and float(rows[-1]["head_lr"]) > 0  # while the heads do learn


# ---------------------------------------------------------------- killed runs (real processes, SIGKILL)

KILL_STEPS, KILL_SAVE_EVERY = 12, 4


def _cli_args(runs: TinyRuns, run_dir: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aura.cli",
        "train",
        "--out",
        str(run_dir),
        "--quiet",
        f"model.llm={runs.llm}",
        f"model.teacher={runs.whisper}",
        f"data.train={runs.manifest}",
        f"distill.cache_dir={cache}",
        "model.lora_layers=2",
        *TINY[:2],
        "train.batch_size=2",
        f"train.max_steps={KILL_STEPS}",
        f"train.save_every={KILL_SAVE_EVERY}",
        "train.log_every=2",
        "train.warmup_steps=2",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


def _kill_when(command: list[str], ready: Callable[[], bool], timeout: float = 120) -> str:
    """Start `aura train`, SIGKILL it the moment `ready()` holds (polled as fast as Python can); its stdout."""
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"finished before the kill point: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the kill point never came"
    finally:
        process.kill()
        out, _ = process.communicate()
    return out


def _logged_steps(run_dir: Path) -> int:
    try:
        return max((int(r["step"]) for r in _rows(run_dir)), default=0)
    # not written yet, replaced by a resumed run starting afresh, or a row being written
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {
        f"{name}/{key}": value
        for name in ("adapter_model.safetensors", "audio_embedding.safetensors")
        for key, value in load_file(run_dir / "final" / name).items()
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyRuns, Path, Path]:
    """The tiny model folders, a teacher cache, and the same CLI run done without interruption."""
    runs = tiny_runs(tmp_path_factory)
    root = tmp_path_factory.mktemp("kills")
    cache, reference = root / "cache", root / "reference"
    done = subprocess.run(
        _cli_args(runs, reference, cache), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return runs, cache, reference


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(
    uninterrupted: tuple[TinyRuns, Path, Path], tmp_path: Path
) -> None:
    """SIGKILL inside the first checkpoint save, then at two random steps of the restarted run; each time
    `--resume` carries on (from step 0 while no checkpoint is complete, saying so), and the result equals
    the run that was never interrupted."""
    runs, cache, reference = uninterrupted
    run = tmp_path / "run"
    command = _cli_args(runs, run, cache)
    first_save = run / "checkpoints" / f"step-{KILL_SAVE_EVERY:07d}.tmp"
    for _ in range(5):  # the save lasts milliseconds: retry until the kill lands inside it
        _kill_when(command, first_save.exists)
        if last_checkpoint(run) is None:
            break
        shutil.rmtree(run)
    assert first_save.exists() and last_checkpoint(run) is None, "no kill landed inside the first save"
    assert not (run / "final").exists()

    rng = random.Random()
    kills = sorted(rng.sample(range(KILL_SAVE_EVERY + 1, KILL_STEPS), 2))
    said = _kill_when([*command, "--resume"], lambda: _logged_steps(run) >= kills[0])
    assert "no complete checkpoint yet" in said and "starting again from step 0" in " ".join(said.split())
    assert not first_save.exists() and not (run / "final").exists()
    _kill_when([*command, "--resume"], lambda: _logged_steps(run) >= kills[1])
    assert not (run / "final").exists()
    resumed = subprocess.run([*command, "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    want, got = _final_weights(reference), _final_weights(run)
    assert want.keys() == got.keys()
    diff = max(float((want[k] - got[k]).abs().max()) for k in want)
    assert diff < 1e-6, f"killed in the first save, then at steps {kills}: max abs diff {diff}"
    assert [(r["step"], r["loss"]) for r in _rows(run)] == [(r["step"], r["loss"]) for r in _rows(reference)]


def test_resume_on_a_finished_run_changes_nothing(
    uninterrupted: tuple[TinyRuns, Path, Path], tmp_path: Path
) -> None:
    runs, cache, reference = uninterrupted
    run = tmp_path / "finished"
    shutil.copytree(reference, run)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    again = subprocess.run(
        [*_cli_args(runs, run, cache), "--resume"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    said = " ".join(again.stdout.split())
    assert f"this run is finished (step {KILL_STEPS}" in said and "changed nothing" in said
    assert f"train.init_from={run}" in said
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()} == before
    fresh = CliRunner().invoke(app, _cli_args(runs, run, cache)[3:])  # refused before any model loads
    assert fresh.exit_code != 0 and "already holds a run; pass --resume" in str(fresh.exception)


# ---------------------------------------------------------------- sharded training (FSDP2, 2 CPU processes)

FSDP_CONFIG = Path(__file__).parents[1] / "aura" / "recipes" / "accelerate" / "fsdp.yaml"
FSDP_TOLERANCE = (
    1e-5  # max abs difference of any final weight from the one-process run (float reduction order)
)


def _equal_clips(folder: Path) -> Path:
    """Four clips of the same length: each rank's mean loss then weighs its clips as the one-process mean
    does, so two processes of batch 2 take exactly the steps one process of batch 4 takes."""
    folder.mkdir(parents=True)
    examples = []
    for i in range(4):
        sf.write(folder / f"c{i}.wav", tone_clip(1.0, 40 + i), SAMPLE_RATE)
        sentence = TOY_SENTENCES[i]
        examples.append(
            Example(
                id=f"c{i}",
                audio=str(folder / f"c{i}.wav"),
                task="asr",
                prompt="",
                response=sentence,
                transcript=sentence,
                duration=1.0,
            )
        )
    return write_manifest(examples, folder / "train.jsonl")


def test_fsdp_recipe_trains_resumes_and_exports_like_one_process(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    runs = tiny_runs(tmp_path_factory)
    manifest = _equal_clips(tmp_path / "data")
    common = [
        "--quiet",
        f"model.llm={runs.llm}",
        f"model.teacher={runs.whisper}",
        f"data.train={manifest}",
        f"distill.cache_dir={tmp_path / 'cache'}",
        "model.lora_layers=2",
        *TINY[:2],
        "train.lr=3e-3",
        "train.warmup_steps=2",
        "train.log_every=1",
        "train.save_every=3",
        "train.schedule_steps=6",
    ]
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "aura.cli",
            "train",
            "--out",
            str(tmp_path / "single"),
            *common,
            "train.batch_size=4",
            "train.max_steps=6",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(FSDP_CONFIG),
        "--num_processes",
        "2",
        "-m",
        "aura.cli",
        "train",
        "--out",
        str(tmp_path / "sharded"),
    ]
    first = subprocess.run(
        [*launch, *common, "train.batch_size=2", "train.max_steps=3"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "sharded" / "checkpoints" / "step-0000003"
    assert len(list((checkpoint / "sharded").glob("*.distcp"))) == 2  # one shard per process
    resumed = subprocess.run(
        [*launch, "--resume", "train.max_steps=6"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoint}" in resumed.stdout
    want, got = _final_weights(tmp_path / "single"), _final_weights(tmp_path / "sharded")
    assert want.keys() == got.keys()
    diff = max(float((want[k] - got[k]).abs().max()) for k in want)
    print(f"FSDP on 2 CPU processes vs one process: max abs final-weight difference {diff:.2e}")
    assert diff < FSDP_TOLERANCE, diff
    assert any(v.abs().sum() > 0 for k, v in got.items() if "lora_B" in k)  # trained: LoRA B starts at zero
    for one, two in zip(_rows(tmp_path / "single"), _rows(tmp_path / "sharded"), strict=True):
        assert one["step"] == two["step"] and float(one["loss"]) == pytest.approx(
            float(two["loss"]), rel=1e-4
        )
    clip = tmp_path / "data" / "c0.wav"
    answer = CliRunner().invoke(
        app, ["generate", "--model", str(tmp_path / "sharded"), "--audio", str(clip), "--max-new-tokens", "4"]
    )
    assert answer.exit_code == 0, answer.output
    assert (
        answer.stdout.strip()
        == AuraModel.from_pretrained(tmp_path / "sharded").generate(audio=str(clip), max_new_tokens=4).strip()
    )
