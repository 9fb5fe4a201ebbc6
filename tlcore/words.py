"""Counts in words: ``plural(1, "colour")`` is "1 colour", ``plural(3, "colour")`` "3 colours"."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``count`` and ``noun``, in the plural unless ``count`` is one (``plural(2, "class", "classes")``)."""
    return f"{count:,} {noun if count == 1 else plural_form or noun + 's'}"
