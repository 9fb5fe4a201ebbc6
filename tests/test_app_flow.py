"""The newcomer's flow through the real router (AppTest): state that follows each action,
survives a refresh, stays with its own browser, and says what it did.

A refresh is a new Streamlit session of the same browser: the same cookie. AppTest has
no browser, so these tests hand the session a cookie the way Streamlit would.
"""

import io
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.runtime.context import ContextProxy
from streamlit.testing.v1 import AppTest

from tests.test_app import APP, TIMEOUT, app, plain, sidebar_lines, studio_env, texts  # noqa: F401  (fixture)
from tlcore import sessions
from tlcore.config import DataConfig, FreezePlan, ModelConfig, TrainConfig


@pytest.fixture
def browser(monkeypatch):
    """``browser(secret)`` makes the next AppTest sessions come from that browser (its cookie)."""

    def use(secret: str) -> None:
        monkeypatch.setattr(ContextProxy, "cookies", property(lambda self: {sessions.COOKIE_NAME: secret}))

    return use


def session(page: str | None = None, job: str | None = None) -> AppTest:
    """A new session (a refresh or another browser), optionally opening a ``?job=`` link."""
    return app(page, job)


def colour_setup(at, folder, epochs=2, fine_tune_epochs=0, patience=5):
    at.session_state["data_config"] = DataConfig(str(folder), val_split=0.25)
    at.session_state["model_config"] = ModelConfig("SmallCNN", weights="none", image_size=32, freeze=FreezePlan("none"))
    at.session_state["train_config"] = TrainConfig(
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        unfreeze_from="block4",
        batch_size=8,
        learning_rate=1e-2,
        early_stopping_patience=patience,
    )


def wait_for(at, done, limit=300):
    deadline = time.time() + limit
    while time.time() < deadline:
        time.sleep(1)
        at.run()  # AppTest has no browser timer: each run advances the run_every fragments
        assert not at.exception, [e.stack_trace for e in at.exception]
        if done(at):
            return at
    raise AssertionError("gave up waiting: " + texts(at))


def button(at, label):
    return next(b for b in at.button if b.label == label)


def test_the_sidebar_names_a_new_folder_in_the_same_run(colour_dataset):
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(colour_dataset)).run()
    assert not at.error, [e.value for e in at.error]
    assert sidebar_lines(at)[0].startswith(f"**Dataset** · {colour_dataset.name} (")
    assert "36 images · 3 classes" in sidebar_lines(at)[0]


def test_the_sidebar_names_an_uploaded_model_file_at_once(tmp_path):
    from tlcore.model.backbones import build_small_cnn

    path = tmp_path / "my_net.keras"
    build_small_cnn(input_shape=(32, 32, 3)).save(path)
    at = app("pages/image/model.py")
    at.selectbox[0].set_value("Your own Keras model file…").run()
    at.file_uploader[0].set_value(("my_net.keras", path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception
    assert sidebar_lines(at)[1].startswith("**Model** · your model file my_net.keras")


def test_a_refused_model_file_leaves_the_previous_model_current(tmp_path):
    """A text file renamed .keras after a good model file: refused, and the good one stays the model."""
    from tlcore.model.backbones import build_small_cnn

    good = tmp_path / "my_net.keras"
    build_small_cnn(input_shape=(32, 32, 3)).save(good)
    at = app("pages/image/model.py")
    at.selectbox[0].set_value("Your own Keras model file…").run()
    at.file_uploader[0].set_value((good.name, good.read_bytes(), "application/octet-stream")).run()
    current = at.session_state["model_config"].backbone
    at.session_state["train_config"].unfreeze_from = "block2"
    at.file_uploader[0].set_value(("notes_txt.keras", b"just some notes\n", "application/octet-stream")).run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    message = plain(at.error[0].value)
    assert "notes_txt.keras is refused. Your model is still **your model file my_net.keras" in message
    assert at.session_state["model_config"].backbone == current
    assert sidebar_lines(at)[1].startswith("**Model** · your model file my_net.keras")
    assert "Using your model file notes_txt.keras" not in texts(at)
    assert at.session_state["train_config"].unfreeze_from == "block2"  # the model did not change
    at.switch_page("pages/image/train.py").run()
    assert "backbone: **your model file my_net.keras" in plain(at.caption[0].value)
    assert not button(at, "Start training").disabled


def test_train_cannot_start_with_a_model_file_that_does_not_load(tmp_path):
    """A setup saved with a file that is refused now (e.g. before the check): Start waits for a model that loads."""
    notes = tmp_path / "notes_txt.keras"
    notes.write_text("just some notes")
    at = app("pages/image/train.py")
    at.session_state["model_config"] = ModelConfig(str(notes), weights="none")
    at.run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    assert button(at, "Start training").disabled


def test_a_new_backbone_drops_the_previous_models_unfreeze_block():
    at = app("pages/image/model.py")
    at.session_state["train_config"].unfreeze_from = "block_16"  # MobileNetV2's
    at.selectbox[0].set_value("SmallCNN").run()
    assert at.session_state["train_config"].unfreeze_from is None


def test_the_validation_folder_gets_its_own_counts_and_health_report(tmp_path):
    from tests.helpers import make_colour_dataset

    train = make_colour_dataset(tmp_path / "train", per_class=8)
    val = make_colour_dataset(tmp_path / "val", per_class=3, seed=1)
    (val / "red" / "broken.png").write_bytes(b"not an image")
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(train)).run()
    at.checkbox[0].check().run()
    at.text_input[1].set_value(str(val)).run()
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader][:2] == ["Training set", "Validation set"]
    assert [m.value for m in at.metric][:6] == ["24", "3", "0", "9", "3", "1"]
    assert at.table[0].value["file"].tolist() == ["red/broken.png"]
    assert at.session_state["data_config"].val_dir == str(val.resolve())
    assert "33 images · 3 classes" in sidebar_lines(at)[0]


@pytest.mark.parametrize("escape", ["absolute", "dotdot", "symlink"])
def test_folders_outside_the_data_roots_are_refused(tmp_path, monkeypatch, escape):
    from tests.helpers import make_colour_dataset

    outside = make_colour_dataset(tmp_path / "outside", per_class=6)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(allowed))
    typed = {"absolute": str(outside), "dotdot": f"{allowed}/../outside", "symlink": str(allowed / "link")}[escape]
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(typed).run()
    message = plain(at.error[0].value)
    assert "outside the folders this studio may read" in message and "TLCORE_DATA_ROOTS" in message
    assert at.session_state["data_config"].data_dir == "demo:shapes"
    assert not at.metric  # nothing of the outside folder was listed


def test_error_text_is_shown_literally(tmp_path):
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(tmp_path / "cats" / "*.jpg")).run()
    raw = at.error[0].value
    assert "cats/\\*.jpg" in raw  # escaped for Markdown, so the reader sees the asterisk
    assert "cats/*.jpg" in plain(raw)


def test_the_train_page_says_what_each_phase_trains():
    at = app("pages/image/train.py")
    at.session_state["model_config"] = ModelConfig("SmallCNN", weights="none", image_size=32)
    at.session_state["train_config"] = TrainConfig(epochs=3, fine_tune_epochs=2)
    at.run()
    table = at.table[0].value
    assert list(table.index) == ["1 · head", "2 · fine-tune"]
    assert list(table["trains"]) == ["head", "from block4"]
    assert "phase 1: all backbone layers frozen: only the new head trains" in texts(at)
    head, tune = (int(value.replace(",", "")) for value in table["trainable parameters"])
    assert head == 128 * 3 + 3 and tune > head  # 3 demo classes
    blocks = next(s for s in at.selectbox if s.label == "Unfreeze from block")
    assert blocks.options[-1] == "block4" and len(blocks.options) >= 4
    assert "freeze plan: all" not in texts(at) and "(none)" not in texts(at)
    next(n for n in at.number_input if n.label.startswith("Fine-tune epochs")).set_value(0).run()
    assert list(at.table[0].value.index) == ["1 · head", "2 · fine-tune (skipped: 0 epochs)"]


def test_a_refresh_keeps_the_whole_setup(browser, colour_dataset):
    secret = sessions.new_secret()
    browser(secret)
    at = session("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(colour_dataset)).run()
    at.switch_page("pages/image/model.py")
    at.run()
    at.selectbox[0].set_value("SmallCNN").run()
    at.switch_page("pages/image/train.py")
    at.run()
    next(n for n in at.number_input if n.label == "Epochs").set_value(7).run()
    st.cache_resource.clear()  # a server restart forgets everything in memory
    st.cache_data.clear()

    again = session("pages/image/train.py")  # the same browser after a refresh
    assert again.session_state["data_config"].data_dir == str(colour_dataset.resolve())
    assert again.session_state["model_config"].backbone == "SmallCNN"
    assert next(n for n in again.number_input if n.label == "Epochs").value == 7
    assert sidebar_lines(again)[0].startswith(f"**Dataset** · {colour_dataset.name}")
    again.switch_page("pages/image/data.py")
    again.run()
    assert again.radio(key="source_kind").value == "Folder on this server"
    assert again.text_input[0].value == str(colour_dataset.resolve())

    browser(sessions.new_secret())
    stranger = session("pages/image/train.py")
    assert stranger.session_state["data_config"].data_dir == "demo:shapes"


def test_a_running_job_is_found_after_a_refresh_but_not_through_a_shared_link(browser, colour_dataset):
    owner = sessions.new_secret()
    browser(owner)
    at = session("pages/image/train.py")
    colour_setup(at, colour_dataset, epochs=300, patience=0)  # runs until stopped
    at.run()
    button(at, "Start training").click().run()
    job_id = at.session_state["job_id"]
    assert any("Job" in line and "·" in line for line in sidebar_lines(at))
    assert "none yet" not in sidebar_lines(at)[2]
    wait_for(at, lambda at: "epoch" in sidebar_lines(at)[2])

    browser(sessions.new_secret())  # someone else opens the owner's URL
    stranger = session("pages/image/train.py", job=job_id)
    assert not [b for b in stranger.button if b.label == "Stop"]
    assert "belongs to another browser" in " ".join(c.value for c in stranger.sidebar.get("caption"))
    assert sidebar_lines(stranger)[2] == "**Job** · none yet"

    browser(owner)  # the owner refreshes mid-run: the job, its chart and Stop are back
    refreshed = session("pages/image/train.py", job=job_id)
    assert refreshed.session_state["job_id"] == job_id
    assert refreshed.get("plotly_chart") and button(refreshed, "Stop")
    button(refreshed, "Stop").click().run()
    wait_for(refreshed, lambda at: at.success and "Stopped" in at.success[0].value)


def test_stop_is_acknowledged_at_once_in_the_panel_and_the_sidebar(browser):
    """A batch can take tens of seconds (a fine-tune's first compiles): the click says it was heard at once."""
    import threading

    from ui import shared

    browser(sessions.new_secret())
    at = session("pages/image/train.py")
    release = threading.Event()

    def slow_batch(job):  # a batch that ends only when the test lets it (the stop flag is read after it)
        job.log.append("phase", phase="head", epochs=3)
        job.log.append("batch", phase="head", epoch=1, step=1, steps=4)
        release.wait(60)

    job = shared.registry().start(at.session_state["session_id"], "train", "a slow training", slow_batch, epochs=3)
    try:
        at.run()
        assert "Stops after the current batch" in texts(at)  # said beside Stop, not in a tooltip over the progress
        button(at, "Stop").click().run()
        assert job.stop.is_set() and job.active
        assert "Stopping — after the current batch" in sidebar_lines(at)[2]
        assert at.get("progress")[0].proto.text.startswith("Stopping — after the current batch")  # the panel's line
        assert "Stop" not in [b.label for b in at.button]
        other_tab = session("pages/image/train.py")  # the same browser's other tab reads the job's flag
        assert "Stopping — after the current batch" in sidebar_lines(other_tab)[2]
    finally:
        release.set()
        job.wait(10)


def test_a_retrain_on_cached_features_shows_its_result_on_the_click_itself(browser, colour_dataset):
    browser(sessions.new_secret())
    at = session("pages/image/train.py")
    colour_setup(at, colour_dataset, epochs=3)
    at.session_state["model_config"] = ModelConfig("SmallCNN", weights="none", image_size=32, freeze=FreezePlan("all"))
    at.run()
    button(at, "Start training").click().run()
    wait_for(at, lambda at: at.success and "Saved as run" in at.success[0].value)
    first = at.success[0].value
    assert "s training, " in first and "s for the whole job (loading, feature extraction, saving)" in first
    button(at, "Start training").click().run()  # features cached: the page waits for the job, no poll needed
    assert not at.exception and at.success and "Saved as run" in at.success[0].value
    assert at.success[0].value != first  # the new run, not the one before
    head = at.table[0].value.loc["1 · head", "time per epoch"]  # measured in the first run of this setup
    # A head epoch on cached features can take a few milliseconds: never "≈ 0.0 s".
    assert re.fullmatch(r"(≈ \d+\.\d s|≈ [1-9]\d* ms|< 1 ms) \(your last run like this\)", head), head
    assert "0.0 s" not in head


def test_the_ab_pair_shows_both_results_on_the_train_page_and_after_a_refresh(browser, colour_dataset):
    secret = sessions.new_secret()
    browser(secret)
    at = session("pages/image/runs.py")
    colour_setup(at, colour_dataset, epochs=2, fine_tune_epochs=1)
    at.run()
    button(at, "Run the A/B pair").click().run()
    at.switch_page("pages/image/train.py")
    at.run()
    wait_for(at, lambda at: at.success and "A/B pair" in at.success[0].value)
    table = at.table[-1].value
    assert list(table.index) == ["A-fixed-features", "B-fine-tune"]
    assert "better" in at.success[0].value or "same model" in at.success[0].value
    for _ in range(3):  # the live panel reran every second and crashed here before
        at.run()
        assert not at.exception
    refreshed = session("pages/image/train.py")
    assert not refreshed.exception and "A/B pair" in refreshed.success[0].value
    refreshed.switch_page("pages/image/runs.py")
    refreshed.run()
    assert not refreshed.exception and len(refreshed.dataframe[0].value) == 2


@pytest.mark.real_assets
def test_predict_says_when_an_upload_is_not_like_the_training_photos(photo_run, hymenoptera):
    import os

    from tests.test_predict import orange_disk

    shutil.copytree(photo_run.path, Path(os.environ["TLCORE_RUNS_DIR"]) / photo_run.run_id)
    at = app("pages/image/predict.py")
    gif = next(hymenoptera.rglob("imageNotFound.gif")).read_bytes()
    photo = io.BytesIO()
    Image.open(next((hymenoptera / "val" / "ants").glob("*.jpg"))).save(photo, "JPEG")
    uploads = [("imageNotFound.gif", gif), ("ant.jpg", photo.getvalue()), ("orange.png", orange_disk("PNG"))]
    uploads += [("orange-photo.jpg", orange_disk("JPEG", noise=8)), ("notes.jpg", b"these are words, not pixels")]
    at.file_uploader[0].set_value([(name, data, "image/jpeg") for name, data in uploads]).run()
    assert not at.exception
    warnings = [plain(w.value) for w in at.warning]
    assert [w.split(" ", 1)[0] for w in warnings] == ["imageNotFound.gif", "orange.png", "orange-photo.jpg"]
    assert warnings[0].startswith("imageNotFound.gif looks like a blank or placeholder graphic, not a photo (")
    assert warnings[1].startswith("orange.png looks like a drawing or flat graphic, not a photo (2 colours")
    assert warnings[2].startswith("orange-photo.jpg is unlike every training image")
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert [t.startswith("no confident answer") for t in titles] == [True, False, True, True]
    error = plain(at.error[0].value)
    assert "notes.jpg: not a readable image: its contents are not JPEG, PNG, WebP, BMP, GIF or TIFF" in error
    assert "save it as JPEG or PNG" in error and "Pillow" not in error  # which formats, what to do; no library name


def test_a_downloaded_weights_file_can_be_used_instead_of_the_download(tmp_path):
    """The offline message suggests a local weights file: the Model page offers to upload one."""
    import keras

    path = tmp_path / "mobilenet_v2_96_notop.weights.h5"
    keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3)).save_weights(path)
    at = app("pages/image/model.py")
    at.radio[0].set_value("file").run()
    assert "Upload the weights file" in texts(at)
    at.file_uploader[0].set_value((path.name, path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["model_config"].weights.endswith(path.name)
    assert sidebar_lines(at)[1] == f"**Model** · MobileNetV2, weights from {path.name}"
    assert at.session_state["model_config"].freeze.mode == "all"  # pretrained weights: a fixed feature extractor


OWN_FILE = "Your own Keras model file…"


def offline(monkeypatch, tmp_path):
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-3, "offline")))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))


def upload_model(at, path: Path):
    at.file_uploader[0].set_value((path.name, path.read_bytes(), "application/octet-stream")).run()
    assert not at.exception, [e.stack_trace for e in at.exception]


@pytest.mark.real_assets
def test_a_model_file_after_vgg16_gets_its_own_input_size(dog_model, monkeypatch, tmp_path):
    offline(monkeypatch, tmp_path)
    at = app("pages/image/model.py")
    at.selectbox[0].set_value("VGG16").run()
    assert at.session_state["model_config"].image_size == 224
    at.selectbox[0].set_value(OWN_FILE).run()
    upload_model(at, dog_model)
    # The 160 px file replaces VGG16's 224 px: no error, the layer table and totals show.
    assert not at.error, [plain(e.value) for e in at.error]
    assert at.session_state["model_config"].image_size is None
    size = next(s for s in at.selectbox if s.label == "Input size (pixels)")
    assert size.options == ["the model's own (160 px)"]
    assert [m.label for m in at.metric] == ["Trainable parameters", "Frozen parameters", "Total"]


@pytest.mark.real_assets
def test_a_stale_input_size_for_a_model_file_is_shown_where_the_error_points(dog_model, tmp_path):
    at = app("pages/image/model.py")
    at.selectbox[0].set_value(OWN_FILE).run()
    upload_model(at, dog_model)
    at.session_state["model_config"].image_size = 224  # e.g. a setup saved before the file was chosen
    at.run()
    message = plain(at.error[0].value)
    assert "Input size" in message
    size = next(s for s in at.selectbox if s.label == "Input size (pixels)")  # the control the error names
    assert size.value == 224
    size.select_index(0).run()  # "the model's own"
    assert not at.error, [plain(e.value) for e in at.error]
    assert at.metric


def test_uploading_the_same_model_file_again_does_not_rewrite_it(tmp_path):
    from tlcore.model.backbones import build_small_cnn

    path = tmp_path / "my_net.keras"
    build_small_cnn(input_shape=(32, 32, 3)).save(path)
    at = app("pages/image/model.py")
    at.selectbox[0].set_value(OWN_FILE).run()
    upload_model(at, path)
    saved = Path(at.session_state["model_config"].backbone)
    first = saved.stat().st_mtime_ns
    next(b for b in at.button if b.label == "Unfreeze all").click().run()  # reruns the page
    at.run()
    assert at.session_state["model_config"].backbone == str(saved) and saved.stat().st_mtime_ns == first


def test_two_tabs_of_one_browser_share_changes_and_jobs(browser, colour_dataset):
    secret = sessions.new_secret()
    browser(secret)
    first, second = session("pages/image/train.py"), session("pages/image/train.py")

    def number(at, label):
        return next(n for n in at.number_input if n.label == label)

    number(second, "Epochs").set_value(7).run()
    first.run()  # any click in the first tab picks up what the second saved
    assert number(first, "Epochs").value == 7
    number(first, "Fine-tune epochs (0 = skip)").set_value(3).run()
    second.run()
    assert number(second, "Fine-tune epochs (0 = skip)").value == 3 and number(second, "Epochs").value == 7
    refreshed = session("pages/image/train.py")  # neither tab wrote its stale value over the other's
    assert (number(refreshed, "Epochs").value, number(refreshed, "Fine-tune epochs (0 = skip)").value) == (7, 3)

    colour_setup(first, colour_dataset, epochs=1)
    first.run()
    button(first, "Start training").click().run()
    wait_for(first, lambda at: at.success)  # the first tab's own job, finished
    second.run()
    colour_setup(second, colour_dataset, epochs=300, patience=0)  # runs until stopped
    second.run()
    button(second, "Start training").click().run()
    first.run()  # the job started in the second tab is this browser's latest job in the first tab too
    assert first.session_state["job_id"] == second.session_state["job_id"]
    assert "none yet" not in sidebar_lines(first)[2]
    button(first, "Stop").click().run()
    wait_for(second, lambda at: not at.session_state["job_id"] or "Stop" not in [b.label for b in at.button])


def test_the_runs_page_shows_each_export_checked_with_its_zip_and_the_model_card(trained_run):
    import os

    from tlcore.runs.exports import export_formats
    from tlcore.runs.store import read_run

    copy = Path(os.environ["TLCORE_RUNS_DIR"]) / trained_run.run_id
    shutil.copytree(trained_run.path, copy, ignore=shutil.ignore_patterns("exports"))
    export_formats(read_run(copy), ["keras", "onnx"])
    at = app("pages/image/runs.py")
    assert not at.exception, [e.stack_trace for e in at.exception]
    profile = next(frame.value for frame in at.dataframe if "top1_agreement" in frame.value.columns)
    assert profile["format"].tolist() == ["Keras", "ONNX"] and profile["top1_agreement"].tolist() == [1.0, 1.0]
    downloads = {element.proto.label for element in at.get("download_button")}
    assert {"Keras (.zip)", "ONNX (.zip)"} <= downloads and "OpenVINO (.zip)" not in downloads
    assert any(m.value.startswith(f"# Model card: {trained_run.run_id}") for m in at.markdown)


def test_evaluate_says_which_validation_images_are_copies_once_the_leakage_check_found_them(trained_run):
    """The walk: "never trained on" stayed after the check found validation images that are training photos."""
    import os

    copy = Path(os.environ["TLCORE_RUNS_DIR"]) / trained_run.run_id
    shutil.copytree(trained_run.path, copy, ignore=shutil.ignore_patterns("exports"))
    at = app("pages/image/evaluate.py")
    assert not at.exception, [e.stack_trace for e in at.exception]
    assert "never trained on" not in texts(at) and "kept out of training" in texts(at)  # not checked yet
    paths = trained_run.val_probabilities()[0]
    at.session_state["run_leaks"] = {trained_run.run_id: [paths[0]]}  # what the leakage check below records
    at.run()
    assert f"1 of {len(paths)} validation images are copies of training photos: " in texts(at)
    assert "never trained on" not in texts(at)
