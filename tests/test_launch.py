"""Launching trainings as jobs: one run, and the A/B pair with both results and a verdict."""

import time

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.jobs import JobRegistry
from tlcore.runs.store import RunStore
from tlcore.training.launch import ab_verdict, start_ab


def test_ab_verdict_says_plainly_when_b_kept_the_heads_weights():
    a = {"val_accuracy": 0.928, "val_loss": 0.21}
    b = {"val_accuracy": 0.928, "val_loss": 0.21, "best_phase": "head"}
    verdict = ab_verdict(a, b)
    assert "never beat the head's best epoch" in verdict and "same model" in verdict


def test_ab_verdict_names_the_better_half_with_numbers():
    verdict = ab_verdict({"val_accuracy": 0.90, "val_loss": 0.30}, {"val_accuracy": 0.95, "val_loss": 0.15})
    assert verdict.startswith("B (fine-tuned) is better") and "5.0 points more" in verdict
    verdict = ab_verdict({"val_accuracy": 0.95, "val_loss": 0.15}, {"val_accuracy": 0.90, "val_loss": 0.30})
    assert verdict.startswith("A (fixed features) is better") and "less" in verdict


def test_an_ab_job_returns_both_runs_and_a_verdict(colour_dataset, tmp_path):
    config = RunConfig(
        DataConfig(str(colour_dataset), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(epochs=2, fine_tune_epochs=1, unfreeze_from="block4", batch_size=8, learning_rate=1e-2),
    )
    store = RunStore(tmp_path / "runs")
    registry = JobRegistry()
    job = start_ab(registry, "owner", config, store)
    deadline = time.time() + 300
    while job.active and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "done", job.error
    labels = [label for label, _, _ in job.result.runs]
    assert labels == ["A-fixed-features", "B-fine-tune"]
    for _, run_id, metrics in job.result.runs:
        assert store.get(run_id).status == "done" and "val_accuracy" in metrics
    assert job.result.verdict and job.result.metrics == job.result.runs[-1][2]
    a, b = (store.get(run_id).config for _, run_id, _ in job.result.runs)
    assert a.train.fine_tune_epochs == 0 and a.model.freeze.mode == "all"  # A: fixed features
    assert b.train.fine_tune_epochs == 1 and b.model.freeze.mode == "all"  # B: the same head, then fine-tuned
