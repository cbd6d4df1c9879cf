import time

import pytest
import torch

from aura.model.llm import load_llm
from aura.registry import aura_home


@pytest.mark.real
def test_smollm2_from_gguf_answers_a_fact() -> None:
    start = time.perf_counter()
    model, tokenizer = load_llm("smollm2-135m-instruct")
    print(f"load_llm(smollm2) {time.perf_counter() - start:.1f} s (cache {aura_home()})")
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
