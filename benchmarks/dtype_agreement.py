"""How far bfloat16 greedy answers stray from float32 ones on the shipped checkpoints.

Each checkpoint is loaded twice (`AuraModel.from_pretrained(..., dtype=...)`) and transcribes the same
real synthesized test clips greedily. Reported per checkpoint: the share of clips whose answers are
identical, the share of answer tokens that agree position by position, the mean length of the identical
token prefix, and the word error rate of the bfloat16 answers against the float32 ones. Agreement is
measured, not assumed: bfloat16 keeps 8 bits of mantissa, so a near-tie between two tokens can flip and
the answers part from there.
"""

from __future__ import annotations

import argparse
import time

import torch

from aura.audio.features import load_audio
from aura.data.manifest import read_manifest
from aura.data.synth import synthesize
from aura.infer.aura_model import AuraModel
from aura.infer.decoding import DTYPES
from aura.metrics import error_rates
from aura.registry import CHECKPOINTS
from benchmarks.checkpoints import WORK
from benchmarks.common import write_result


def greedy_tokens(model: AuraModel, waves: list, max_new_tokens: int) -> list[list[int]]:
    """Greedy answer tokens per clip (transcription prompt), one request at a time."""
    out = []
    for wave in waves:
        decoding = model.decoding([model.request(wave, max_new_tokens=max_new_tokens)])
        for _ in decoding:
            pass
        out.append(decoding.rows[0].tokens)
    return out


def agreement(reference: list[list[int]], other: list[list[int]]) -> dict[str, float]:
    """Exact-answer share, positionwise token agreement (over the longer answer) and identical-prefix length."""
    same_positions, positions, prefixes = 0, 0, []
    for a, b in zip(reference, other, strict=True):
        prefix = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        prefixes.append(prefix)
        same_positions += sum(x == y for x, y in zip(a, b, strict=False))
        positions += max(len(a), len(b))
    return {
        "identical_answers": sum(a == b for a, b in zip(reference, other, strict=True)) / len(reference),
        "token_agreement": same_positions / max(positions, 1),
        "mean_identical_prefix_tokens": sum(prefixes) / len(prefixes),
        "min_identical_prefix_tokens": min(prefixes),
    }


def run(clips: int = 12, max_new_tokens: int = 32, dtype: str = "bfloat16") -> dict:
    folder = WORK / "agreement-speech"
    if not (folder / "manifest.jsonl").is_file():
        synthesize("asr", clips, folder, split="test", seed=11, progress=False)
    waves = [load_audio(example.audio) for example in read_manifest(folder / "manifest.jsonl")[:clips]]
    result: dict = {"dtype": dtype, "clips": len(waves), "max_new_tokens": max_new_tokens, "checkpoints": {}}
    for name in sorted(CHECKPOINTS):
        tokens, seconds = {}, {}
        for label, torch_dtype in (("float32", torch.float32), (dtype, DTYPES[dtype])):
            model = AuraModel.from_pretrained(name, dtype=torch_dtype)
            start = time.perf_counter()
            tokens[label] = greedy_tokens(model, waves, max_new_tokens)
            seconds[label] = time.perf_counter() - start
            texts = [model.tokenizer.decode(t, skip_special_tokens=True) for t in tokens[label]]
            tokens[f"{label}_text"] = texts  # type: ignore[assignment]
        row = agreement(tokens["float32"], tokens[dtype])
        row["wer_vs_float32"] = error_rates(tokens["float32_text"], tokens[f"{dtype}_text"]).wer  # type: ignore[arg-type]
        row["seconds"] = seconds
        row["examples"] = [
            {"float32": a, dtype: b}
            for a, b in zip(tokens["float32_text"], tokens[f"{dtype}_text"], strict=True)
        ][:4]
        result["checkpoints"][name] = row
        print(
            f"{name}: {row['identical_answers']:.0%} identical answers, {row['token_agreement']:.0%} of tokens agree, "
            f"identical prefix {row['mean_identical_prefix_tokens']:.1f} tokens (min {row['min_identical_prefix_tokens']})"
        )
    write_result(f"dtype_agreement_{dtype}", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=[d for d in DTYPES if d != "float32"])
    args = parser.parse_args()
    run(args.clips, args.max_new_tokens, args.dtype)


if __name__ == "__main__":
    main()
