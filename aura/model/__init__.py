"""The student: the LLM with its audio embedding and audio-expert LoRA, the bridge baseline, LLM loading."""
