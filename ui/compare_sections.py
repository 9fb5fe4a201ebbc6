"""Model and Train page sections: which backbone (a leaderboard), how deep to fine-tune.

Both run as a job of the studio's registry (its cap, one job at a time per visitor,
progress with an ETA, Stop); the logic is in tlcore.insight.backbone_compare / depth_compare.
"""

from __future__ import annotations

import streamlit as st

from tlcore.config import RunConfig
from tlcore.insight.paired_noise import MIN_UNITS
from ui import shared
from ui.job_panel import start_task, task_outcome, task_running


def _copy(data, model, train) -> RunConfig:
    return RunConfig.from_dict(RunConfig(data, model, train).to_dict())


def leaderboard_section(data, model, train) -> None:
    """Ticks candidates, ranks them on the user's data, and offers "use this backbone"."""
    from tlcore.insight.backbone_compare import candidate_choices, compare_backbones
    from tlcore.insight.candidates import candidate_labels

    with st.expander("Which backbone? Compare them on your data (leaderboard)"):
        options = candidate_choices(model)  # the current setup first, whatever it is
        labels = candidate_labels(options)  # a model file by its own name, not its upload folder
        default = list(dict.fromkeys([options[0], "SmallCNN:none"]))
        picked = st.multiselect("Candidates", options, default, format_func=labels.get)
        # Fewer folds than the verdict needs to measure a spread would always end in "cannot tell".
        folds = st.slider("Folds (accuracy ± sd across them)", MIN_UNITS, 10, 5)
        if st.button("Compare backbones", disabled=task_running("leaderboard") or not picked):
            config = _copy(data, model, train)

            def work(job):
                return compare_backbones(
                    config, list(picked), folds=folds, log=job.log, stop=job.stop, current=config.model
                )

            start_task("leaderboard", "compare", f"Comparing {len(picked)} backbones", work)
        finished = task_outcome("leaderboard")
        if finished is not None:
            st.session_state.leaderboard = finished
        board = st.session_state.get("leaderboard")
        if board is not None:
            _show_leaderboard(board)


_TABLE_FORMATS = {
    "accuracy_mean": st.column_config.NumberColumn("accuracy", format="%.3f"),
    "accuracy_sd": st.column_config.NumberColumn("± sd", format="%.3f"),
    "loss_mean": st.column_config.NumberColumn("loss", format="%.3f"),
    "images_per_second": st.column_config.NumberColumn("images/s", format="%.0f"),
    "latency_ms": st.column_config.NumberColumn("latency ms", format="%.1f"),
    "params": st.column_config.NumberColumn(format="localized"),
    "size_mb": st.column_config.NumberColumn("size MB", format="%.1f"),
    "input_size": st.column_config.NumberColumn("input px"),
    "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
    "fine_tune_kept": st.column_config.NumberColumn(
        "fine-tuned weights kept", help="repeats whose kept epoch was a fine-tune epoch"
    ),
}


def _show_leaderboard(board) -> None:
    from tlcore.charts import leaderboard_figure

    table = board.table()
    st.caption(f"{board.verdict()} ({board.seconds:.0f} s, {board.folds} folds × {board.seeds} seeds)")
    st.dataframe(table, hide_index=True, column_config=_TABLE_FORMATS)
    st.plotly_chart(leaderboard_figure(table), key="leaderboard_chart")
    ranked = board.ranked
    if not ranked:
        return
    names = [row.backbone for row in ranked]
    if not names:
        return
    chosen = st.selectbox("Use this backbone", names, format_func=board.labels().get)
    if st.button("Use this backbone", type="primary", key="leaderboard_use"):
        shared.update("model", **next(row.settings for row in ranked if row.backbone == chosen))


def depth_section(data, model, train) -> None:
    """Fine-tunes from each of the last N blocks, compares, and offers "use this depth" (phase 2)."""
    from tlcore.insight.depth_compare import compare_depths

    with st.container(border=True):
        st.markdown("**How deep to fine-tune?** Each of the last blocks, from the same head, on the same split")
        cols = st.columns(3)
        blocks = cols[0].number_input("Last blocks to try", 1, 8, 3)
        repeats = cols[1].number_input("Repeats (mean ± sd)", 1, 5, 1)
        if cols[2].button("Compare depths", disabled=task_running("depths")):
            config = _copy(data, model, train)

            def work(job):
                return compare_depths(config, int(blocks), int(repeats), log=job.log, stop=job.stop)

            start_task("depths", "compare", "Comparing fine-tuning depths", work)
        finished = task_outcome("depths")
        if finished is not None:
            st.session_state.depths = finished
        comparison = st.session_state.get("depths")
        if comparison is not None:
            _show_depths(comparison, train)


def _show_depths(comparison, train) -> None:
    from tlcore.charts import depth_figure
    from tlcore.insight.depth_compare import apply_depth

    table = comparison.table()
    st.caption(comparison.verdict())
    st.dataframe(table, hide_index=True, column_config=_TABLE_FORMATS)
    st.plotly_chart(depth_figure(table), key="depth_chart")
    depths = table["depth"].tolist()
    chosen = st.selectbox("Use this depth", depths, index=depths.index(comparison.recommended))
    if st.button("Use this depth", type="primary", key="depth_use"):
        apply_depth(train, comparison, chosen)
        st.rerun()
