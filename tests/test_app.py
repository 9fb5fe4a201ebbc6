"""Every dashboard page through the real router (app.py), with streamlit.testing's AppTest."""

import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers import colour_image
from tlcore.config import FreezePlan, ModelConfig, TrainConfig
from tlcore.runs.formats import FORMATS

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 180  # the first page that imports TensorFlow takes a while


@pytest.fixture(autouse=True)
def studio_env(tmp_path, tmp_path_factory, monkeypatch):
    # The dashboard reads only inside TLCORE_DATA_ROOTS: here, the test's temporary folders.
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def app(page: str | None = None, job: str | None = None) -> AppTest:
    """A new session through the router, optionally opening a page and a ``?job=`` link."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if job:
        at.query_params["job"] = job
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    return at


def texts(at) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader")
        for e in getattr(at, kind)
    ]
    return plain("\n".join(str(p) for p in parts))


def plain(markdown: str) -> str:
    """Text as a reader sees it: the page escapes Markdown characters in messages (``\\*`` shows ``*``)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def small_cnn(at):
    at.session_state["model_config"] = ModelConfig("SmallCNN", weights="none", image_size=32, freeze=FreezePlan("none"))
    at.session_state["train_config"] = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3)


def train_to_completion(at, limit=240):
    at.switch_page("pages/image/train.py")
    at.run()
    small_cnn(at)
    at.run()
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    deadline = time.time() + limit
    while time.time() < deadline:
        time.sleep(1)
        at.run()  # AppTest has no browser timer: each run advances the run_every fragment
        assert not at.exception, [e.value for e in at.exception]
        if at.success and "validation accuracy" in at.success[0].value:
            return at
        assert not at.error, [e.value for e in at.error]
    raise AssertionError("training did not finish in time: " + texts(at))


def plotly_values(values) -> list:
    """Plotly JSON may carry numbers as typed arrays ({"dtype", "bdata"})."""
    if isinstance(values, dict) and "bdata" in values:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def chart_epochs(at) -> list:
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    traces = [t for figure in figures for t in figure["data"] if t.get("name") == "validation accuracy"]
    return plotly_values(traces[0]["x"]) if traces else []


def test_home_renders_before_tensorflow_loads():
    code = (
        "import sys; from streamlit.testing.v1 import AppTest;"
        f"at = AppTest.from_file({APP!r}, default_timeout=60); at.run();"
        "assert not at.exception, at.exception;"
        "print(at.title[0].value, '|', 'tensorflow' in sys.modules)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    title, loaded = completed.stdout.strip().splitlines()[-1].split(" | ")
    assert title == "Transfer-learning studio" and loaded == "False"


HEADINGS = {
    "pages/studio/home.py": "Transfer-learning studio",
    "pages/image/data.py": "Data",
    "pages/image/model.py": "Model",
    "pages/image/train.py": "Train",
    "pages/image/evaluate.py": "Evaluate",
    "pages/image/predict.py": "Predict",
    "pages/image/runs.py": "Runs",
    "pages/text/generate.py": "Text (GPT-2)",
}


@pytest.mark.parametrize(
    "page",
    [
        "pages/studio/home.py",
        "pages/image/data.py",
        "pages/image/model.py",
        "pages/image/train.py",
        "pages/image/evaluate.py",
        "pages/image/predict.py",
        "pages/image/runs.py",
        "pages/text/generate.py",
    ],
)
def test_every_page_renders_with_a_sidebar_and_no_traceback(page):
    at = app(page)
    assert [t.value for t in at.title] == [HEADINGS[page]]
    lines = sidebar_lines(at)
    assert [line.split(" · ")[0] for line in lines] == ["**Dataset**", "**Model**", "**Job**"], lines
    assert "demo: shapes" in lines[0] and "MobileNetV2" in lines[1]
    unexpected = [e.value for e in at.error if "ImageNet weights" not in e.value]  # offline machines: expected
    assert not unexpected


def test_page_reruns_leave_running_trainings_keras_state_alone(monkeypatch):
    """Streamlit clears Keras' session after every script run unless the studio stops it.

    That clean-up empties TensorFlow's process-wide kernel cache under running trainings;
    with the live chart rerunning every second it made two concurrent trainings ~10x slower
    each (bench/concurrent_training.py measures the effect).
    """
    import keras

    calls = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    at = app("pages/image/train.py")
    at.run()
    assert not at.exception
    assert calls == []


def test_a_bad_job_cap_setting_is_explained(monkeypatch):
    monkeypatch.setenv("TLCORE_MAX_JOBS", "lots")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert "TLCORE_MAX_JOBS should be a whole number" in plain(at.error[0].value)


def sidebar_lines(at) -> list[str]:
    return [plain(m.value) for m in at.sidebar.get("markdown")]


def test_sidebar_shows_dataset_model_and_job():
    at = app()
    assert sidebar_lines(at) == [
        "**Dataset** · demo: shapes (generated offline)",
        "**Model** · MobileNetV2, ImageNet weights",
        "**Job** · none yet",
    ]


def test_empty_pages_say_what_to_do_first():
    at = app("pages/image/evaluate.py")
    assert "No finished run yet" in texts(at)
    at.switch_page("pages/image/runs.py")
    at.run()
    assert "No runs yet" in texts(at)


def test_data_page_shows_the_demo_health_report():
    at = app("pages/image/data.py")
    assert "Current dataset: 600 images · 3 classes" in at.success[0].value
    assert [m.value for m in at.metric][:3] == ["600", "3", "0"]
    assert at.get("plotly_chart"), "images per class chart"


def test_a_bad_folder_is_explained_and_keeps_the_current_dataset(tmp_path):
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(tmp_path / "no" / "such" / "folder")).run()
    assert "Dataset folder not found" in plain(at.error[0].value) or "Dataset not found" in plain(at.error[0].value)
    assert "still the one in the sidebar" in plain(at.error[0].value)
    assert at.session_state["data_config"].data_dir == "demo:shapes"


def _zip_of(classes, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, colour in classes.items():
            for index in range(6):
                image = io.BytesIO()
                colour_image(colour, 40, __import__("random").Random(index)).save(image, "PNG")
                archive.writestr(f"set/{label}/{index}.png", image.getvalue())
    return buffer.getvalue()


def test_uploading_a_zip_makes_it_the_current_dataset(tmp_path):
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Upload a .zip").run()
    at.file_uploader[0].set_value(
        ("photos.zip", _zip_of({"red": (220, 30, 30), "blue": (30, 30, 220)}, tmp_path), "application/zip")
    ).run()
    assert not at.exception
    assert "Current dataset: 12 images · 2 classes" in at.success[0].value


def test_a_hostile_zip_is_refused_with_a_message(tmp_path, isolated_caches):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../escape.png", b"x")  # would land two folders above the extraction folder
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Upload a .zip").run()
    at.file_uploader[0].set_value(("evil.zip", buffer.getvalue(), "application/zip")).run()
    assert "outside the extraction folder" in plain(at.error[0].value)
    # The upload is saved under the workspace (tmp_path) and extracted under the cache:
    # nothing named escape.png may appear anywhere in either.
    assert not list(isolated_caches.parent.rglob("escape.png")) and not list(tmp_path.rglob("escape.png"))


def test_model_page_quick_actions_change_the_parameter_totals():
    at = app("pages/image/model.py")
    at.selectbox[0].set_value("SmallCNN").run()
    assert not at.exception and not at.error

    def trainable():
        return int(at.metric[0].value.replace(",", ""))

    everything = trainable()
    next(b for b in at.button if b.label == "Freeze all").click().run()
    head_only = trainable()
    assert head_only == 128 * 3 + 3  # 128 features x 3 demo classes + biases
    next(b for b in at.button if b.label.startswith("Unfreeze from")).click().run()
    last_block = trainable()
    assert head_only < last_block < everything
    assert at.session_state["model_config"].freeze.mode == "from"


def test_choosing_kerashub_loads_nothing_until_a_source_is_named():
    at = app("pages/image/model.py")
    at.selectbox[0].set_value("SmallCNN").run()
    at.selectbox[0].set_value(next(o for o in at.selectbox[0].options if o.startswith("KerasHub"))).run()
    assert not at.exception and not at.error
    assert at.session_state["model_config"].backbone == "SmallCNN"  # no 330 MB preset on a click
    assert "Until then your model stays SmallCNN" in texts(at)


def test_the_layer_table_of_a_backbone_with_few_layers_shows_without_an_error(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Conv2D(4, 3, name="only_conv")(inputs)
    path = tmp_path / "three_layers.keras"
    keras.Model(inputs, keras.layers.Conv2D(8, 3, name="last_conv")(hidden)).save(path)
    at = app()
    at.session_state["model_config"] = ModelConfig(str(path), weights="none", image_size=32)
    at.switch_page("pages/image/model.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    top = next(n for n in at.number_input if n.label == "Top N layers with weights")
    assert top.value == top.max < 10  # all of them, not the default 10 the input cannot hold


def test_model_page_offline_imagenet_offers_a_way_forward(monkeypatch, tmp_path):
    from tests.helpers import no_network

    calls = no_network(monkeypatch, tmp_path / "kh")
    at = app("pages/image/model.py")
    assert "No internet on the server: the ImageNet weights for MobileNetV2" in plain(at.error[0].value)
    tried = len(calls)
    at.run()  # the next visit: the failure is remembered, no second wait for the network
    assert len(calls) == tried and "No internet on the server" in plain(at.error[0].value)
    next(b for b in at.button if b.label == "Try the download again").click().run()  # the visitor asks
    assert len(calls) > tried and "No internet on the server" in plain(at.error[0].value)
    # The weights' address is a working link, shown as written: no Markdown escapes inside it.
    links = re.findall(r"<(https?://[^>]*)>", at.error[0].value)
    assert links and links[0].endswith("_no_top.h5") and "\\" not in links[0], at.error[0].value
    next(b for b in at.button if "random weights" in b.label).click().run()
    assert at.session_state["model_config"].weights == "none"
    assert not at.error


def test_train_page_trains_the_demo_and_leaves_a_chart_then_evaluate_predict_and_runs_use_it():
    at = app()
    at = train_to_completion(at)
    assert chart_epochs(at) == [1, 2]
    run_id = at.session_state["run_id"]
    assert (Path(os.environ["TLCORE_RUNS_DIR"]) / run_id / "model.keras").is_file()

    at.switch_page("pages/image/evaluate.py")
    at.run()
    assert not at.exception
    assert "Validation accuracy" in [m.label for m in at.metric]
    assert any(json.loads(c.proto.spec)["data"][0]["type"] == "heatmap" for c in at.get("plotly_chart"))
    saved_loss = next(m.value for m in at.metric if m.label == "Validation loss")
    at.toggle(key="evaluate_tta").set_value(True).run()  # predicted again with mirror images: a new loss
    assert not at.exception and not at.error
    assert next(m.value for m in at.metric if m.label == "Validation loss") != saved_loss

    at.switch_page("pages/image/predict.py")
    at.run()
    image = io.BytesIO()
    Image.open(next(Path(os.environ["TLCORE_CACHE_DIR"]).rglob("circle_000.png"))).save(image, "PNG")
    at.file_uploader[0].set_value(("circle.png", image.getvalue(), "image/png")).run()
    assert not at.exception and not at.error
    bars = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert bars and set(plotly_values(bars[0]["data"][0]["y"])) <= {"circle", "square", "triangle"}
    at.toggle[0].set_value(True).run()
    assert not at.exception and any("Grad-CAM" in caption for image in at.image for caption in image.captions)

    at.switch_page("pages/image/runs.py")
    at.run()
    assert not at.exception
    assert run_id in at.dataframe[0].value["run_id"].tolist()


def test_predict_page_explains_an_unreadable_upload():
    at = app()
    train_to_completion(at)
    at.switch_page("pages/image/predict.py")
    at.run()
    at.file_uploader[0].set_value(("notes.png", b"these are not pixels", "image/png")).run()
    assert not at.exception
    message = plain(at.error[0].value)
    assert "notes.png: not a readable image: its contents are not JPEG, PNG, WebP, BMP, GIF or TIFF" in message
    assert "save it as JPEG or PNG and add that file instead" in message and "Pillow" not in message
    assert "BytesIO" not in message and "object at 0x" not in message  # no Python object in a user's message


def test_a_second_job_in_the_same_session_is_refused_while_one_runs():
    from tlcore.training.launch import start_training

    at = app("pages/image/train.py")
    small_cnn(at)
    at.session_state["train_config"] = TrainConfig(epochs=300, batch_size=4)
    at.run()
    next(b for b in at.button if b.label == "Start training").click().run()
    job = at.session_state["job_id"]
    registry = __import__("ui.shared", fromlist=["registry"]).registry()
    with pytest.raises(Exception, match="already have a job running"):
        start_training(
            registry,
            at.session_state["session_id"],
            registry.get(job).result or __import__("tlcore.config", fromlist=["RunConfig"]).RunConfig(),
            None,
        )
    next(b for b in at.button if b.label == "Stop").click().run()
    deadline = time.time() + 240  # Stop acts after the current batch: the first one compiles (slow on a busy machine)
    while registry.get(job).active and time.time() < deadline:
        time.sleep(0.5)
    assert registry.get(job).status == "stopped"


@pytest.mark.real_assets
def test_text_page_generates_and_explains_bad_prompts(tiny_gpt2_preset):
    at = app("pages/text/generate.py")
    at.radio[0].set_value("Local preset folder").run()
    at.text_input[0].set_value(str(tiny_gpt2_preset)).run()
    at.text_area[0].set_value("The quick brown").run()
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    outputs = [m.value for m in at.markdown if m.value.startswith("> ")]
    assert len(outputs) == 2 and all(o.startswith("> The quick brown") for o in outputs)
    assert "tokens/s" in " ".join(c.value for c in at.caption)

    at.text_area[0].set_value("   ").run()
    next(b for b in at.button if b.label == "Generate").click().run()
    assert "prompt is empty" in plain(at.error[0].value)


def test_text_page_offline_preset_says_what_to_do(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-3, "offline")))
    at = app("pages/text/generate.py")
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception
    assert "Could not download 'gpt2_base_en'" in plain(at.error[0].value)


@pytest.mark.real_assets
def test_text_page_fine_tunes_with_a_live_chart(tiny_gpt2_preset):
    at = app("pages/text/generate.py")
    at.radio[0].set_value("Local preset folder").run()
    at.text_input[0].set_value(str(tiny_gpt2_preset)).run()
    at.text_area[1].set_value("The cat sat on the mat. " * 20).run()
    next(n for n in at.number_input if n.label == "Epochs").set_value(2).run()
    next(s for s in at.select_slider if s.label == "Sequence length").set_value(32).run()
    next(b for b in at.button if b.label == "Start fine-tuning").click().run()
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(1)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if at.success:
            break
        assert not at.error, [e.value for e in at.error]
    assert "Done: loss" in at.success[0].value
    figure = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert plotly_values(figure["data"][0]["x"]) == [1, 2]


def _stopped_while_queued():
    from types import SimpleNamespace

    from ui.train_result import show_run

    show_run(SimpleNamespace(status="stopped", kind="train", result=None, run_dir=None), "Stopped")


def test_a_job_stopped_before_it_trained_says_no_run_was_saved():
    """A Ray job stopped while queued has no run folder: no "Saved as run None"."""
    at = AppTest.from_function(_stopped_while_queued, default_timeout=60).run()
    assert not at.exception and not at.success
    assert "no run was saved" in at.warning[0].value


def test_an_unexpected_error_on_a_page_is_a_message_not_a_traceback(monkeypatch):
    from tlcore.runs.store import RunStore

    def broken(self):
        raise RuntimeError("bad symbol table node signature")

    monkeypatch.setattr(RunStore, "table", broken)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/image/runs.py")
    at.run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    assert "Unexpected RuntimeError: bad symbol table node signature" in plain(at.error[0].value)
    assert "Your settings are kept" in at.error[0].value
    assert sidebar_lines(at)[1].startswith("**Model** · ")  # the rest of the app still renders


@pytest.fixture
def arrow_fallbacks(monkeypatch):
    """Tables Streamlit could not send as they were (a mixed-type column: a traceback in the server log)."""
    from streamlit import dataframe_util

    seen = []
    monkeypatch.setattr(dataframe_util._LOGGER, "info", lambda message, *a, exc_info=None, **k: seen.append(exc_info))
    return seen


def test_every_image_page_after_a_run_sends_its_tables_as_they_are(arrow_fallbacks):
    at = train_to_completion(app())
    for page in ("data", "model", "train", "evaluate", "predict", "runs"):
        at.switch_page(f"pages/image/{page}.py")
        at.run()
        assert not at.exception, [e.stack_trace for e in at.exception]
        assert not arrow_fallbacks, (page, [str(error) for error in arrow_fallbacks])
    # The Runs page (last): legends name the run in a few words; each snippet download is named after its format.
    run_id = at.session_state["run_id"]
    legends = {trace.get("name") for c in at.get("plotly_chart") for trace in json.loads(c.proto.spec)["data"]}
    assert legends and not any(run_id in str(name) for name in legends), legends
    assert any(str(name).startswith("SmallCNN ") for name in legends), legends
    downloads = [element.proto.label for element in at.get("download_button")]
    assert {f"predict_{name}.py" for name in FORMATS} <= set(downloads), downloads
    codes = [element.value for element in at.code]
    assert "ai_edge_litert" in codes[-1] and "onnxruntime" in codes[2] and "Interpreter" not in codes[0]


def test_a_failed_text_job_stays_on_the_text_page(tmp_path):
    at = train_to_completion(app())
    image_job = at.session_state["job_id"]
    at.switch_page("pages/text/generate.py")
    at.run()
    at.radio[0].set_value("Local preset folder").run()
    (tmp_path / "not-a-preset").mkdir()
    at.text_input[0].set_value(str(tmp_path / "not-a-preset")).run()
    at.text_area[1].set_value("The cat sat on the mat. " * 20).run()
    next(b for b in at.button if b.label == "Start fine-tuning").click().run()
    deadline = time.time() + 120
    while not at.error and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    assert at.error and not at.exception  # the text job failed, on the Text page
    assert "GPT-2" in sidebar_lines(at)[2]

    at.switch_page("pages/image/train.py")  # the image pages still show the last image run
    at.run()
    assert not at.error, [plain(e.value) for e in at.error]
    assert at.success and "validation accuracy" in at.success[0].value
    assert at.session_state["job_id"] == image_job and "GPT-2" not in sidebar_lines(at)[2]

    at.switch_page("pages/image/runs.py")
    at.run()
    runs, text_runs = at.dataframe[0].value, at.dataframe[-1].value
    # the text run is not an image run
    assert runs["backbone"].tolist() == ["SmallCNN, random weights (trains from scratch)"]
    assert text_runs["status"].tolist() == ["failed"] and text_runs["backbone"].str.endswith("(text)").all()
    assert at.multiselect[0].value == runs["run_id"].tolist()
