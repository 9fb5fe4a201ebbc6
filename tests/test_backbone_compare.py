import json
import threading

import keras
import pytest

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.insight.backbone_compare import (
    CandidateResult,
    Leaderboard,
    candidate_choices,
    compare_backbones,
    ranking_verdict,
)
from tlcore.jobs import ProgressLog

JSON_KEYS = {
    "backbone",
    "accuracy_mean",
    "accuracy_sd",
    "images_per_second",
    "latency_ms",
    "params",
    "size_mb",
    "input_size",
    "error",
}


def _blind_model(path):
    """A model file whose features are all zero: it cannot tell any image from another."""
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(4, 3, kernel_initializer="zeros", name="blind")(inputs)
    keras.Model(inputs, outputs).save(path)
    return path


def _config(data_dir) -> RunConfig:
    return RunConfig(
        DataConfig(str(data_dir), val_split=0.3), train=TrainConfig(epochs=15, early_stopping_patience=0, seed=3)
    )


def test_leaderboard_ranks_the_backbone_that_sees_the_classes_first_and_lists_the_ones_that_fail(
    colour_dataset, tmp_path
):
    blind = _blind_model(tmp_path / "blind.keras")
    candidates = [str(blind), "SmallCNN:none", "NoSuchNet", str(tmp_path / "missing.h5")]
    board = compare_backbones(_config(colour_dataset), candidates, folds=3)

    names = [row.backbone for row in board.candidates]
    assert names[:2] == ["SmallCNN:none", str(blind)]
    assert board.best == "SmallCNN:none"
    small, blinded = board.candidates[:2]
    assert blinded.error is None, blinded.error
    assert small.accuracy_mean - blinded.accuracy_mean > max(small.accuracy_sd, blinded.accuracy_sd)
    assert "beyond noise" in board.verdict() and len(small.scores) == 3
    assert "blind.keras" in board.verdict() and str(tmp_path) not in board.verdict()  # the file's own name
    assert sum(small.val_sizes) == 36 and small.train_sizes == [36 - n for n in small.val_sizes]  # 3 folds of all
    failed = {row.backbone: row.error for row in board.candidates[2:]}
    assert "Expected one of" in failed["NoSuchNet"]
    assert "missing.h5" in failed[str(tmp_path / "missing.h5")]
    assert small.images_per_second > 0 and small.latency_ms > 0 and small.input_size == 64
    assert small.params > 1000 and small.size_mb == pytest.approx(small.params * 4 / 1e6)
    assert blinded.size_mb == pytest.approx(blind.stat().st_size / 1e6)
    output = json.loads(json.dumps(board.to_dict()))
    assert {"candidates", "best", "seconds"} <= set(output)
    assert all(JSON_KEYS <= set(row) for row in output["candidates"])
    assert small.settings["weights"] == "none" and small.settings["backbone"] == "SmallCNN"


def test_a_second_comparison_reads_the_features_training_cached(colour_dataset):
    config = _config(colour_dataset)
    first, second = ProgressLog(), ProgressLog()
    compare_backbones(config, ["SmallCNN:none"], folds=2, log=first)
    again = compare_backbones(config, ["SmallCNN:none"], folds=2, log=second)
    assert first.records(kind="extract"), "the first comparison extracts features"
    assert not second.records(kind="extract"), "the second reads them from the feature cache"
    assert again.candidates[0].error is None


def test_a_stopped_comparison_keeps_what_it_finished_and_gave_an_eta(colour_dataset):
    stop = threading.Event()

    class StopAtSecond(ProgressLog):
        def append(self, kind, **fields):
            super().append(kind, **fields)
            if kind == "step" and fields.get("step") == 1:
                stop.set()  # while the second candidate runs: it finishes, the third never starts

    log = StopAtSecond()
    candidates = ["SmallCNN:none", "SmallCNN:imagenet", "MobileNetV2:none"]
    board = compare_backbones(_config(colour_dataset), candidates, folds=2, log=log, stop=stop)
    assert board.stopped and [row.backbone for row in board.candidates] == candidates[:2]
    assert "no ImageNet weights" in board.candidates[1].error
    second = next(record for record in log.records(kind="step") if record["step"] == 1)
    assert second["eta_seconds"] > 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [(([], 5, 1), "at least one"), ((["SmallCNN", "SmallCNN"], 5, 1), "once"), ((["SmallCNN"], 0, 1), "folds")],
)
def test_bad_requests_are_refused_before_any_work(colour_dataset, request_, message):
    candidates, folds, seeds = request_
    with pytest.raises(ValueError, match=message):
        compare_backbones(_config(colour_dataset), candidates, folds=folds, seeds=seeds)


def _row(name, scores, latency=10.0, n_val=50):
    mean = sum(scores) / len(scores)
    row = CandidateResult(name, mean, 0.0, 0.5, 100.0, latency, 1, 1.0, 64, scores=list(scores))
    row.val_sizes, row.train_sizes = [n_val] * len(scores), [2 * n_val] * len(scores)
    return row


def test_the_pareto_front_keeps_only_backbones_nothing_beats_on_both_accuracy_and_speed():
    from tlcore.charts import leaderboard_figure
    from tlcore.insight.backbone_compare import _ranked

    rows = _ranked([_row("slow-worse", [0.8] * 3, 50), _row("fast", [0.85] * 3, 5), _row("best", [0.9] * 3, 30)])
    assert [(row.backbone, row.pareto) for row in rows] == [("best", True), ("fast", True), ("slow-worse", False)]
    figure = leaderboard_figure(Leaderboard(rows, 1.0, 3, 1).table())
    front = next(trace for trace in figure.data if trace.name == "Pareto front")
    assert list(front.x) == [5, 30]


def test_the_verdict_pairs_the_two_leaders_fold_by_fold():
    close = ranking_verdict([_row("A", [0.90, 0.86, 0.94]), _row("B", [0.88, 0.90, 0.86])])
    assert "within noise" in close and "A and B" in close
    clear = ranking_verdict([_row("A", [0.95, 0.96, 0.94]), _row("B", [0.70, 0.69, 0.71])])
    assert "A leads B by 25.0 accuracy points, beyond noise" in clear
    # the walk's case: identical scores on every fold (sd 0) and a lead of one validation image
    one_image = ranking_verdict([_row("A", [1.0] * 5, n_val=100), _row("B", [0.99] * 5, n_val=100)])
    assert "within noise" in one_image and "one validation image (1.0 points)" in one_image
    assert "Cannot tell" in ranking_verdict([_row("A", [0.9]), _row("B", [0.8])])
    assert "Cannot tell" in ranking_verdict([_row("A", [0.9, 0.95]), _row("B", [0.5, 0.55])])  # 2 folds


def test_with_seeds_a_fold_counts_once_and_one_split_pairs_the_seeds():
    # 3 folds x 2 seeds: the seeds of a fold are averaged, so the units are the 3 folds
    board = Leaderboard([_row("A", [0.9, 0.92, 0.95, 0.93, 0.91, 0.9]), _row("B", [0.7] * 6)], 1.0, 3, 2)
    assert "over the same 3 folds" in board.verdict()
    one_split = Leaderboard([_row("A", [0.9, 0.92, 0.95]), _row("B", [0.7] * 3)], 1.0, 1, 3)
    assert "over the same 3 seeds" in one_split.verdict()


def _colour_model(path):
    """A model file whose features see colour (a fixed random convolution)."""
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(8, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=1))(inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(path)
    return path


def test_two_copies_of_one_backbone_are_within_noise_and_named_apart(colour_dataset, tmp_path):
    first = _colour_model(tmp_path / "first" / "colours.keras")
    second = tmp_path / "second" / "colours.keras"
    second.parent.mkdir()
    second.write_bytes(first.read_bytes())
    from tlcore.jobs import ProgressLog

    log = ProgressLog()
    board = compare_backbones(_config(colour_dataset), [str(first), str(second)], folds=3, log=log)
    assert [row.error for row in board.candidates] == [None, None]
    doing = [record.get("doing") for record in log.records(kind="step")]
    assert doing == ["colours.keras (first)", "colours.keras (second)", None]  # the progress line's names
    assert board.candidates[0].scores == board.candidates[1].scores  # same features, same folds, same seeds
    assert "are within noise: 0.0 points apart" in board.verdict()
    assert sorted(board.table()["backbone"]) == ["colours.keras (first)", "colours.keras (second)"]


UPLOAD = "/srv/workspace/sessions/owner-5f3a9c/models/272e38e5be1439aa/dog_breed_mobilenetv2_160.h5"


def test_an_uploaded_file_is_named_by_its_own_name_not_its_upload_folder():
    from tlcore.charts import leaderboard_figure
    from tlcore.insight.candidates import candidate_label

    broken = "/srv/workspace/sessions/owner-5f3a9c/models/0011223344556677/broken.keras"
    failed = CandidateResult(broken, error=f"Cannot read {broken}: not a zip archive.")
    board = Leaderboard([_row(UPLOAD, [0.95, 0.96, 0.94]), _row("SmallCNN:none", [0.6] * 3), failed], 1.0, 3, 1)
    table = board.table()
    assert table["backbone"].tolist() == ["dog_breed_mobilenetv2_160.h5", "SmallCNN:none", "broken.keras"]
    assert table["error"].iloc[2] == "Cannot read broken.keras: not a zip archive."
    assert "dog_breed_mobilenetv2_160.h5 leads SmallCNN:none" in board.verdict()
    assert "owner-5f3a9c" not in table.to_csv() + board.verdict()
    points = next(trace for trace in leaderboard_figure(table).data if trace.name == "backbones")
    assert list(points.text) == ["dog_breed_mobilenetv2_160.h5", "SmallCNN:none"]
    assert board.to_dict()["candidates"][0]["backbone"] == UPLOAD  # the CLI's JSON keeps the path given
    weights = "/srv/workspace/sessions/owner-5f3a9c/weights/ab/mobilenet_v2_notop.h5"
    assert candidate_label(f"MobileNetV2:{weights}") == "MobileNetV2:mobilenet_v2_notop.h5"
    assert candidate_label("hub:/srv/presets/tiny-vit") == "hub:tiny-vit"
    assert candidate_label("hub:dinov2_small") == "hub:dinov2_small"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (ModelConfig(UPLOAD, weights="none"), UPLOAD),
        (ModelConfig("MobileNetV2", weights="none"), "MobileNetV2:none"),
        (ModelConfig("MobileNetV2", weights="imagenet"), "MobileNetV2"),
        (ModelConfig("MobileNetV2", weights="/w/notop.h5"), "MobileNetV2:/w/notop.h5"),
    ],
)
def test_the_current_setup_is_the_first_candidate_whatever_it_is(model, expected):
    choices = candidate_choices(model)
    assert choices[0] == expected and choices.count(expected) == 1


def test_the_current_setup_is_measured_with_its_own_input_size(colour_dataset):
    current = ModelConfig("SmallCNN", weights="none", image_size=32)  # the name alone means 64 px
    board = compare_backbones(_config(colour_dataset), ["SmallCNN:none"], folds=2, current=current)
    assert board.candidates[0].input_size == 32 and board.candidates[0].settings["image_size"] == 32
    alone = compare_backbones(_config(colour_dataset), ["SmallCNN:none"], folds=2)
    assert alone.candidates[0].input_size == 64


def leaderboard_with_an_uploaded_file(path):
    import streamlit as st

    from tlcore.insight.backbone_compare import CandidateResult, Leaderboard
    from ui import shared
    from ui.compare_sections import leaderboard_section

    model = shared.config("model")
    model.backbone, model.weights, model.image_size = path, "none", None
    if "leaderboard" not in st.session_state:
        sizes = {"val_sizes": [40] * 3, "train_sizes": [80] * 3}
        rows = [
            CandidateResult(
                path, 0.95, 0.01, 0.2, 50.0, 40.0, 2_257_984, 21.9, 160, scores=[0.95, 0.94, 0.96], **sizes
            ),
            CandidateResult("SmallCNN:none", 0.6, 0.0, 0.7, 900.0, 1.0, 98_160, 0.4, 64, scores=[0.6] * 3, **sizes),
        ]
        st.session_state.leaderboard = Leaderboard(rows, 30.0, 3, 1)
    leaderboard_section(shared.config("data"), model, shared.config("train"))


def test_the_leaderboard_ticks_the_uploaded_model_file_and_shows_only_its_name(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))

    app = AppTest.from_function(leaderboard_with_an_uploaded_file, args=(UPLOAD,), default_timeout=120).run()
    assert not app.exception
    candidates = next(box for box in app.multiselect if box.label == "Candidates")
    assert candidates.value == [UPLOAD, "SmallCNN:none"]  # the current setup is ticked
    assert candidates.options[0] == "dog_breed_mobilenetv2_160.h5"
    shown = [*candidates.options, *app.dataframe[0].value["backbone"], *(caption.value for caption in app.caption)]
    shown += next(box for box in app.selectbox if box.label == "Use this backbone").options
    assert not [text for text in shown if "owner-5f3a9c" in text or "/" in text], shown
    assert "dog_breed_mobilenetv2_160.h5" in app.dataframe[0].value["backbone"].tolist()


def test_the_progress_line_names_the_candidate_being_measured_by_its_own_name():
    from tlcore.jobs import Job
    from tlcore.progress import task_progress

    job = Job("j", "owner", "compare", "Comparing 2 backbones")
    path = "/srv/workspace/sessions/0123abcd/models/dog_breed.h5"
    job.log.append("step", step=0, steps=2, candidate=path, doing="dog_breed.h5", eta_seconds=30.0)
    text = task_progress(job)["text"]
    assert text.startswith("Comparing 2 backbones: 0/2 (dog_breed.h5) · ") and "sessions" not in text
    job.log.append("step", step=2, steps=2, eta_seconds=0.0)
    assert "(" not in task_progress(job)["text"]  # done: nothing is being measured
