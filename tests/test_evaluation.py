import numpy as np
import pytest

from tlcore import metrics as evaluation

CLASSES = ["cat", "dog", "fox"]
LABELS = np.array([0, 0, 0, 1, 1, 2])
PROBABILITIES = np.array(
    [
        [0.9, 0.05, 0.05],  # cat ok
        [0.2, 0.7, 0.1],  # cat -> dog (0.7)
        [0.6, 0.3, 0.1],  # cat ok
        [0.1, 0.8, 0.1],  # dog ok
        [0.02, 0.08, 0.9],  # dog -> fox (0.9), dog second
        [0.2, 0.2, 0.6],  # fox ok
    ]
)


def test_confusion_matrix_rows_are_true_columns_predicted():
    matrix = evaluation.confusion_matrix(LABELS, PROBABILITIES.argmax(1), CLASSES)
    assert matrix.loc["cat"].tolist() == [2, 1, 0]
    assert matrix.loc["dog"].tolist() == [0, 1, 1]
    assert matrix.loc["fox"].tolist() == [0, 0, 1]
    assert matrix.to_numpy().sum() == len(LABELS)


def test_per_class_metrics():
    table = evaluation.per_class_metrics(LABELS, PROBABILITIES.argmax(1), CLASSES).set_index("class")
    assert table.loc["cat", "precision"] == pytest.approx(1.0)
    assert table.loc["cat", "recall"] == pytest.approx(2 / 3)
    assert table.loc["dog", "precision"] == pytest.approx(0.5)
    assert table.loc["fox", "f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert table["support"].tolist() == [3, 2, 1]


def test_never_predicted_class_has_zero_precision_not_nan():
    table = evaluation.per_class_metrics(np.array([0, 1]), np.array([0, 0]), ["a", "b"])
    assert table["precision"].tolist() == [0.5, 0.0]
    assert not table.isna().any().any()


def test_misclassified_lists_the_most_confident_mistakes_first():
    paths = [f"img{i}.jpg" for i in range(6)]
    wrong = evaluation.misclassified(paths, LABELS, PROBABILITIES, CLASSES)
    assert wrong["path"].tolist() == ["img4.jpg", "img1.jpg"]
    assert wrong.iloc[0][["true", "predicted"]].tolist() == ["dog", "fox"]
    assert wrong["confidence"].tolist() == pytest.approx([0.9, 0.7])


def test_summary_reports_top2_for_more_than_two_classes():
    summary = evaluation.summary(LABELS, PROBABILITIES)
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["top2_accuracy"] == pytest.approx(1.0)


def test_evaluate_probabilities_is_keras_cross_entropy_and_accuracy():
    result = evaluation.evaluate_probabilities(PROBABILITIES, LABELS)
    expected = -np.mean(np.log(PROBABILITIES[np.arange(6), LABELS]))
    assert result == {"val_loss": pytest.approx(expected), "val_accuracy": pytest.approx(4 / 6)}
    # A zero probability for the true class costs -log(1e-7), not infinity.
    assert evaluation.evaluate_probabilities(np.array([[1.0, 0.0]]), np.array([1]))["val_loss"] == pytest.approx(
        -np.log(1e-7)
    )


def kept(epoch, phase, val_loss):
    return evaluation.KeptWeights(val_loss=val_loss, epoch=epoch, phase=phase)


def test_kept_reason_names_the_head_epoch_and_the_dropped_fine_tuning():
    phases = [evaluation.PhaseOutcome("head", 10, 0.213, 8), evaluation.PhaseOutcome("fine-tune", 13, 0.240, 12)]
    assert evaluation.kept_reason(kept(8, "head", 0.213), phases, stopped=False) == (
        "Kept head epoch 8 (lowest validation loss 0.213); fine-tuning never beat it (best 0.240), "
        "so its weights were dropped."
    )


def test_kept_reason_for_a_kept_fine_tuning_an_early_stop_and_a_stop_request():
    phases = [
        evaluation.PhaseOutcome("head", 6, 0.30, 3, early_stopped=True),
        evaluation.PhaseOutcome("fine-tune", 8, 0.25, 7),
    ]
    assert evaluation.kept_reason(kept(7, "fine-tune", 0.25), phases, stopped=True) == (
        "Stopped by request in epoch 8. Kept fine-tune epoch 1 (epoch 7 of the run; lowest validation loss 0.250), "
        "better than the "
        "head's best (0.300 at epoch 3). Early stopping ended the head phase after epoch 6: no lower validation "
        "loss for 3 epochs."
    )


def test_kept_reason_when_no_epoch_reached_validation():
    reason = evaluation.kept_reason(evaluation.KeptWeights(), [], stopped=False)
    assert reason == "No epoch reached a validation loss, so the model keeps the weights it ended with."


def test_evaluate_predictions_predicts_the_most_probable_class_and_keeps_the_measured_loss():
    paths = [f"img{i}.jpg" for i in range(6)]
    report = evaluation.evaluate_predictions(paths, LABELS, PROBABILITIES, CLASSES)
    # The diagonal is what argmax got right: 2 cats, 1 dog, 1 fox; the mistakes table agrees.
    assert np.diag(report.confusion.to_numpy()).tolist() == [2, 1, 1]
    assert report.per_class.set_index("class").loc["dog", "recall"] == pytest.approx(0.5)
    assert report.mistakes["path"].tolist() == ["img4.jpg", "img1.jpg"]
    computed = evaluation.evaluate_probabilities(PROBABILITIES, LABELS)["val_loss"]
    assert report.val_loss == pytest.approx(computed)  # new predictions (test-time augmentation): their own loss
    # A run's saved predictions show the loss Keras measured for them, not a recomputation.
    assert evaluation.evaluate_predictions(paths, LABELS, PROBABILITIES, CLASSES, val_loss=0.25).val_loss == 0.25


def test_predicted_labels_name_the_most_probable_class_of_each_image():
    # What the feature map colours as a run's prediction for its validation images.
    paths = [f"img{i}.jpg" for i in range(6)]
    predicted = evaluation.predicted_labels(paths, PROBABILITIES, CLASSES)
    assert predicted == dict(zip(paths, ["cat", "dog", "cat", "dog", "fox", "fox"]))
