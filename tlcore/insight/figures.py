"""Plotly figures of the insight analyses. Pure functions: data in, figure out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

COLOUR_BY = {"label": "class", "mistake": "mistake", "suspect": "suspect label", "split": "split"}


def lr_finder_figure(result) -> go.Figure:
    """Smoothed loss against learning rate (log scale), the suggestion marked.

    Args:
        result: an :class:`~tlcore.insight.lr_finder.LRFinderResult`.
    """
    lrs = [lr for lr, _ in result.points]
    losses = [loss for _, loss in result.points]
    figure = go.Figure(go.Scatter(x=lrs, y=losses, mode="lines", name="smoothed loss"))
    if lrs and result.suggested_lr is not None:
        at = int(np.argmin(np.abs(np.log(lrs) - np.log(result.suggested_lr))))
        figure.add_trace(
            go.Scatter(
                x=[result.suggested_lr],
                y=[losses[at]],
                mode="markers",
                marker={"size": 12, "color": "red"},
                name=f"{result.method}: {result.suggested_lr:.2g}",
            )
        )
    figure.update_xaxes(type="log", title_text="learning rate")
    figure.update_yaxes(title_text="loss (smoothed)")
    found = (
        "no suggestion" if result.suggested_lr is None else f"suggestion {result.suggested_lr:.2g} by {result.method}"
    )
    title = f"Learning-rate finder ({result.phase}) · {found}"
    figure.update_layout(title=title, height=360, margin={"t": 60, "b": 40})
    return figure


def learning_curve_figure(curve) -> go.Figure:
    """Measured accuracy (mean ± sd) against training images, the fitted curve and the projection.

    Args:
        curve: a :class:`~tlcore.insight.learning_curve.LearningCurve`.
    """
    points = curve.points
    figure = go.Figure(
        go.Scatter(
            x=points["train_images"],
            y=points["val_accuracy"],
            error_y={"type": "data", "array": points["sd"]},
            mode="markers",
            name="measured (mean ± sd)",
        )
    )
    if curve.parameters is not None and curve.reliable:  # no line where the projection is not reliable
        end = max(curve.projection["train_images"].max(), points["train_images"].max())
        sizes = np.linspace(points["train_images"].min(), end, 100)
        figure.add_trace(go.Scatter(x=sizes, y=curve.predict(sizes), mode="lines", line={"dash": "dot"}, name="fit"))
        figure.add_trace(
            go.Scatter(
                x=curve.projection["train_images"],
                y=curve.projection["val_accuracy"],
                mode="markers+text",
                marker={"symbol": "diamond", "size": 10},
                text=[f"{value:.1%}" for value in curve.projection["val_accuracy"]],
                textposition="top center",
                name="projection",
            )
        )
    figure.update_xaxes(title_text="training images")
    figure.update_yaxes(title_text="validation accuracy", tickformat=".0%")
    figure.update_layout(title="Accuracy against training-set size", height=380, margin={"t": 60, "b": 40})
    return figure


def embedding_figure(frame: pd.DataFrame, colour_by: str = "label") -> go.Figure:
    """The 2-D feature map, one trace per colour; hover shows the file, class and prediction.

    Each point carries its image path as ``customdata``, so a page can show the
    thumbnails of the points a user selects.

    Args:
        frame: from :func:`~tlcore.insight.embedding.embedding_map`.
        colour_by: ``"label"``, ``"mistake"``, ``"suspect"`` or ``"split"``.
    """
    if colour_by not in COLOUR_BY:
        raise ValueError(f"Expected colour_by in {list(COLOUR_BY)}. Received: colour_by={colour_by!r}.")
    figure = go.Figure()
    for value, group in frame.groupby(colour_by, sort=True):
        name = str(value) if colour_by in ("label", "split") else f"{COLOUR_BY[colour_by]}: {'yes' if value else 'no'}"
        figure.add_trace(
            go.Scattergl(
                x=group["x"],
                y=group["y"],
                mode="markers",
                marker={"size": 9 if value is True else 6, "opacity": 0.85},
                name=name,
                customdata=group[["path"]].to_numpy(),
                text=[
                    f"{path.rsplit('/', 1)[-1]}<br>{split}: {label} → {predicted}<br>label suspicion {score:.2f}"
                    for path, split, label, predicted, score in group[
                        ["path", "split", "label", "predicted", "score"]
                    ].itertuples(index=False)
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    title = f"Feature map (t-SNE), coloured by {COLOUR_BY[colour_by]}"
    figure.update_layout(title=title, height=520, margin={"t": 60, "b": 20}, dragmode="lasso")
    return figure


def selected_paths(points: list[dict]) -> list[str]:
    """The image paths of the points selected on :func:`embedding_figure` (clicked, lassoed or boxed)."""
    return [point["customdata"][0] for point in points if point.get("customdata")]


def reliability_figure(report) -> go.Figure:
    """Reliability diagram: accuracy per confidence bin, before and after temperature scaling.

    Args:
        report: a :class:`~tlcore.insight.calibration.CalibrationReport`.
    """
    figure = go.Figure(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"}, name="perfect")
    )
    for table, name in (
        (report.before, f"as trained (ECE {report.ece_before:.3f})"),
        (report.after, f"temperature {report.temperature:.2f} (ECE {report.ece_after:.3f}, cross-fitted)"),
    ):
        filled = table[table["count"] > 0]
        figure.add_trace(
            go.Scatter(
                x=filled["confidence"],
                y=filled["accuracy"],
                mode="lines+markers",
                marker={"size": 6 + 14 * np.sqrt(filled["count"] / max(report.count, 1))},
                text=[f"{count} images" for count in filled["count"]],
                hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{text}<extra></extra>",
                name=name,
            )
        )
    figure.update_xaxes(title_text="confidence", range=[0, 1.02])
    figure.update_yaxes(title_text="accuracy", range=[0, 1.02])
    figure.update_layout(title="Reliability (validation)", height=400, margin={"t": 60, "b": 40})
    return figure
