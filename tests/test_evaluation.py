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
