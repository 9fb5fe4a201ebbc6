import keras
import pytest

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.errors import StudioError
from tlcore.insight.depth_compare import (
    HEAD_ONLY,
    DepthComparison,
    DepthResult,
    apply_depth,
    compare_depths,
    depth_choices,
)
from tlcore.jobs import ProgressLog


def _config(data_dir, backbone="SmallCNN") -> RunConfig:
    return RunConfig(
        DataConfig(str(data_dir), val_split=0.3),
        ModelConfig(backbone, weights="none", image_size=32),
        TrainConfig(epochs=4, fine_tune_epochs=2, early_stopping_patience=0, seed=5),
    )


def _head_histories(log: ProgressLog) -> list[list[float]]:
    """The head phase's validation losses of each run, in the order the runs trained."""
    runs, current = [], None
    for record in log.records():
        if record["kind"] == "step":
            current = [] if record["steps"] != record["step"] else None
            if current is not None:
                runs.append(current)
        elif record["kind"] == "epoch" and record["phase"] == "head" and current is not None:
            current.append(round(record["val_loss"], 6))
    return runs


def test_each_depth_fine_tunes_from_the_same_trained_head_on_the_same_split(colour_dataset):
    log = ProgressLog()
    comparison = compare_depths(_config(colour_dataset), blocks=2, log=log)
    assert [depth.depth for depth in comparison.depths] == [HEAD_ONLY, "block4", "block3"]
    heads = _head_histories(log)
    assert len(heads) == 3 and len(heads[0]) == 4 and heads[0] == heads[1] == heads[2]
    table = comparison.table()
    assert list(table["depth"]) == [HEAD_ONLY, "block4", "block3"] and (table["seconds"] > 0).all()
    assert comparison.num_val > 0 and comparison.best in table["depth"].tolist()
    output = comparison.to_dict()
    assert output["best"] == comparison.best and output["verdict"] == comparison.verdict()


def _depth(name, accuracies):
    return DepthResult(name, list(accuracies), [0.5] * len(accuracies), [1.0] * len(accuracies))


def test_the_verdict_says_within_noise_when_the_spread_across_repeats_covers_the_difference():
    close = DepthComparison([_depth(HEAD_ONLY, [0.90, 0.80]), _depth("block_16", [0.92, 0.84])], 100, 3, 1.0)
    assert "within noise" in close.verdict() and "spread across repeats" in close.verdict()
    clear = DepthComparison([_depth(HEAD_ONLY, [0.70, 0.71]), _depth("block_16", [0.90, 0.91])], 100, 3, 1.0)
    assert clear.verdict().startswith("Fine-tuning from block_16 is best")
    assert clear.best == "block_16"


def test_with_one_repeat_the_noise_is_the_sampling_error_of_the_validation_set():
    # 0.93 vs 0.90 on 150 images: the standard error is about 2.1 points, so 3 points is beyond it ...
    few = DepthComparison([_depth(HEAD_ONLY, [0.90]), _depth("block_16", [0.93])], 150, 3, 1.0)
    assert "beyond the sampling error of 150 validation images" in few.verdict()
    # ... but on 20 images (about 5.7 points) it is not
    tiny = DepthComparison([_depth(HEAD_ONLY, [0.90]), _depth("block_16", [0.93])], 20, 3, 1.0)
    assert "within noise" in tiny.verdict()


def test_use_this_depth_sets_phase_two():
    comparison = DepthComparison([_depth(HEAD_ONLY, [0.9]), _depth("block_15", [0.95])], 50, 4, 1.0)
    train = TrainConfig()
    apply_depth(train, comparison, "block_15")
    assert (train.unfreeze_from, train.fine_tune_epochs) == ("block_15", 4)
    apply_depth(train, comparison, HEAD_ONLY)
    assert train.fine_tune_epochs == 0


def test_a_backbone_without_known_blocks_is_explained(colour_dataset, tmp_path):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(4, 3, name="plain")(keras.layers.Conv2D(4, 3, name="first")(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "plain.keras")
    config = _config(colour_dataset, str(tmp_path / "plain.keras"))
    config.model.image_size = None
    with pytest.raises(StudioError, match="no known blocks"):
        depth_choices(config, 2)
    with pytest.raises(ValueError, match="blocks between"):
        depth_choices(_config(colour_dataset), 0)
