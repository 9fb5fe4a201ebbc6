"""Fine-tuning: phase 2 on cached activations below the cut, discriminative rates, schedules."""

import threading
from pathlib import Path

import numpy as np
import pytest

from tests.test_training import colour_config
from tlcore.config import FreezePlan, ModelConfig, RunConfig, TrainConfig
from tlcore.jobs import ProgressLog
from tlcore.model import classifier as model_lib
from tlcore.model import cut as cut_lib
from tlcore.model.backbones import load_backbone
from tlcore.progress import progress_summary
from tlcore.training.trainer import Trainer, run_training


def fine_tune_config(dataset, **train_options):
    """SmallCNN (random weights), the head for 2 epochs, then block3 on for 2 epochs."""
    fine_tune = {"epochs": 2, "fine_tune_epochs": 2, "unfreeze_from": "block3", "fine_tune_learning_rate": 1e-2}
    return colour_config(dataset, **{"seed": 3, **fine_tune, **train_options})


def train(config, full_path: bool = False):
    """A run step by step; ``full_path`` makes phase 2 push images through the whole backbone."""
    trainer = Trainer(config, log=ProgressLog())
    trainer.prepare()
    if full_path:
        trainer.cut = cut_lib.ActivationCut(reason="the test asks for the full path")
    trainer.train_head()
    trainer.fine_tune()
    return trainer, trainer.finish()


def test_phase_two_on_cached_activations_matches_the_full_path(colour_dataset):
    config = fine_tune_config(colour_dataset)
    cached_trainer, cached = train(config)
    full_trainer, full = train(config, full_path=True)
    assert cached_trainer.top is not None and full_trainer.top is None
    assert cached.metrics["activation_bytes_per_image"] > 0
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert list(cached.history["phase"]) == ["head", "head", "fine-tune", "fine-tune"]
    np.testing.assert_allclose(cached.history[columns].to_numpy(), full.history[columns].to_numpy(), rtol=2e-4)
    # The saved model is the whole classifier with the fine-tuned weights.
    for mine, theirs in zip(cached.model.get_weights(), full.model.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-5)
    assert cached.model.name == "classifier"
    np.testing.assert_allclose(cached.val_probabilities, full.val_probabilities, rtol=1e-3, atol=1e-5)


def trained_now(trainer) -> tuple[set[str], int]:
    """What the job trains at this moment: trainable backbone layers with weights, and the parameter count."""
    part = model_lib.backbone_part(trainer.classifier)
    names = {layer.name for layer in part.layers if layer.trainable and layer.trainable_weights}
    return names, model_lib.parameter_totals(trainer.classifier)["trainable"]


def planned(trainer, phase) -> tuple[set[str], int]:
    """What the Train page's phase table says that phase trains."""
    backbone = trainer.backbone
    names = model_lib.trainable_names(backbone.model, phase.freeze, backbone.block_pattern, backbone.pretrained)
    weighted = {layer.name for layer in backbone.model.layers if layer.trainable_weights or layer.non_trainable_weights}
    return names & weighted, phase.trainable_parameters


@pytest.mark.parametrize(
    ("head_freeze", "unfreeze_from"),
    [(FreezePlan("all"), "block3"), (FreezePlan("top", 1), None)],
    ids=["block3", "last-block"],
)
def test_the_phase_table_is_what_each_training_phase_trains(colour_dataset, head_freeze, unfreeze_from):
    config = fine_tune_config(colour_dataset, epochs=1, fine_tune_epochs=1, unfreeze_from=unfreeze_from)
    config.model.freeze = head_freeze
    trainer = Trainer(config, log=ProgressLog())
    trainer.prepare()
    table = model_lib.phase_plan(trainer.backbone, config.model, config.train, len(trainer.dataset.classes))
    assert trained_now(trainer) == planned(trainer, table[0])
    trainer.train_head()
    trainer.fine_tune()
    assert trained_now(trainer) == planned(trainer, table[1])
    assert planned(trainer, table[1])[0] > planned(trainer, table[0])[0]  # phase 2 trains more than the head phase


def synthetic_log(head_epochs=40, fine_tune_epochs=5, steps=8, fine_tune_batches=2, batch_seconds=1.0):
    """A run's log: the head on cached features (fast epochs), then fine-tuning at one batch a second."""
    log, now = ProgressLog(), 1000.0
    records = [("phase", {"phase": "extract"})]
    records += [("extract", {"step": step, "steps": 4}) for step in (1, 2, 3, 4)]
    records.append(("phase", {"phase": "head", "epochs": head_epochs}))
    for epoch in range(1, head_epochs + 1):
        records.append(("batch", {"phase": "head", "epoch": epoch, "step": steps, "steps": steps, "loss": 1.0}))
        records.append(("epoch", {"phase": "head", "epoch": epoch, "seconds": 0.005}))
    records.append(("phase", {"phase": "fine-tune", "epochs": fine_tune_epochs}))
    for step in range(1, fine_tune_batches + 1):
        epoch = head_epochs + 1
        records.append(("batch", {"phase": "fine-tune", "epoch": epoch, "step": step, "steps": steps, "loss": 1.0}))
    for kind, fields in records:
        now += batch_seconds if kind == "batch" and fields["phase"] == "fine-tune" else 0.005
        log.append(kind, **fields)
        log._records[-1]["time"] = now  # the test's clock
    return log


def test_fine_tune_eta_is_measured_on_fine_tune_batches():
    log = synthetic_log()
    progress = progress_summary(log, 45)
    # 6 batches left in this epoch and 4 more epochs of 8, at the measured 1 s a batch.
    assert progress["eta_seconds"] == pytest.approx(38, rel=0.05)
    assert progress["phase"] == "fine-tune"
    assert progress["fraction"] < 0.95  # most of the time is still ahead


def test_the_bar_moves_during_feature_extraction():
    log = ProgressLog()
    log.append("phase", phase="extract")
    log.append("extract", step=3, steps=6)
    progress = progress_summary(log, 10)
    assert progress["fraction"] == pytest.approx(0.5)
    assert "3/6" in progress["text"]


def test_phase_one_gives_no_eta_for_the_whole_job_while_fine_tuning_is_to_come():
    log = ProgressLog()
    log.append("phase", phase="head", epochs=5)
    for step in (1, 2, 3):
        log.append("batch", phase="head", epoch=1, step=step, steps=8, loss=1.0)
    progress = progress_summary(log, 10)
    assert progress["eta_seconds"] is None
    assert "this phase about" in progress["text"]


class StopAt(ProgressLog):
    """A log that asks the job to stop at a given fine-tune batch (as the Stop button does)."""

    def __init__(self, stop, epoch: int, step: int):
        super().__init__()
        self.stop, self.at = stop, (epoch, step)

    def append(self, kind, **fields):
        super().append(kind, **fields)
        if kind == "batch" and fields.get("phase") == "fine-tune" and (fields["epoch"], fields["step"]) == self.at:
            self.stop.set()


def test_stop_mid_epoch_does_not_plot_the_partial_epoch(colour_dataset):
    stop = threading.Event()
    log = StopAt(stop, epoch=4, step=2)  # fine-tune epoch 4 of 2 head + 3 fine-tune, batch 2 of 6
    config = fine_tune_config(colour_dataset, fine_tune_epochs=3)
    result = run_training(config, log=log, stop=stop)
    assert result.stopped
    partial = log.last("epoch")
    assert partial["epoch"] == 4 and partial["partial"]
    assert list(result.history["epoch"]) == [1, 2, 3]  # the stopped epoch is not plotted as a full one
    assert result.metrics["epochs_run"] == 3
    assert result.metrics["kept_reason"].startswith("Stopped by request in epoch 4.")


def train_page(**train_options):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/image/train.py")
    at.session_state["model_config"] = ModelConfig("SmallCNN", weights="none", image_size=32)
    at.session_state["train_config"] = TrainConfig(**train_options)
    at.run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    return at


def test_train_page_shows_the_measured_fine_tune_epoch_time_and_what_augmentation_costs():
    at = train_page(epochs=2, fine_tune_epochs=3, unfreeze_from="block3", fine_tune_rate_decay=0.5)
    table = at.table[0].value
    fine_tune = table.loc["2 · fine-tune"]
    assert "cached below block2_pool" in fine_tune["time per epoch"]
    assert "each lower block ×0.5" in fine_tune["learning rate"]
    at = train_page(epochs=2, fine_tune_epochs=3, unfreeze_from="block3", augment=True)
    assert "full path: augmentation" in at.table[0].value.loc["2 · fine-tune"]["time per epoch"]
    assert any("instead of" in caption.value for caption in at.caption)
    at = train_page(epochs=2, fine_tune_epochs=3, unfreeze_from="block3", augment="flip")
    assert "cached below block2_pool" in at.table[0].value.loc["2 · fine-tune"]["time per epoch"]
    assert not any("instead of" in caption.value for caption in at.caption)


def test_fine_tune_options_round_trip_and_bad_values_are_named(tmp_path):
    config = RunConfig(train=TrainConfig(fine_tune_epochs=3, fine_tune_schedule="cosine", fine_tune_rate_decay=0.5))
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config
    for field, value in (("fine_tune_schedule", "linear"), ("fine_tune_rate_decay", 2.0)):
        bad = RunConfig(train=TrainConfig(**{field: value}))
        with pytest.raises(ValueError, match=f"{field}.*Received"):
            bad.validate()


def test_cli_defaults_are_the_train_config_defaults():
    import argparse

    from tlcore.cli.common import add_run_flags, config_from_args

    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    config = config_from_args(parser.parse_args(["--data", "demo:shapes", "--backbone", "SmallCNN"]))
    assert config.train == TrainConfig()
    given = ["--fine-tune-schedule", "one-cycle", "--fine-tune-rate-decay", "0.7"]
    config = config_from_args(parser.parse_args(["--data", "d", "--backbone", "SmallCNN", *given]))
    assert (config.train.fine_tune_schedule, config.train.fine_tune_rate_decay) == ("one-cycle", 0.7)


def test_discriminative_rates_give_lower_blocks_smaller_steps():
    import keras

    backbone = load_backbone(ModelConfig("SmallCNN", weights="none", image_size=32))
    plan = FreezePlan("from", "block3")
    by_layer = cut_lib.block_rate_multipliers(backbone, plan, 0.5)
    assert (by_layer["block3_conv"], by_layer["block4_conv"]) == (0.5, 1.0)
    assert "block2_conv" not in by_layer  # frozen in phase 2
    assert cut_lib.block_rate_multipliers(backbone, plan, 1.0) == {}
    # Through the optimizer: Adam's first step is the rate itself, so it of a variable scales with its multiplier.
    slow, fast = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    optimizer = model_lib.make_optimizer("adam", 0.1, {id(slow): 0.25})
    optimizer.apply_gradients([(np.ones(3, "float32"), slow), (np.ones(3, "float32"), fast)])
    slow_step, fast_step = 1 - slow.numpy()[0], 1 - fast.numpy()[0]
    assert slow_step == pytest.approx(fast_step * 0.25, rel=1e-3)


@pytest.mark.real_assets
def test_the_cut_on_the_real_mobilenet_is_a_block_boundary(dog_model):
    model_config = ModelConfig(str(dog_model), cut_layer="mobilenetv2_1.00_160")
    backbone = load_backbone(model_config)

    def cut(start, **options):
        return cut_lib.activation_cut(
            backbone, model_config, TrainConfig(fine_tune_epochs=1, unfreeze_from=start, **options)
        )

    assert cut("block_15").name == "block_14_add" and tuple(cut("block_15").tensor.shape[1:]) == (5, 5, 160)
    assert cut("block_13").name == "block_12_add"
    # Inside a residual block the block's input still flows around the unfrozen layers.
    inside = cut("block_15_depthwise")
    assert not inside.cached and "2 tensors cross" in inside.reason
    assert "augmentation" in cut("block_15", augment=True).reason


def test_flip_only_caches_each_image_and_its_mirror_below_the_cut(colour_dataset):
    import keras

    from tlcore.data.pipeline import decode_all
    from tlcore.training.features import cut_activations, mirrored_activations

    trainer, result = train(fine_tune_config(colour_dataset, augment="flip"))
    assert trainer.top is not None, trainer.cut.reason  # flip only keeps phase 2 on cached activations
    items = trainer.dataset.train
    mirrored, hit = mirrored_activations(trainer.classifier, trainer.backbone, items, trainer.cut)
    assert hit  # computed once, by the run
    # The second entry of each image is what the frozen layers make of the image flipped left-right.
    images = decode_all([item.path for item in items], trainer.backbone.image_size)
    below = keras.Model(model_lib.backbone_part(trainer.classifier).inputs, trainer.cut.tensor)
    preprocess = model_lib.preprocess_part(trainer.classifier)
    expected = np.asarray(below(preprocess(images[:, :, ::-1].astype("float32")), training=False))
    np.testing.assert_allclose(mirrored, expected, rtol=1e-4, atol=1e-5)
    unflipped, _ = cut_activations(trainer.classifier, trainer.backbone, items, trainer.cut)
    assert not np.allclose(mirrored, unflipped, atol=1e-3)  # the images are not symmetric: a real second entry
    assert list(result.history["phase"]) == ["head", "head", "fine-tune", "fine-tune"]


def test_flip_only_draws_one_of_each_images_two_entries_every_epoch():
    from tlcore.data.pipeline import activation_dataset

    count = 64
    plain = np.arange(count, dtype="float32")[:, None]
    mirrored = -plain - 1  # image i's flipped entry is -(i + 1)
    labels = np.arange(count)

    def epochs(dataset, n=3):
        return [np.concatenate([x.numpy()[:, 0] for x, _ in dataset]) for _ in range(n)]

    seen = epochs(activation_dataset(plain, labels, 8, seed=5, mirrored=mirrored))
    for values in seen:
        images = np.where(values < 0, -values - 1, values)
        assert sorted(images) == list(range(count))  # every image once an epoch, in one of its two forms
        assert 0.25 < np.mean(values < 0) < 0.75  # about half of them flipped
    assert not np.array_equal(seen[0] < 0, seen[1] < 0)  # a new draw every epoch
    again = epochs(activation_dataset(plain, labels, 8, seed=5, mirrored=mirrored))
    np.testing.assert_array_equal(np.stack(seen), np.stack(again))  # the seed fixes the draws
    unflipped = epochs(activation_dataset(plain, labels, 8, seed=5), n=1)[0]
    assert (unflipped >= 0).all()


def test_full_augmentation_takes_the_full_path_and_old_configs_read_as_full():
    backbone = load_backbone(ModelConfig("SmallCNN", weights="none", image_size=32))
    model_config = ModelConfig("SmallCNN", weights="none", image_size=32)
    settings = {"epochs": 1, "fine_tune_epochs": 1, "unfreeze_from": "block3"}
    assert cut_lib.activation_cut(backbone, model_config, TrainConfig(**settings, augment="flip")).cached
    full = cut_lib.activation_cut(backbone, model_config, TrainConfig(**settings, augment="full"))
    assert not full.cached and "rotations" in full.reason
    assert RunConfig.from_dict({"train": {"augment": True}}).train.augment == "full"
    assert RunConfig.from_dict({"train": {"augment": False}}).train.augment == "off"
    with pytest.raises(ValueError, match="augment.*Received"):
        RunConfig(train=TrainConfig(augment="crop")).validate()


def test_cli_augment_flag_takes_the_choice_and_alone_means_full():
    import argparse

    from tlcore.cli.common import add_run_flags, config_from_args

    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    base = ["--data", "d", "--backbone", "SmallCNN"]
    assert config_from_args(parser.parse_args([*base, "--augment", "flip"])).train.augment == "flip"
    assert config_from_args(parser.parse_args([*base, "--augment"])).train.augment == "full"
    assert config_from_args(parser.parse_args(base)).train.augment == "off"
