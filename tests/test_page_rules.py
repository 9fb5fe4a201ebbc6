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


def test_the_job_panel_says_the_time_left_and_a_stopping_short_job():
    from tlcore.jobs import Job
    from tlcore.progress import progress_line, task_line

    assert progress_line({"text": "epoch 2/5", "eta_seconds": 12.4}) == "epoch 2/5 · about 12 s left"
    assert progress_line({"text": "epoch 2/5", "eta_seconds": None}) == "epoch 2/5"  # not yet known: nothing said
    job = Job("j1", "owner", "analysis", "Cross-validating heads")
    job.log.append("step", step=1, steps=4)
    assert task_line(job).startswith("Cross-validating heads: 1/4 · ") and "stopping" not in task_line(job)
    job.request_stop()
    assert task_line(job).endswith(" · stopping…")


def test_the_train_pages_live_chart_marks_the_epoch_whose_weights_the_job_keeps():
    from tlcore.jobs import Job
    from tlcore.progress import training_figure

    job = Job("j1", "owner", "train", "MobileNetV2 · 3 epochs")
    for epoch, val_loss in ((1, 0.9), (2, 0.5), (3, 0.7)):
        job.log.append("epoch", phase="head", epoch=epoch, loss=1.0, accuracy=0.5, val_loss=val_loss, val_accuracy=0.6)
    job.log.append("best", epoch=2)
    figure = training_figure(job)
    assert figure.layout.title.text == "MobileNetV2 · 3 epochs"
    marked = [shape.x0 for shape in figure.layout.shapes] + [note.x for note in figure.layout.annotations]
    assert 2 in marked
    job.log = type(job.log)()  # no kept epoch yet: nothing marked
    assert not training_figure(job).layout.shapes


def test_a_short_job_whose_result_no_page_showed_is_found_again_once():
    from tlcore.jobs import JobRegistry

    registry = JobRegistry()
    jobs = []
    for title in ("one", "two"):  # one job at a time per visitor: each ends before the next starts
        jobs.append(registry.start("me", "analysis", title, lambda job: 1, in_process=True))
        jobs[-1].wait(10)
        jobs[-1].slot = "analysis_embedding"
    first, second = jobs
    registry.start("you", "analysis", "theirs", lambda job: 3, in_process=True).slot = "analysis_embedding"
    assert registry.undelivered("me", "analysis_embedding") is second  # the latest of mine
    second.delivered = True
    assert registry.undelivered("me", "analysis_embedding") is first
    first.delivered = True
    assert registry.undelivered("me", "analysis_embedding") is None
    assert registry.undelivered("me", "other_slot") is None
