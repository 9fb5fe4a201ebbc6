"""Loss and accuracy, confusion matrix, per-class metrics and the misclassified list, from predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """``val_loss`` (mean cross-entropy) and ``val_accuracy`` of class probabilities.

    Probabilities are clipped at 1e-7 as Keras clips them, so one confident mistake
    costs about 16, not infinity, and the number matches Keras' own ``val_loss``.
    """
    clipped = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "val_loss": float(-np.mean(np.log(clipped))),
        "val_accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
    }


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Counts; rows are the true class, columns the predicted class."""
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return pd.DataFrame(
        matrix,
        index=pd.Index(classes, name="true"),
        columns=pd.Index(classes, name="predicted"),
    )


def per_class_metrics(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Precision, recall (= per-class accuracy), F1 and support for each class.

    A class that is never predicted has precision 0 (not undefined), so the table is
    never silently flattering.
    """
    matrix = confusion_matrix(labels, predictions, classes).to_numpy()
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return pd.DataFrame(
        {"class": classes, "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    )


def misclassified(paths: list[str], labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Every wrong prediction: image, true label, predicted label and its confidence.

    Sorted by confidence, most confidently wrong first (the ones worth looking at).
    """
    predictions = np.argmax(probabilities, axis=1)
    wrong = np.flatnonzero(predictions != np.asarray(labels))
    frame = pd.DataFrame(
        {
            "path": [paths[i] for i in wrong],
            "true": [classes[labels[i]] for i in wrong],
            "predicted": [classes[predictions[i]] for i in wrong],
            "confidence": probabilities[wrong, predictions[wrong]].astype(float),
            "true_class_probability": probabilities[wrong, np.asarray(labels)[wrong]].astype(float),
        }
    )
    return frame.sort_values("confidence", ascending=False, ignore_index=True)


def predicted_labels(paths: list[str], probabilities: np.ndarray, classes: list[str]) -> dict[str, str]:
    """``{image path: predicted class name}``: the most probable class of each image."""
    return {path: classes[index] for path, index in zip(paths, np.argmax(probabilities, axis=1))}


def run_predictions(run) -> dict[str, str]:
    """:func:`predicted_labels` of a finished run's saved validation predictions (``run.val_probabilities()``)."""
    paths, _, probabilities = run.val_probabilities()
    return predicted_labels(paths, probabilities, run.labels)


def summary(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, and top-2 accuracy when there are more than two classes."""
    labels = np.asarray(labels)
    ranked = np.argsort(-probabilities, axis=1)
    result = {"accuracy": float(np.mean(ranked[:, 0] == labels)), "count": int(len(labels))}
    if probabilities.shape[1] > 2:
        result["top2_accuracy"] = float(np.mean((ranked[:, :2] == labels[:, None]).any(axis=1)))
    return result


@dataclass
class Evaluation:
    """What the Evaluate page shows of one set of predictions.

    Attributes:
        summary: accuracy, image count and, past two classes, top-2 accuracy (see :func:`summary`).
        val_loss: the validation loss of these predictions.
        confusion: counts, true class by predicted class.
        per_class: precision, recall, F1 and support per class.
        mistakes: every wrong prediction, most confidently wrong first.
    """

    summary: dict
    val_loss: float
    confusion: pd.DataFrame
    per_class: pd.DataFrame
    mistakes: pd.DataFrame


def evaluate_predictions(
    paths: list[str], labels: np.ndarray, probabilities: np.ndarray, classes: list[str], val_loss: float | None = None
) -> Evaluation:
    """Every table of the Evaluate page from class probabilities; the predicted class is the most probable one.

    Args:
        paths: the images, in the order of ``labels`` and ``probabilities``.
        labels: the true class index of each image.
        probabilities: one row of class probabilities per image.
        classes: the class names, by index.
        val_loss: the loss Keras measured for these very predictions (a run's saved ones);
            ``None`` computes it from ``probabilities`` (new predictions, e.g. with test-time
            augmentation).
    """
    predicted = np.argmax(probabilities, axis=1)
    return Evaluation(
        summary=summary(labels, probabilities),
        val_loss=evaluate_probabilities(probabilities, labels)["val_loss"] if val_loss is None else float(val_loss),
        confusion=confusion_matrix(labels, predicted, classes),
        per_class=per_class_metrics(labels, predicted, classes),
        mistakes=misclassified(paths, labels, probabilities, classes),
    )
