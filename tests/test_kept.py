"""The kept-weights report (tlcore.training.kept): which epoch a job kept, and why."""

from tlcore.training.kept import KeptWeights, PhaseOutcome, kept_reason


def kept(epoch, phase, val_loss):
    return KeptWeights(val_loss=val_loss, epoch=epoch, phase=phase)


def test_kept_reason_names_the_head_epoch_and_the_dropped_fine_tuning():
    phases = [PhaseOutcome("head", 10, 0.213, 8), PhaseOutcome("fine-tune", 13, 0.240, 12)]
    assert kept_reason(kept(8, "head", 0.213), phases, stopped=False) == (
        "Kept head epoch 8 (lowest validation loss 0.213); fine-tuning never beat it (best 0.240), "
        "so its weights were dropped."
    )


def test_kept_reason_for_a_kept_fine_tuning_an_early_stop_and_a_stop_request():
    phases = [
        PhaseOutcome("head", 6, 0.30, 3, early_stopped=True),
        PhaseOutcome("fine-tune", 8, 0.25, 7),
    ]
    assert kept_reason(kept(7, "fine-tune", 0.25), phases, stopped=True) == (
        "Stopped by request in epoch 8. Kept fine-tune epoch 1 (epoch 7 of the run; lowest validation loss 0.250), "
        "better than the "
        "head's best (0.300 at epoch 3). Early stopping ended the head phase after epoch 6: no lower validation "
        "loss for 3 epochs."
    )


def test_kept_reason_when_no_epoch_reached_validation():
    reason = kept_reason(KeptWeights(), [], stopped=False)
    assert reason == "No epoch reached a validation loss, so the model keeps the weights it ended with."
