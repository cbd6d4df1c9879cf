"""Deterministic train/dev/test partition by entity, so no country, city or sentence crosses splits."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "dev", "test")
_SHARES = {"train": 80, "dev": 10}  # percent; test takes the rest


def split_of(entity: str) -> str:
    """The split an entity belongs to: a stable hash (not Python's salted `hash`), 80/10/10."""
    bucket = int.from_bytes(hashlib.sha256(entity.strip().lower().encode()).digest()[:8], "big") % 100
    if bucket < _SHARES["train"]:
        return "train"
    if bucket < _SHARES["train"] + _SHARES["dev"]:
        return "dev"
    return "test"


def check_split(split: str) -> str:
    """Validate a split name, with a message that lists the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    return split
