"""Plotly figures from tlcore data. Pure functions: data in, figure out."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def history_figure(
    history: pd.DataFrame,
    title: str = "Training progress",
    group: str | None = None,
    kept_epochs: dict | None = None,
) -> go.Figure:
    """Loss and accuracy per epoch, train (solid) and validation (dotted), across phases.

    A vertical marker shows where fine-tuning starts. With ``group`` (e.g. ``"run_id"``)
    one line set is drawn per group, to overlay several runs.

    Args:
        history: one row per epoch (``epoch``, ``loss``, ``val_loss``, ...).
        title: the figure title.
        group: a column to draw one line set per value of.
        kept_epochs: the epoch whose weights the run kept, per group value (``None``
            as the key without ``group``); drawn as a star on the validation curves,
            so a user sees which epoch the final model is.
    """
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    if history is None or history.empty:
        figure.update_layout(title=title, annotations=[*figure.layout.annotations, _empty_note()])
        return figure
    groups = history.groupby(group, sort=False) if group else [(None, history)]
    for name, frame in groups:
        prefix = f"{name} " if name is not None else ""
        for column, col in (("loss", 1), ("accuracy", 2)):
            for split, dash in (("", "solid"), ("val_", "dot")):
                key = f"{split}{column}"
                if key not in frame or frame[key].isna().all():
                    continue
                figure.add_trace(
                    go.Scatter(
                        x=frame["epoch"],
                        y=frame[key],
                        mode="lines+markers",
                        line={"dash": dash},
                        name=f"{prefix}{'validation' if split else 'train'} {column}",
                        legendgroup=f"{prefix}{split}",
                    ),
                    row=1,
                    col=col,
                )
    _mark_kept_epochs(figure, history, group, kept_epochs or {})
    if group is None and "phase" in history and (history["phase"] == "fine-tune").any():
        start = history.loc[history["phase"] == "fine-tune", "epoch"].min() - 0.5
        for col in (1, 2):
            figure.add_vline(x=start, line_dash="dash", line_color="grey", row=1, col=col)
        figure.add_annotation(x=start, y=1.08, xref="x2", yref="paper", text="fine-tuning starts", showarrow=False)
    figure.update_xaxes(title_text="epoch", dtick=1 if history["epoch"].max() <= 20 else None)
    figure.update_yaxes(range=[0, 1.02], row=1, col=2)
    figure.update_layout(title=title, height=380, margin={"t": 60, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return figure


def _mark_kept_epochs(figure: go.Figure, history: pd.DataFrame, group: str | None, kept_epochs: dict) -> None:
    for name, epoch in kept_epochs.items():
        rows = history if group is None else history[history[group] == name]
        rows = rows[rows["epoch"] == epoch]
        if epoch is None or rows.empty:
            continue
        prefix = f"{name} " if name is not None else ""
        for column, col in (("val_loss", 1), ("val_accuracy", 2)):
            if column in rows and rows[column].notna().any():
                figure.add_trace(
                    go.Scatter(
                        x=[epoch],
                        y=[rows[column].iloc[0]],
                        mode="markers",
                        marker={"symbol": "star", "size": 16, "color": "gold", "line": {"width": 1, "color": "black"}},
                        name=f"{prefix}kept weights (epoch {epoch})",
                        legendgroup=f"{prefix}kept",
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )


def confusion_figure(matrix: pd.DataFrame) -> go.Figure:
    """Heatmap of a confusion matrix (rows true, columns predicted) with counts."""
    figure = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=list(matrix.columns),
            y=list(matrix.index),
            colorscale="Blues",
            text=matrix.to_numpy(),
            texttemplate="%{text}",
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Confusion matrix",
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis={"autorange": "reversed"},
        height=max(300, 60 * len(matrix) + 150),
    )
    return figure


def top_k_figure(predictions: list[dict], title: str = "") -> go.Figure:
    """Horizontal bars of one image's top-k probabilities, most likely on top."""
    labels = [p["label"] for p in predictions][::-1]
    values = [p["probability"] for p in predictions][::-1]
    figure = go.Figure(
        go.Bar(x=values, y=labels, orientation="h", text=[f"{v:.1%}" for v in values], textposition="auto")
    )
    figure.update_layout(
        title=title,
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        height=80 + 40 * len(labels),
        margin={"t": 40 if title else 10, "b": 20},
    )
    return figure


def counts_figure(counts: dict[str, int], title: str = "Images per class") -> go.Figure:
    """Bar chart of images per class."""
    figure = go.Figure(go.Bar(x=list(counts), y=list(counts.values()), text=list(counts.values()), textposition="auto"))
    figure.update_layout(title=title, xaxis_title="class", yaxis_title="images", height=340)
    return figure


def _empty_note() -> dict:
    return {"text": "No epochs yet", "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5, "showarrow": False}


def perplexity_figure(history: pd.DataFrame, title: str = "Fine-tuning") -> go.Figure:
    """Training loss and perplexity per epoch (text fine-tuning)."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Perplexity"))
    if history is None or history.empty:
        figure.update_layout(title=title, annotations=[*figure.layout.annotations, _empty_note()])
        return figure
    figure.add_trace(go.Scatter(x=history["epoch"], y=history["loss"], mode="lines+markers", name="loss"), row=1, col=1)
    figure.add_trace(
        go.Scatter(x=history["epoch"], y=history["perplexity"], mode="lines+markers", name="perplexity"), row=1, col=2
    )
    figure.update_yaxes(type="log", row=1, col=2)
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(title=title, height=340, showlegend=False)
    return figure


def text_finetune_figure(history: pd.DataFrame, title: str = "Fine-tuning") -> go.Figure:
    """Training loss and perplexity per epoch (text fine-tuning), the perplexity axis readable.

    Perplexity spans decades (50,000 for an untrained GPT-2, tens after fine-tuning), so
    its axis is logarithmic, with ticks only at 1, 2 and 5 times a power of ten, each
    written out in full ("2,000", not "2" between "10k" and "5").
    """
    figure = perplexity_figure(history, title)
    if history is None or history.empty:
        return figure
    values = [v for v in history["perplexity"].astype(float) if v > 0]
    ticks = _log_ticks(min(values), max(values)) if values else []
    figure.update_yaxes(
        tickvals=ticks, ticktext=[f"{tick:,.0f}" if tick >= 1 else f"{tick:g}" for tick in ticks], row=1, col=2
    )
    return figure


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks covering [low, high]; the two nearest ones when the range holds fewer than two."""
    import math

    candidates = [
        m * 10.0**e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 2) for m in (1, 2, 5)
    ]
    inside = [t for t in candidates if low <= t <= high]
    if len(inside) >= 2:
        return inside
    below = [t for t in candidates if t <= low][-1:]
    above = [t for t in candidates if t >= high][:1]
    return sorted(set(below + inside + above))


def short_run_names(run_ids: list[str]) -> dict[str, str]:
    """A short, distinct name per run id, for chart legends: ``"MobileNetV2 13:45:02"``.

    A run id is ``<date>-<time>-<name>-<random>`` (see :meth:`RunStore.create`): about 50
    characters that a legend would show in full. The short name keeps the name and the
    time; the random part is added only where two short names would be the same.
    """
    pattern = re.compile(r"\d{8}-(\d{2})(\d{2})(\d{2})-(.+)-([0-9a-f]{4})")

    def short(run_id: str, with_suffix: bool) -> str:
        match = pattern.fullmatch(run_id)
        if not match:
            return run_id
        hours, minutes, seconds, name, suffix = match.groups()
        return f"{name} {hours}:{minutes}:{seconds}" + (f" {suffix}" if with_suffix else "")

    names = {run_id: short(run_id, False) for run_id in run_ids}
    clashes = {name for name in names.values() if list(names.values()).count(name) > 1}
    return {run_id: short(run_id, True) if name in clashes else name for run_id, name in names.items()}


def leaderboard_figure(table: pd.DataFrame, title: str = "Accuracy against latency") -> go.Figure:
    """Each backbone's accuracy (± sd) against its single-image latency; the Pareto front joined.

    Args:
        table: the leaderboard (``backbone``, ``accuracy_mean``, ``accuracy_sd``,
            ``latency_ms``, ``pareto``); rows without an accuracy (failed) are left out.
        title: the figure title.
    """
    figure = go.Figure()
    measured = table.dropna(subset=["accuracy_mean", "latency_ms"]) if not table.empty else table
    if measured.empty:
        figure.update_layout(title=title, annotations=[_empty_note()])
        return figure
    front = measured[measured["pareto"].astype(bool)].sort_values("latency_ms")
    figure.add_trace(
        go.Scatter(
            x=front["latency_ms"], y=front["accuracy_mean"], mode="lines", name="Pareto front",
            line={"dash": "dash", "color": "grey"}, hoverinfo="skip",
        )
    )  # fmt: skip
    figure.add_trace(
        go.Scatter(
            x=measured["latency_ms"],
            y=measured["accuracy_mean"],
            error_y={"type": "data", "array": measured["accuracy_sd"].fillna(0)},
            mode="markers+text",
            text=measured["backbone"],  # the table's labels: a model file by its own name
            textposition="top center",
            marker={"size": 12, "symbol": ["star" if p else "circle" for p in measured["pareto"]]},
            name="backbones",
        )
    )
    figure.update_xaxes(title_text="latency per image (ms, this machine)", type="log")
    figure.update_yaxes(title_text="validation accuracy (mean ± sd)", range=[0, 1.05])
    figure.update_layout(title=title, height=420, margin={"t": 60, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return figure


def depth_figure(table: pd.DataFrame, title: str = "Accuracy by fine-tuning depth") -> go.Figure:
    """Validation accuracy (mean ± sd) per depth, each bar labelled with its training seconds.

    Args:
        table: the depth comparison (``depth``, ``accuracy_mean``, ``accuracy_sd``, ``seconds``),
            ``"head only"`` first, then from the last block down.
        title: the figure title.
    """
    figure = go.Figure()
    if table.empty:
        figure.update_layout(title=title, annotations=[_empty_note()])
        return figure
    figure.add_trace(
        go.Bar(
            x=table["depth"],
            y=table["accuracy_mean"],
            error_y={"type": "data", "array": table["accuracy_sd"].fillna(0)},
            text=[f"{seconds:.0f} s" for seconds in table["seconds"]],
            textposition="outside",
            name="validation accuracy",
        )
    )
    figure.update_xaxes(title_text="fine-tune from (unfrozen from this block on)")
    figure.update_yaxes(title_text="validation accuracy (mean ± sd)", range=[0, 1.1])
    figure.update_layout(title=title, height=380, margin={"t": 60, "b": 40})
    return figure
