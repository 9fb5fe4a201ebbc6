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
    kept = [trace for trace in figure.data if "kept weights" in (trace.name or "")]
    assert kept and {tuple(trace.x) for trace in kept} == {(2,)}  # a star on epoch 2, loss and accuracy
    assert kept[0].name == "kept weights (epoch 2)"
    job.log = type(job.log)()  # no kept epoch yet: nothing marked
    job.log.append("epoch", phase="head", epoch=1, loss=1.0, accuracy=0.5, val_loss=0.9, val_accuracy=0.6)
    assert not [trace for trace in training_figure(job).data if "kept weights" in (trace.name or "")]


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


def test_a_folders_stamp_changes_when_images_are_added_to_a_class(tmp_path):
    import os

    from tlcore.data.scan import folder_stamp

    bees = tmp_path / "bees"
    bees.mkdir()
    os.utime(bees, (1000, 1000))
    os.utime(tmp_path, (1000, 1000))
    before = folder_stamp(tmp_path)
    (bees / "new.jpg").write_bytes(b"x")
    os.utime(bees, (2000, 2000))  # adding a file touches its class folder
    assert before == 1000 and folder_stamp(tmp_path) == 2000
    assert folder_stamp(tmp_path / "missing") == 0.0  # unreadable: no stamp, no error


def test_a_visitors_scan_goes_through_the_data_roots_fence(tmp_path, monkeypatch, colour_dataset):
    import pytest

    from tlcore.data.pipeline import scan_source
    from tlcore.errors import StudioError

    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path))
    assert scan_source(str(colour_dataset), None, True).counts  # no owner (the CLI): as given
    with pytest.raises(StudioError, match="outside the folders this studio may read"):
        scan_source(str(colour_dataset), "a" * 32, True)  # a dashboard visitor: only inside the roots


def test_a_run_picker_names_read_only_runs_and_starts_at_the_linked_or_last_run(tmp_path, monkeypatch):
    from pathlib import Path

    from tlcore.runs.store import Run, RunStore

    runs = [Run(run_id, Path(run_id), "done", None, access=access)
            for run_id, access in (("r3", "owner"), ("r2", "shared"), ("r1", "published"))]  # fmt: skip
    assert [run.choice_label for run in runs] == [
        "r3",
        "r2 (shared with you, read-only)",
        "r1 (published, read-only)",
    ]
    store = RunStore(tmp_path / "runs")
    assert store.first_choice(runs, None, "r1") == 2  # the visitor's last run
    assert store.first_choice(runs, None, "gone") == 0 and store.first_choice(runs, "unknown-token", None) == 0
    monkeypatch.setattr(store, "open_shared", lambda token: runs[1] if token == "tok" else None)
    assert store.first_choice(runs, "tok", "r1") == 1  # the page was opened with a share link: its run


def test_a_model_files_facts_are_its_cut_candidates_and_its_own_input_size(tmp_path):
    from tests.test_model_files import small_model
    from tlcore.model.backbones import model_file_facts

    facts = model_file_facts(small_model(tmp_path))
    assert facts == {"layers": ["conv"], "image_size": 32}


def test_the_train_pages_settings_are_named_and_explained():
    from tlcore.config import AUGMENT_CHOICES, FreezePlan
    from tlcore.model.choices import AUGMENT_LABELS, TRAIN_HELP, phase_one_title, rate_decay_label, schedule_index

    assert set(AUGMENT_LABELS) == set(AUGMENT_CHOICES) and AUGMENT_LABELS["flip"] == "flip only"
    assert rate_decay_label(1.0) == "same rate" and rate_decay_label(0.5) == "×0.5"
    assert schedule_index("cosine") == 1 and schedule_index("step") == 0  # an unknown schedule: "constant"
    assert phase_one_title(FreezePlan("all")).startswith("**Phase 1 · train the new head** (all backbone layers frozen")
    assert phase_one_title(FreezePlan("none")).startswith("**Phase 1 · train** (every backbone layer trains")
    assert "**Start training**" in TRAIN_HELP["start"] and "cosine" in TRAIN_HELP["schedule"]


def test_full_augmentation_says_both_epoch_times_and_nothing_otherwise():
    from tlcore.model.choices import full_augment_note

    timing = {"cached": 0.04, "full": 3.2, "cut": "block_13", "uses_cut": False, "reason": "augmentation"}
    note = full_augment_note(timing, "full")
    assert "≈ 3.2 s an epoch here instead of ≈ 40 ms from activations cached below block_13" in note
    assert full_augment_note(timing, "flip") is None and full_augment_note(None, "full") is None
    assert full_augment_note({**timing, "cached": None}, "full") is None  # nothing cached to compare with


def test_a_runs_image_counts_are_its_folders_split_as_configured():
    from types import SimpleNamespace

    from tlcore.config import DataConfig
    from tlcore.data.summary import run_image_counts

    counts = {"train": {"a": 30, "b": 10}, "val": {"a": 4, "b": 3}}
    seen = []

    def scan(source, skip_placeholders):
        seen.append((source, skip_placeholders))
        return SimpleNamespace(counts=counts[source])

    assert run_image_counts(DataConfig("train", val_split=0.25), scan) == (30, 10)
    assert run_image_counts(DataConfig("train", val_dir="val", skip_placeholders=False), scan) == (40, 7)
    assert seen[-1] == ("val", False)


def test_the_train_pages_phase_table_has_a_row_per_phase_with_its_parameters(colour_dataset):
    import pytest

    from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
    from tlcore.errors import StudioError
    from tlcore.model.backbones import load_backbone
    from tlcore.model.classifier import phase_table

    model = ModelConfig("SmallCNN", weights="none", image_size=32, freeze=FreezePlan("all"))
    config = RunConfig(DataConfig(str(colour_dataset)), model, TrainConfig(epochs=3, fine_tune_epochs=2))
    backbone = load_backbone(model)
    table = phase_table(backbone, config, 3, None, [])
    assert list(table.index) == ["1 · head", "2 · fine-tune"]
    assert table.loc["1 · head", "epochs"] == 3 and table.loc["1 · head", "time per epoch"] == "after the first run"
    assert int(table.loc["1 · head", "trainable parameters"].replace(",", "")) > 0
    config.train.unfreeze_from = "no_such_block"
    with pytest.raises(StudioError):
        phase_table(backbone, config, 3, None, [])


def test_the_data_page_starts_at_the_source_its_setup_uses():
    from tlcore.data.demo import DEMO_DATASET
    from tlcore.data.sources import DATA_SOURCES, source_of

    assert source_of(DEMO_DATASET) == DATA_SOURCES[0] == "Demo: shapes (offline)"
    assert source_of("/data/photos") == "Folder on this server" and len(DATA_SOURCES) == 5


def test_the_data_page_says_which_folders_a_visitor_may_read(tmp_path, monkeypatch):
    from tlcore.paths import readable_roots_note

    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path))
    note = readable_roots_note("a" * 32, local=False)
    assert note.startswith(f"This studio reads folders inside {tmp_path} (TLCORE_DATA_ROOTS), plus your own uploads")
    assert "allow another folder" not in note and "allow another folder" in readable_roots_note("a" * 32, local=True)
    monkeypatch.setenv("TLCORE_DATA_ROOTS", "")
    assert "inside no folder" in readable_roots_note("a" * 32, local=False)


def test_the_data_pages_numbers_apply_the_visitors_label_decisions(colour_dataset, tmp_path, monkeypatch):
    from tlcore.data.scan import scan_folder
    from tlcore.data.summary import summarize_for_training
    from tlcore.insight.overlay import record

    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))  # where decisions are kept
    owner = "b" * 32
    scan = scan_folder(colour_dataset)
    summary, (kept, val) = summarize_for_training(scan, None, owner)
    assert (summary.images, summary.excluded, val) == (len(scan.items), 0, None)
    item = scan.items[0]
    record([str(scan.root)], item.path, item.digest, "exclude", owner=owner)
    summary, (kept, val) = summarize_for_training(scan, scan, owner)  # a validation folder: both counted
    assert summary.excluded == 2 and len(kept.items) == len(val.items) == len(scan.items) - 1
    assert item.path not in {other.path for other in kept.items}
    assert summarize_for_training(scan, None, "c" * 32)[0].excluded == 0  # another visitor's decisions only


def test_a_new_browsers_cookie_is_strict_and_secure_on_https():
    from tlcore.sessions import COOKIE_NAME, cookie_script

    script = cookie_script("f" * 32)
    assert f"{COOKIE_NAME}={'f' * 32}; path=/; max-age=31536000; SameSite=Strict" in script
    assert "location.protocol === 'https:' ? '; Secure'" in script and script.startswith("<script>")


def test_two_tabs_merge_only_the_fields_each_changed():
    from tlcore.config import RunConfig
    from tlcore.sessions import changed_fields, current_fields, newer_fields

    fields = current_fields(RunConfig(), {"data_summary": "40 images · 2 classes", "num_classes": 2})
    assert fields["data_summary"] == "40 images · 2 classes" and fields["train.epochs"] == RunConfig().train.epochs
    assert current_fields(RunConfig(), {})["num_classes"] == 2  # nothing measured yet
    synced = {"train.epochs": 5, "model.image_size": 160}
    current = {"train.epochs": 5, "model.image_size": 224}  # this tab changed the size
    stored = {"train.epochs": 9, "model.image_size": 128}  # another tab saved both since
    assert newer_fields(stored, synced, current) == {"train.epochs": 9}  # this tab's own change wins
    assert changed_fields(current, synced) == {"model.image_size": 224}
    assert changed_fields({"train.seed": 1}, {}) == {"train.seed": 1}  # never seen stored: written


def test_a_session_keeps_the_latest_share_links_it_opened():
    from tlcore.sessions import MAX_SHARED_LINKS, remember_link

    opened = []
    assert remember_link(opened, None) == () and remember_link(opened, "t1") == ("t1",)
    assert remember_link(opened, "t1") == ("t1",)  # once
    for index in range(MAX_SHARED_LINKS + 3):
        remember_link(opened, f"x{index}")
    assert len(opened) == MAX_SHARED_LINKS and opened[-1] == f"x{MAX_SHARED_LINKS + 2}" and "t1" not in opened


def test_analysis_features_are_kept_per_setup_folders_and_label_decisions(colour_dataset, tmp_path, monkeypatch):
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlcore.insight import feature_set
    from tlcore.insight.overlay import record
    from tlcore.model.backbones import load_backbone

    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    config = RunConfig(DataConfig(str(colour_dataset)), ModelConfig("SmallCNN", weights="none", image_size=32))
    other_rate = RunConfig(config.data, config.model, TrainConfig(learning_rate=0.1))
    other_seed = RunConfig(config.data, config.model, TrainConfig(seed=7))
    assert feature_set.features_key(config) == feature_set.features_key(other_rate)  # the rate keeps the features
    assert feature_set.features_key(config) != feature_set.features_key(other_seed)  # the split changes
    calls = []
    real = feature_set.dataset_features
    monkeypatch.setattr(feature_set, "dataset_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    backbone, folders = load_backbone(config.model), [str(colour_dataset), None]
    first = feature_set.features_for(config, folders, backbone)
    assert feature_set.features_for(other_rate, folders, backbone) is first and len(calls) == 1
    item = first.all_items[0]
    record([str(colour_dataset)], item.path, item.digest, "exclude")  # a new decision: computed again
    again = feature_set.features_for(config, folders, backbone)
    assert len(calls) == 2 and item.path not in {other.path for other in again.all_items}


def test_label_decisions_are_kept_for_the_folder_images_are_read_from_and_said_in_words(tmp_path):
    from tlcore.data.demo import DEMO_DATASET
    from tlcore.insight.overlay import decision_folder, decision_words

    assert decision_words({"action": "exclude"}) == "excluded"
    assert decision_words({"action": "relabel", "label": "bees"}) == "relabelled → bees"
    assert decision_folder(str(tmp_path)) == str(tmp_path)
    assert decision_folder(DEMO_DATASET) != DEMO_DATASET  # the demo set: its generated folder
    assert decision_folder(str(tmp_path / "gone.zip")) == str(tmp_path / "gone.zip")  # unresolvable: itself


def test_the_label_and_duplicate_sections_say_their_numbers_in_words(colour_dataset, tmp_path, monkeypatch):
    from tlcore.data.scan import scan_folder
    from tlcore.insight.duplicates import HOW_PAIRS_ARE_FOUND, Leakage
    from tlcore.insight.label_issues import HOW_SUSPECTS_ARE_FOUND, SUSPECTS_ORDER, suspicion_words
    from tlcore.insight.overlay import images_left, record

    assert suspicion_words(0.95, 1.0) == "suspicion 0.950 (p(given) 5.0%; 100% of splits disagree)"
    assert "cleanlab" in HOW_SUSPECTS_ARE_FOUND and SUSPECTS_ORDER.startswith("Most doubtful first")
    assert "**same photo**" in HOW_PAIRS_ARE_FOUND
    assert Leakage(["v1.jpg"], 0.95, 0.9, 20).accuracy_change == "95.0% → 90.0%"
    assert Leakage([], 0.95, None, 20).accuracy_change is None and Leakage(["v1"], 1.0, None, 1).accuracy_change is None
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    scan = scan_folder(colour_dataset)
    total = len(scan.items)
    assert images_left([scan], "d" * 32) == f"{total} of {total} in {colour_dataset.name}"
    record([str(scan.root)], scan.items[0].path, scan.items[0].digest, "exclude", owner="d" * 32)
    assert images_left([scan, scan], "d" * 32) == " · ".join([f"{total - 1} of {total} in {colour_dataset.name}"] * 2)


def test_the_calibration_section_says_its_numbers_and_applies_a_temperature_once(tmp_path):
    import numpy as np

    from tlcore.insight import calibration

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    confident = np.where(rng.random(400) < 0.7, labels, 1 - labels)  # 70 % right, said with 99 % confidence
    probabilities = np.eye(2)[confident] * 0.98 + 0.01
    report = calibration.calibration_report(probabilities, labels)
    assert list(report.metrics()) == [
        "Calibration error (ECE)",
        "With temperature scaling (cross-fitted)",
        "Temperature",
    ]
    assert report.metrics()["Temperature"] == f"{report.temperature:.2f}"
    assert report.temperature_note().startswith(
        f"A temperature of {report.temperature:.2f} means the model is over-confident"
    )
    calibration.set_applied(tmp_path, report, True)
    assert calibration.load_temperature(tmp_path) == report.temperature
    written = (tmp_path / calibration.CALIBRATION_FILE).stat().st_mtime_ns
    calibration.set_applied(tmp_path, report, True)  # already applied: nothing written
    assert (tmp_path / calibration.CALIBRATION_FILE).stat().st_mtime_ns == written
    calibration.set_applied(tmp_path, report, False)
    assert calibration.load_temperature(tmp_path) is None


def test_evaluate_says_what_leaks_do_to_the_accuracy_and_which_points_were_selected():
    import numpy as np

    from tlcore.insight.duplicates import accuracy_without, leak_warning
    from tlcore.insight.figures import selected_paths
    from tlcore.metrics import run_predictions

    probabilities, labels = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1])
    numbers = accuracy_without(["a", "b", "c"], labels, probabilities, ["a"])
    assert leak_warning(numbers, 1) == (
        "1 validation image is the same photo as a training image. Validation accuracy 66.7% counts them; "
        "without them it is 50.0%."
    )
    everything = accuracy_without(["a"], labels[:1], probabilities[:1], ["a"])
    assert leak_warning(everything, 1).endswith("undefined (nothing left).")
    assert selected_paths([{"customdata": ["x.jpg", 1]}, {"x": 1}, {"customdata": ["y.jpg"]}]) == ["x.jpg", "y.jpg"]

    class Run:
        labels = ["ants", "bees"]

        def val_probabilities(self):
            return ["a", "b", "c"], labels, probabilities

    assert run_predictions(Run()) == {"a": "ants", "b": "bees", "c": "ants"}


def test_a_file_that_is_no_image_names_the_formats_read_and_what_to_do():
    import pytest

    from tlcore.data.common import IMAGE_SUFFIXES, UPLOAD_TYPES
    from tlcore.data.images import open_image
    from tlcore.errors import StudioError

    with pytest.raises(StudioError) as error:
        open_image(b"<html>not an image</html>")
    message = str(error.value)
    assert message.startswith("not a readable image: its contents are not JPEG, PNG, WebP, BMP, GIF or TIFF")
    assert "save it as JPEG or PNG and add that file instead" in message and "Pillow" not in message
    assert UPLOAD_TYPES == [suffix[1:] for suffix in IMAGE_SUFFIXES] and "webp" in UPLOAD_TYPES
