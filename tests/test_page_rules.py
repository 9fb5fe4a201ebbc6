"""The rules the pages and ui/ show, kept in tlcore (text built from data, counts, choices, wording).

Each test reads what a visitor reads on a page, from the tlcore function the page calls.
"""

from tlcore.words import about_seconds


def test_a_duration_estimate_never_reads_zero_seconds():
    assert about_seconds(7.123) == "≈ 7.1 s"
    assert about_seconds(0.04) == "≈ 40 ms"  # below 0.1 s: milliseconds, not "≈ 0.0 s"
    assert about_seconds(0.0004) == "< 1 ms"
    assert about_seconds(9.6, digits=0) == "≈ 10 s" and about_seconds(0.4, digits=0) == "≈ 400 ms"


def test_the_text_pages_speed_line_counts_tokens_and_says_why_the_first_run_is_slow():
    from tlcore.text.generation import Generation

    assert Generation(["a"], 64, 2.0).speed() == "64 new tokens · 32.0 tokens/s"
    assert Generation(["a"], 1, 0.5).speed() == "1 new token · 2.0 tokens/s"
    first = Generation(["a"], 10, 1.0, compiled=True).speed()
    assert first.endswith("(first run with these settings, compiling included; the next click runs warm)")


def test_the_text_pages_model_sources_are_a_preset_a_handle_or_a_folder():
    from tlcore.text.models import MODEL_SOURCE_KINDS

    assert list(MODEL_SOURCE_KINDS) == ["preset", "hf", "local"]
    assert MODEL_SOURCE_KINDS["local"] == "Local preset folder"  # named in PRESET_FOLDER_HOWTO
