"""Fine-tuning: phase 2 on cached activations below the cut, discriminative rates, schedules."""

import numpy as np

from tlcore import model as model_lib
from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.jobs import ProgressLog
from tlcore.training import Trainer


def fine_tune_config(dataset, **train_options):
    """SmallCNN (random weights), the head for 2 epochs, then block3 on for 2 epochs."""
    train = {
        "epochs": 2,
        "fine_tune_epochs": 2,
        "unfreeze_from": "block3",
        "batch_size": 8,
        "learning_rate": 1e-1,
        "fine_tune_learning_rate": 1e-2,
        "early_stopping_patience": 0,
        "seed": 3,
        **train_options,
    }
    return RunConfig(
        DataConfig(str(dataset), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(**train),
    )


def train(config, full_path: bool = False):
    """A run step by step; ``full_path`` makes phase 2 push images through the whole backbone."""
    trainer = Trainer(config, log=ProgressLog())
    trainer.prepare()
    if full_path:
        trainer.cut = model_lib.ActivationCut(reason="the test asks for the full path")
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
