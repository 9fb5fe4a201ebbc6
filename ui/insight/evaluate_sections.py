"""Evaluate-page sections: calibration (temperature scaling), the feature map, leaks into validation.

Every section takes ``(run)``, the finished run the page evaluates: adding an analysis is
one module in ``tlcore/insight`` and one ``..._section(run)`` here, called by pages/image/evaluate.py.
"""

from __future__ import annotations

import streamlit as st

from tlcore.errors import StudioError
from tlcore.insight import figures as charts
from tlcore.metrics import run_predictions
from ui import messages
from ui.insight import common

MAX_SELECTED = 12


def calibration_section(run) -> None:
    """Reliability diagram, expected calibration error, and temperature scaling for a run.

    The "after" numbers are cross-fitted (no image's temperature was fitted on it).
    "Apply" saves the temperature in the run folder (``calibration.json``), where a
    predictor can read it with ``tlcore.insight.calibration.load_temperature``.

    Args:
        run: a finished :class:`~tlcore.runs.store.Run` with saved validation predictions.
    """
    from tlcore.insight import calibration

    st.subheader("Calibration")
    paths, labels, probabilities = run.val_probabilities()
    try:
        report = calibration.calibration_report(probabilities, labels)
    except ValueError as error:
        messages.show_error(error)
        return
    for column, (label, value) in zip(st.columns(3), report.metrics().items()):
        column.metric(label, value)
    st.plotly_chart(charts.reliability_figure(report), width="stretch", key="reliability_chart")
    saved = calibration.load_temperature(run.path)
    if not report.helps:
        st.info(report.describe(), icon=":material/check:")
        removable = saved is not None and not run.read_only  # only the run's owner changes its calibration
        if removable and st.button(f"Remove the saved temperature (T = {saved:.2f})", key="calibrate_remove"):
            try:
                calibration.clear_temperature(run)
            except StudioError as error:
                messages.show_error(error)
            else:
                st.rerun()
        return
    st.success(report.describe())
    st.caption(report.temperature_note())
    if saved is not None:
        st.caption(f"Applied to this run's predictions: T = {saved:.2f}.")
    apply = st.checkbox(
        "Apply temperature scaling to this run's predictions",
        value=saved is not None,
        key=f"calibrate_{run.run_id}",  # per run: a tick on one run must not carry over to another
        disabled=run.read_only,
        help=calibration.READ_ONLY_HELP if run.read_only else None,
    )
    try:
        calibration.set_applied(run, report, apply)
    except StudioError as error:
        messages.show_error(error)


def embedding_section(run) -> None:
    """A 2-D map of the run's dataset features (t-SNE): colour by class, mistake or suspect label; select to see images.

    Plotly's hover shows text only, so the hover names the file, its class and the
    prediction; click or lasso points to see their thumbnails below the map.

    Args:
        run: a finished run: its config names the dataset and backbone to map, and its
            validation predictions decide "mistake" for those images (out-of-sample k-fold
            predictions are used for the rest).
    """
    from tlcore.insight.embedding import embedding_map

    config = run.config
    if config is None:  # an unreadable config.json: no dataset to map
        return
    st.subheader("Feature map")
    colour = st.radio(
        "Colour by", list(charts.COLOUR_BY), format_func=charts.COLOUR_BY.get, horizontal=True, key="map_colour"
    )
    frame = common.analysis(
        "embedding",
        config,
        "Draw the feature map",
        "Projecting the features (t-SNE)…",
        lambda found: embedding_map(found, predictions=run_predictions(run), seed=config.train.seed),
        key="embedding",
    )
    if frame is None:
        return
    event = st.plotly_chart(
        charts.embedding_figure(frame, colour),
        width="stretch",
        key="embedding_chart",
        on_select="rerun",
        selection_mode=("points", "lasso", "box"),
    )
    selected = charts.selected_paths(event.selection.points if event else [])
    if not selected:
        st.caption("Close points look alike to the backbone. Click or lasso points to see their images.")
        return
    rows = frame.set_index("path")
    _grid(selected, lambda path: f"{common.name(path)}  \n{rows.loc[path, 'label']} → {rows.loc[path, 'predicted']}")


def known_leaks(run) -> list[str] | None:
    """The run's validation images that this visitor's leakage check found in training (``None``: not checked)."""
    return st.session_state.get("run_leaks", {}).get(run.run_id)


def leakage_section(run) -> None:
    """The run's validation accuracy next to the same number without validation images that are training photos.

    Args:
        run: a finished run (its config names the dataset and backbone).
    """
    from tlcore.insight import duplicates

    if run.config is None or not st.button("Check validation images for copies in training", key="leak_check"):
        return
    found = common.features(run.config)
    if found is None:
        return
    with st.spinner("Comparing features, then pixels…"):
        leaked = duplicates.leaked_paths(duplicates.near_duplicates(found))
    st.session_state.setdefault("run_leaks", {})[run.run_id] = leaked
    if not leaked:
        st.success(duplicates.NO_LEAKS)
        return
    paths, labels, probabilities = run.val_probabilities()
    st.warning(duplicates.leak_warning(duplicates.accuracy_without(paths, labels, probabilities, leaked), len(leaked)))
    _grid(leaked, common.name)


def _grid(paths: list[str], caption) -> None:
    """The first :data:`MAX_SELECTED` images of ``paths``, six a row, each with ``caption(path)``."""
    grid = st.columns(6)
    for index, path in enumerate(paths[:MAX_SELECTED]):
        with grid[index % 6]:
            common.show_image(path, caption(path), 160)
