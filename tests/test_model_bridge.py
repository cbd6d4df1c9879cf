import math
from pathlib import Path

import torch

from aura.audio.features import log_mel
from aura.model.bridge import BridgeModel
from tests.conftest import tone_clip


def test_training_reuses_frozen_encoder_output_exactly(tiny_teacher, one_thread) -> None:
    bridge = BridgeModel(tiny_teacher, llm_width=32, k=4)
    mels = [
        log_mel(tone_clip(s, seed), n_mels=tiny_teacher.n_mels, pad_to_30s=False)
        for s, seed in ((1.0, 0), (2.3, 1))
    ]
    bridge.eval()
    reference = bridge.embed_clips(mels)

    calls = []
    bridge.encoder.register_forward_hook(lambda *_: calls.append(1))
    bridge.train()
    first, again = bridge.embed_clips(mels), bridge.embed_clips(mels[::-1])
    assert len(calls) == 1  # the second batch (same clips, other order) never reran the encoder
    for mel, ref, a, b in zip(mels, reference, first, again[::-1], strict=True):
        assert ref.shape == (math.ceil((mel.shape[-1] + 1) // 2 / 4), 32)
        torch.testing.assert_close(a, ref)
        torch.testing.assert_close(b, ref)
    assert first[0].requires_grad  # the projector still learns


def test_store_keeps_encoder_outputs_for_a_later_run(tiny_teacher, one_thread, tmp_path: Path) -> None:
    mels = [log_mel(tone_clip(1.4, seed), n_mels=tiny_teacher.n_mels, pad_to_30s=False) for seed in (4, 5)]
    first = BridgeModel(tiny_teacher, llm_width=32, k=4).train()
    first.store = tmp_path
    reference = first.embed_clips(mels)
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 2

    # a resumed run's dev evaluation: empty memory, eval mode, same store
    later = BridgeModel(tiny_teacher, llm_width=32, k=4).eval()
    later.load_state_dict(first.state_dict())
    later.store = tmp_path
    calls = []
    hook = later.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        again = later.embed_clips(mels)
    finally:
        hook.remove()  # the encoder is the shared teacher's
    assert not calls  # read back from the store, not encoded again
    for a, b in zip(again, reference, strict=True):
        torch.testing.assert_close(a, b)


def test_inference_does_not_keep_encoder_outputs(tiny_teacher, one_thread) -> None:
    bridge = BridgeModel(tiny_teacher, llm_width=32, k=4).eval()
    bridge.embed_clips([log_mel(tone_clip(1.0, 3), n_mels=tiny_teacher.n_mels, pad_to_30s=False)])
    assert not bridge._encoded
