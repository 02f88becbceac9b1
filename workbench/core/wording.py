"""Counts in words for messages: "1 epoch", "2 epochs", "1 class", "10 classes"."""

from __future__ import annotations

_PLURALS = {"class": "classes", "batch": "batches", "image": "images", "step": "steps", "epoch": "epochs"}


def count(number: int, word: str) -> str:
    """`number` and `word`, in the plural unless the number is 1 (thousands separated)."""
    plural = _PLURALS.get(word, word + "s")
    return f"{number:,} {word if number == 1 else plural}"
