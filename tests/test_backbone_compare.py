import json
import threading

import keras
import pytest

from tlcore.config import DataConfig, RunConfig, TrainConfig
from tlcore.insight.backbone_compare import (
    CandidateResult,
    Leaderboard,
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
    assert "leads" in board.verdict() and len(small.scores) == 3
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


def _row(name, accuracy, sd, latency, scores=3):
    return CandidateResult(name, accuracy, sd, 0.5, 100.0, latency, 1, 1.0, 64, scores=[accuracy] * scores)


def test_the_pareto_front_keeps_only_backbones_nothing_beats_on_both_accuracy_and_speed():
    from tlcore.charts import leaderboard_figure
    from tlcore.insight.backbone_compare import _ranked

    rows = _ranked([_row("slow-worse", 0.8, 0.01, 50), _row("fast", 0.85, 0.01, 5), _row("best", 0.9, 0.01, 30)])
    assert [(row.backbone, row.pareto) for row in rows] == [("best", True), ("fast", True), ("slow-worse", False)]
    figure = leaderboard_figure(Leaderboard(rows, 1.0, 3, 1).table())
    front = next(trace for trace in figure.data if trace.name == "Pareto front")
    assert list(front.x) == [5, 30]


def test_the_verdict_says_when_the_lead_is_within_noise():
    close = ranking_verdict([_row("A", 0.90, 0.04, 10), _row("B", 0.88, 0.03, 5)])
    assert "within noise" in close and "A and B" in close
    clear = ranking_verdict([_row("A", 0.95, 0.01, 10), _row("B", 0.70, 0.02, 5)])
    assert "leads B by 25.0" in clear
    assert "one score" in ranking_verdict([_row("A", 0.9, 0.0, 1, scores=1), _row("B", 0.8, 0.0, 1, scores=1)])
