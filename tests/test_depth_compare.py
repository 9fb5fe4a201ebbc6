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


def test_the_verdict_pairs_the_two_best_depths_repeat_by_repeat():
    close = DepthComparison([_depth(HEAD_ONLY, [0.90, 0.80, 0.85]), _depth("block_16", [0.92, 0.84, 0.83])], 100, 3, 1)
    assert "within noise" in close.verdict() and "over the same 3 repeats" in close.verdict()
    clear = DepthComparison([_depth(HEAD_ONLY, [0.70, 0.71, 0.72]), _depth("block_16", [0.90, 0.91, 0.90])], 100, 3, 1)
    assert clear.verdict().startswith("Fine-tuning from block_16 is best: 19.3 accuracy points ahead of head only")
    assert "beyond noise" in clear.verdict() and clear.best == "block_16"
    head = DepthComparison([_depth(HEAD_ONLY, [0.90, 0.91, 0.90]), _depth("block_16", [0.70, 0.71, 0.72])], 100, 3, 1)
    assert head.verdict().startswith("The head alone (no fine-tuning) is best")


def test_use_this_depth_preselects_what_the_verdict_recommends():
    # block_15 is best by a hair: within noise of the head, so the cheaper head is the advice and the choice
    close = DepthComparison(
        [
            _depth(HEAD_ONLY, [0.90, 0.80, 0.85]),
            _depth("block_16", [0.60, 0.61, 0.60]),
            _depth("block_15", [0.92, 0.84, 0.83]),
        ],
        100,
        3,
        1,
    )
    assert close.best == "block_15" and close.recommended == HEAD_ONLY
    assert close.verdict().endswith("Prefer the cheapest of them: head only.")
    # a depth the best one beats beyond noise is never the advice, however cheap
    beaten = DepthComparison(
        [
            _depth(HEAD_ONLY, [0.60, 0.61, 0.60]),
            _depth("block_16", [0.90, 0.80, 0.85]),
            _depth("block_15", [0.92, 0.84, 0.83]),
        ],
        100,
        3,
        1,
    )
    assert beaten.recommended == "block_16"
    clear = DepthComparison([_depth(HEAD_ONLY, [0.70, 0.71, 0.72]), _depth("block_16", [0.90, 0.91, 0.90])], 100, 3, 1)
    assert clear.recommended == clear.best == "block_16"


def test_a_depth_that_changed_nothing_is_within_noise_of_the_head():
    # fine-tuning never beat the head's epoch, so the head's weights were kept: the same accuracy every repeat
    same = DepthComparison([_depth(HEAD_ONLY, [0.95, 0.93, 0.94]), _depth("block_16", [0.95, 0.93, 0.94])], 150, 3, 1)
    assert "The depths are within noise" in same.verdict() and "differ by 0.0 accuracy points" in same.verdict()
    once = DepthComparison([_depth(HEAD_ONLY, [0.954]), _depth("block_16", [0.954])], 153, 3, 1)  # one repeat
    assert once.verdict().startswith("The depths are within noise: the best two (head only, block_16) differ by 0.0")


def test_one_repeat_cannot_tell_noise_from_a_lead_and_says_what_to_do():
    # one seed per depth: whatever the validation set, the spread across seeds is unmeasured
    for num_val in (20, 1000):
        few = DepthComparison([_depth(HEAD_ONLY, [0.80]), _depth("block_16", [0.93])], num_val, 3, 1.0)
        assert few.verdict().startswith("Cannot tell whether block_16 is better than head only (13.0 accuracy points")
        assert "Use 3 or more repeats" in few.verdict()


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
    with pytest.raises(StudioError, match="^plain.keras has no known blocks"):  # the file's own name
        depth_choices(config, 2)
    with pytest.raises(ValueError, match="blocks between"):
        depth_choices(_config(colour_dataset), 0)
