"""Inference: a trained checkpoint answering spoken and written prompts (greedy decoding, KV cache)."""
