"""The data phase: untranscribed audio trains distillation only."""

from __future__ import annotations

from pathlib import Path

import pytest

from aura.data.manifest import read_manifest, write_manifest
from aura.train.batches import load_train_clips
from aura.train.run_dir import TrainError
from tests.conftest import make_manifest


def test_untranscribed_clips_load_for_distillation_and_are_refused_by_the_joint_stage(tmp_path: Path) -> None:
    source = make_manifest(tmp_path, count=3)
    examples = read_manifest(source)
    bare = examples[:1] + [
        examples[1].model_copy(update={"task": "audio", "response": None, "transcript": None})
    ]
    write_manifest(bare, source)
    assert len(load_train_clips(str(source), 30.0, "training", need_response=False)) == 2
    with pytest.raises(
        TrainError, match=r"1 training example\(s\) have no response .*clip1.*train.stage=distill"
    ):
        load_train_clips(str(source), 30.0, "training", need_response=True)
