"""Counts and durations in words: ``plural(3, "colour")`` is "3 colours", ``about_seconds(0.04)`` "≈ 40 ms"."""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``count`` and ``noun``, in the plural unless ``count`` is one (``plural(2, "class", "classes")``)."""
    return f"{count:,} {noun if count == 1 else plural_form or noun + 's'}"


def about_seconds(seconds: float, digits: int = 1) -> str:
    """An estimated duration at a resolution it has: "≈ 7.1 s", "≈ 40 ms", "< 1 ms" (never "≈ 0.0 s").

    ``digits`` after the point for seconds; a shorter time than they can show is given in milliseconds.
    """
    if seconds >= 10**-digits:
        return f"≈ {seconds:.{digits}f} s"
    if seconds >= 0.001:
        return f"≈ {seconds * 1000:.0f} ms"
    return "< 1 ms"
