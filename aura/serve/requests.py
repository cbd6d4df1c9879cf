"""The OpenAI request bodies this server reads (the parts it uses), and their conversion to a
`GenerationRequest`: text turns with `<audio>` where audio parts were, the audio decoded and counted."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aura.audio.features import SAMPLE_RATE, AudioError, AudioFormatError, load_audio
from aura.infer.decoding import SEED_MAX, SEED_MIN, GenerationRequest
from aura.model.prompt import AUDIO_PLACEHOLDER
from aura.serve.limits import (
    APIError,
    AudioBudget,
    Limits,
)

log = logging.getLogger(__name__)

AUDIO_FORMATS = ("wav", "mp3", "flac")


class _Loose(BaseModel):
    """OpenAI clients send fields we do not use (`n`, `user`, `logprobs`…); ignore them rather than fail."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class InputAudio(_Loose):
    data: str
    format: str = "wav"


class ContentPart(_Loose):
    type: str
    text: str | None = None
    input_audio: InputAudio | None = None


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatCompletionRequest(_Loose):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None


def decode_audio_part(part: InputAudio, where: str, budget: AudioBudget) -> np.ndarray:
    """Base64 audio of an `input_audio` part → 16-kHz wave, or a 400 naming the part and the problem.

    The declared format must match the data, and the wave counts against the request's audio budget.
    """
    if part.format not in AUDIO_FORMATS:
        raise APIError(
            400,
            f"{where}.format is {part.format!r}; supported formats are {', '.join(AUDIO_FORMATS)}.",
            param=f"{where}.format",
        )
    try:
        raw = base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise APIError(
            400, f"{where}.data is not valid base64 ({err}).", param=f"{where}.data", code="invalid_base64"
        ) from err
    try:
        wave = load_audio(raw, name=f"{where} ({part.format})", expected_format=part.format)
    except AudioFormatError as err:
        raise APIError(400, str(err), param=f"{where}.format", code="invalid_audio_format") from err
    except AudioError as err:
        raise APIError(400, str(err), param=f"{where}.data", code="invalid_audio") from err
    budget.add(len(wave) / SAMPLE_RATE, where)
    return wave


def chat_to_request(
    body: ChatCompletionRequest, limits: Limits, default_max_tokens: int
) -> GenerationRequest:
    """OpenAI messages → text turns with `<audio>` placeholders where audio parts were, plus the waves.

    The request's audio parts are counted before any is decoded, and its seconds as they are decoded,
    so audio over the limits is refused however it is split.
    """
    budget = AudioBudget(limits)
    budget.check_parts(
        sum(
            part.type == "input_audio"
            for message in body.messages
            if isinstance(message.content, list)
            for part in message.content
        )
    )
    messages: list[dict[str, str]] = []
    audio: list[np.ndarray] = []
    for i, message in enumerate(body.messages):
        role = "system" if message.role == "developer" else message.role
        if message.content is None and message.role != "assistant":
            raise APIError(
                400,
                f"messages[{i}].content is null; a {message.role} message needs text or content parts.",
                param=f"messages[{i}].content",
            )
        if message.content is None or isinstance(message.content, str):
            text = message.content or ""
            if AUDIO_PLACEHOLDER in text:
                raise APIError(
                    400,
                    f"messages[{i}].content contains the reserved text {AUDIO_PLACEHOLDER!r}; "
                    "send audio as an input_audio content part.",
                    param=f"messages[{i}].content",
                )
            messages.append({"role": role, "content": text})
            continue
        messages.append({"role": role, "content": _parts_text(message.content, i, budget, audio)})
    return GenerationRequest(
        messages=messages,
        audio=audio,
        max_new_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
    )


def _parts_text(parts: list[ContentPart], i: int, budget: AudioBudget, audio: list[np.ndarray]) -> str:
    """Message `i`'s content parts as one text, `<audio>` where each audio part was (its wave appended to
    `audio`)."""
    pieces: list[str] = []
    for j, part in enumerate(parts):
        where = f"messages[{i}].content[{j}]"
        if part.type == "text":
            if part.text is None or AUDIO_PLACEHOLDER in part.text:
                raise APIError(
                    400,
                    f"{where}.text is missing or contains {AUDIO_PLACEHOLDER!r}.",
                    param=f"{where}.text",
                )
            pieces.append(part.text)
        elif part.type == "input_audio":
            if part.input_audio is None:
                raise APIError(400, f"{where}.input_audio is missing.", param=f"{where}.input_audio")
            audio.append(decode_audio_part(part.input_audio, f"{where}.input_audio", budget))
            pieces.append(AUDIO_PLACEHOLDER)
        else:
            raise APIError(
                400,
                f"{where}.type is {part.type!r}; this server reads 'text' and 'input_audio' parts.",
                param=f"{where}.type",
            )
    return "\n".join(pieces)
