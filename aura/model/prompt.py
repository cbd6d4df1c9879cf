"""The prompt rules every stage shares: the `<audio>` placeholder, where audio goes when a prompt names no
place (first), the transcription prompts, and a prompt with a transcript in place of its audio."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

AUDIO_PLACEHOLDER = "<audio>"


ASR_PROMPTS = (
    "Transcribe the audio.\n<audio>",
    "<audio>\nWrite down exactly what is said.",
    "Please transcribe this recording: <audio>",
    "What does the speaker say? <audio>\nGive the exact words.",
    "<audio>\nRepeat the spoken sentence word for word.",
)


# the first of the prompts the ASR task trains on, so transcription requests look like training data
TRANSCRIBE_PROMPT = ASR_PROMPTS[0]


def with_transcript(prompt: str | None, transcript: str) -> str:
    """`prompt` with `transcript` as text where its audio was (before the text when the prompt names no
    place, as `audio_first` puts audio)."""
    return audio_first(prompt).replace(AUDIO_PLACEHOLDER, transcript)


def audio_first(prompt: str | None, clips: int = 1) -> str:
    """`prompt` as the student reads it: a prompt without `<audio>` gets one per clip before its text."""
    prompt = prompt or ""
    if clips and AUDIO_PLACEHOLDER not in prompt:
        return "\n".join([AUDIO_PLACEHOLDER] * clips + [prompt]).rstrip("\n")
    return prompt


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """Chat-templated text for `messages`, ending with the assistant's generation prompt."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
