"""The insight page sections, rendered with AppTest.from_function (the pages will call them)."""

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

TIMEOUT = 120


@pytest.fixture(autouse=True)
def readable_test_folders(tmp_path_factory, monkeypatch):
    """The sections read datasets as a visitor does, through the data-roots fence: the test's folders are the roots."""
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def flipped_colours(tmp_path, colour_dataset, monkeypatch):
    """The colour dataset with one red image filed under blue; its own workspace."""
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    root = tmp_path / "colours"
    shutil.copytree(colour_dataset, root)
    moved = root / "blue" / "red_0.png"
    shutil.move(root / "red" / "red_0.png", moved)
    return root, moved


def colour_config(root):
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        DataConfig(str(root), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(epochs=5, batch_size=8),
    )


def label_script(config):
    from ui.insight.data_sections import label_issues_section

    label_issues_section(config)


def test_suspect_labels_section_lists_the_flip_and_relabel_stores_an_overlay(flipped_colours):
    from tlcore.insight.overlay import load_overlay

    root, moved = flipped_colours
    app = AppTest.from_function(label_script, args=(colour_config(root),), default_timeout=TIMEOUT).run()
    app.button(key="label_issues").click().run()
    assert not app.exception
    assert "1 suspect labels among 36 images" in app.warning[0].value
    cards = [caption.value for caption in app.caption if "red\\_0.png" in caption.value]  # Markdown-escaped name
    assert cards and "suspicion " in cards[0] and "100% of splits disagree" in cards[0]
    relabel = next(button for button in app.button if button.label == "Relabel as red")
    relabel.click().run()
    decision = load_overlay(root).decision(str(moved))
    assert decision is not None and decision["action"] == "relabel" and decision["label"] == "red"
    assert moved.is_file()  # the file stays where it is
    assert any(button.label == "Undo" for button in app.button)


def test_label_decisions_work_on_an_uploaded_zip_too(flipped_colours, tmp_path):
    """A zip is read from the folder it is extracted to: the decision must be kept for that folder."""
    from tlcore.data.pipeline import load_dataset

    root, moved = flipped_colours
    archive = shutil.make_archive(str(tmp_path / "colours"), "zip", root)
    config = colour_config(archive)
    app = AppTest.from_function(label_script, args=(config,), default_timeout=TIMEOUT).run()
    app.button(key="label_issues").click().run()
    next(button for button in app.button if button.label == "Relabel as red").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert "Your label decisions (1)" in " ".join(m.value for m in app.markdown)
    dataset = load_dataset(config.data)
    relabelled = [item for item in dataset.train + dataset.val if item.path.endswith("blue/red_0.png")]
    assert [item.label for item in relabelled] == ["red"]


def duplicates_script(config):
    from ui.insight.data_sections import near_duplicates_section

    near_duplicates_section(config)


def test_near_duplicates_section_is_silent_without_copies_and_shows_a_planted_one(flipped_colours):
    root, _ = flipped_colours
    app = AppTest.from_function(duplicates_script, args=(colour_config(root),), default_timeout=TIMEOUT).run()
    app.button(key="near_duplicates").click().run()
    assert not app.exception
    assert not app.metric and "every photo is a different picture" in app.success[0].value  # no "+0.0 %"
    copied = root.parent / "colours_with_a_copy"
    shutil.copytree(root, copied)
    shutil.copy(copied / "green" / "green_3.png", copied / "green" / "green_copy.png")
    app = AppTest.from_function(duplicates_script, args=(colour_config(copied),), default_timeout=TIMEOUT).run()
    app.button(key="near_duplicates").click().run()
    assert not app.exception
    assert [metric.label for metric in app.metric][:2] == ["Same-photo pairs", "Validation images also in training"]
    assert app.metric[0].value == "1"
    assert any("same photo" in markdown.value and "pixels 1.000" in markdown.value for markdown in app.markdown)


def train_script(config):
    from ui.insight.train_sections import learning_curve_section, lr_finder_section

    lr_finder_section(config)
    learning_curve_section(config)


def test_lr_finder_use_this_sets_the_learning_rate_and_the_curve_draws(flipped_colours):
    from tlcore.config import LEARNING_RATE_CHOICES

    root, _ = flipped_colours
    config = colour_config(root)
    config.train.learning_rate = 0.1
    app = AppTest.from_function(train_script, args=(config,), default_timeout=TIMEOUT).run()
    app.button(key="lr_find").click().run()
    assert not app.exception
    assert any("Suggested (valley)" in caption.value for caption in app.caption)
    app.button(key="lr_use").click().run()
    assert config.train.learning_rate in LEARNING_RATE_CHOICES
    app.button(key="learning_curve").click().run()
    assert not app.exception
    assert len(app.get("plotly_chart")) == 2


def evaluate_script(run):
    from ui.insight.evaluate_sections import calibration_section, embedding_section

    calibration_section(run)
    embedding_section(run)


def test_calibration_and_feature_map_sections_on_a_trained_run(trained_run, monkeypatch, tmp_path):
    from tlcore.insight.calibration import calibration_report, load_temperature

    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    app = AppTest.from_function(evaluate_script, args=(trained_run,), default_timeout=TIMEOUT).run()
    assert not app.exception
    assert [metric.label for metric in app.metric] == [
        "Calibration error (ECE)",
        "With temperature scaling (cross-fitted)",
        "Temperature",
    ]
    _, labels, probabilities = trained_run.val_probabilities()
    if calibration_report(probabilities, labels).helps:
        app.checkbox(key=f"calibrate_{trained_run.run_id}").check().run()
        assert load_temperature(trained_run.path) is not None
        app.checkbox(key=f"calibrate_{trained_run.run_id}").uncheck().run()
        assert load_temperature(trained_run.path) is None
    else:
        assert not app.checkbox and "would not help" in app.info[0].value
    app.button(key="embedding").click().run()
    assert not app.exception
    assert len(app.get("plotly_chart")) == 2
    app.radio(key="map_colour").set_value("mistake").run()
    assert not app.exception and Path(trained_run.path).is_dir()


def calibration_script(run):
    from ui.insight.evaluate_sections import calibration_section

    calibration_section(run)


@pytest.mark.parametrize("helps", [True, False])
def test_temperature_scaling_is_offered_only_when_it_helps(helps, tmp_path):
    from types import SimpleNamespace

    from tests.test_insight import overconfident, well_calibrated
    from tlcore.insight.calibration import load_temperature

    probabilities, labels = overconfident() if helps else well_calibrated()
    run = SimpleNamespace(
        path=str(tmp_path),
        run_id="fake",
        read_only=False,
        check_writable=lambda: None,
        val_probabilities=lambda: ([""] * len(labels), labels, probabilities),
    )
    app = AppTest.from_function(calibration_script, args=(run,), default_timeout=TIMEOUT).run()
    assert not app.exception
    if helps:
        assert "Temperature scaling helps" in app.success[0].value
        app.checkbox(key="calibrate_fake").check().run()
        assert load_temperature(tmp_path) is not None
    else:  # ECE 0.011 → 0.019 was offered before
        assert not app.checkbox and "would not help" in app.info[0].value


def sweep_script(best):

    import pandas as pd
    import streamlit as st

    from tlcore.config import DataConfig, ModelConfig, TrainConfig
    from tlcore.training.sweep import SweepResult
    from ui.sweep_section import sweep_section

    if "forms" not in st.session_state:
        st.session_state.forms = (DataConfig(), ModelConfig(hidden_units=0, dropout_rate=0.2), TrainConfig())
        table = pd.DataFrame([{**best, "rank": 1, "val_loss": 0.1, "val_accuracy": 0.9}])
        st.session_state.sweep_result = SweepResult(table, 1.0, 0.5)  # a finished sweep job's result
    data, model, train = st.session_state.forms
    sweep_section(data, model, train)
    st.caption(f"form: hidden {model.hidden_units} · dropout {model.dropout_rate} · lr {train.learning_rate:g}")


def test_use_the_best_shows_what_changes_and_changes_nothing_without_a_click():
    from tlcore.config import TrainConfig

    best = {"learning_rate": 1e-2, "dropout_rate": 0.5, "hidden_units": 256, "optimizer": TrainConfig().optimizer}
    app = AppTest.from_function(sweep_script, args=(best,), default_timeout=TIMEOUT).run()
    assert not app.exception
    form = f"lr {TrainConfig().learning_rate:g}"
    assert f"form: hidden 0 · dropout 0.2 · {form}" in [caption.value for caption in app.caption]  # untouched
    shown = app.table[0].value
    assert set(shown["setting"]) == {"learning rate", "dropout", "hidden units"}
    assert shown.set_index("setting").loc["hidden units", "where"] == "Model page, head"
    assert shown.set_index("setting").loc["hidden units", ["now", "best"]].tolist() == ["0", "256"]
    app.button(key="sweep_use_best").click().run()
    assert not app.exception
    assert "form: hidden 256 · dropout 0.5 · lr 0.01" in [caption.value for caption in app.caption]
    message = app.success[0].value
    assert "hidden units 0 → 256 (Model page, head)" in message and "dropout 0.2 → 0.5" in message


def leaderboard_script():
    import streamlit as st

    from tlcore.config import FreezePlan
    from tlcore.insight.backbone_compare import CandidateResult, Leaderboard, candidate_settings
    from ui import shared
    from ui.compare_sections import leaderboard_section

    if "leaderboard" not in st.session_state:  # a finished comparison job's result
        rows = [
            CandidateResult("MobileNetV2:none", 0.9, 0.02, 0.3, 40.0, 20.0, 2_257_984, 9.0, 224, scores=[0.9] * 3),
            CandidateResult("SmallCNN:none", 0.7, 0.03, 0.6, 900.0, 1.0, 98_160, 0.4, 64, scores=[0.7] * 3),
            CandidateResult("NoSuchNet", error="Unknown backbone. Expected one of [...]"),
        ]
        for row in rows[:2]:
            row.settings = candidate_settings(row.backbone)
            row.val_sizes, row.train_sizes = [50] * 3, [100] * 3  # 3 folds of 150 images
        st.session_state.leaderboard = Leaderboard(rows, 12.0, 3, 1)
        shared.config("model").freeze = FreezePlan("none")
    model = shared.config("model")
    leaderboard_section(shared.config("data"), model, shared.config("train"))
    st.caption(f"model: {model.backbone} · {model.weights} · {model.image_size} · {model.freeze.mode}")


def test_the_leaderboard_lists_failures_and_use_this_backbone_sets_the_model_page():
    app = AppTest.from_function(leaderboard_script, default_timeout=TIMEOUT).run()
    assert not app.exception
    table = app.dataframe[0].value
    assert table["backbone"].tolist() == ["MobileNetV2:none", "SmallCNN:none", "NoSuchNet"]
    assert "Unknown backbone" in table.set_index("backbone").loc["NoSuchNet", "error"]
    assert any("leads SmallCNN:none by 20.0" in caption.value for caption in app.caption)
    choice = next(box for box in app.selectbox if box.label == "Use this backbone")
    choice.set_value("SmallCNN:none").run()
    app.button(key="leaderboard_use").click().run()
    assert not app.exception
    assert "model: SmallCNN · none · 64 · all" in [caption.value for caption in app.caption]


def depth_script():
    import streamlit as st

    from tlcore.config import DataConfig, ModelConfig, TrainConfig
    from tlcore.insight.depth_compare import DepthComparison, DepthResult
    from ui.compare_sections import depth_section

    if "forms" not in st.session_state:
        st.session_state.forms = (DataConfig(), ModelConfig(), TrainConfig(fine_tune_epochs=0))
        depths = [  # 3 repeats each: enough to tell a 15-point lead from noise
            DepthResult("head only", [0.80, 0.81, 0.79], [0.5] * 3, [1.0] * 3),
            DepthResult("block_15", [0.95, 0.94, 0.96], [0.2] * 3, [9.0] * 3, 3),
        ]
        st.session_state.depths = DepthComparison(depths, 150, 4, 10.0)
    data, model, train = st.session_state.forms
    depth_section(data, model, train)
    st.caption(f"phase 2: {train.fine_tune_epochs} epochs from {train.unfreeze_from}")


def test_use_this_depth_sets_phase_two_and_the_verdict_is_shown():
    app = AppTest.from_function(depth_script, default_timeout=TIMEOUT).run()
    assert not app.exception
    assert any("Fine-tuning from block_15 is best" in caption.value for caption in app.caption)
    assert "phase 2: 0 epochs from None" in [caption.value for caption in app.caption]
    assert next(box for box in app.selectbox if box.label == "Use this depth").value == "block_15"
    app.button(key="depth_use").click().run()
    assert "phase 2: 4 epochs from block_15" in [caption.value for caption in app.caption]
