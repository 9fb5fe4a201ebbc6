"""Train page section: sweep head settings on the cached features, then "use the best".

The sweep is a job of the studio's registry (its cap, one job at a time per visitor, Stop).
"""

from __future__ import annotations

import streamlit as st

from tlcore.config import RunConfig
from tlcore.errors import StudioError
from ui.job_panel import start_task, task_outcome, task_running


def _start(config: RunConfig, grid) -> bool:
    """Starts the sweep as this visitor's job (the studio's cap and one job at a time hold)."""
    from tlcore.training.sweep import run_sweep

    def work(job):
        return run_sweep(config, grid, log=job.log, stop=job.stop)

    return start_task("sweep", "sweep", "Sweeping head settings", work)


def sweep_section(data, model, train) -> None:
    """The sweep expander: pick value lists, run, see the ranked table, then the best's changes, applied on a click.

    Args:
        data, model, train: the session's DataConfig, ModelConfig and TrainConfig (the
            Train form's objects: "use the best" writes into ``model`` and ``train``, after
            showing what it changes and only when the user clicks).
    """
    applied = st.session_state.pop("sweep_applied", None)
    if applied:
        st.success(applied, icon=":material/check:")
    with st.expander("Sweep head settings (on the cached features)", expanded=applied is not None):
        if model.freeze.mode != "all":
            st.caption("A sweep needs the whole backbone frozen (Model page: freeze all).")
            return
        from tlcore.training.sweep import GRID_OPTIONS, SweepGrid

        cols, default = st.columns(4), SweepGrid()
        rates = cols[0].multiselect(
            "Learning rates", GRID_OPTIONS["learning_rates"], default.learning_rates, format_func="{:g}".format
        )
        dropouts = cols[1].multiselect("Dropout", GRID_OPTIONS["dropout_rates"], default.dropout_rates)
        units = cols[2].multiselect("Hidden units", GRID_OPTIONS["hidden_units"], default.hidden_units)
        optimizers = cols[3].multiselect("Optimizers", GRID_OPTIONS["optimizers"], default.optimizers)
        if st.button("Run sweep", disabled=task_running("sweep")):
            try:
                grid = SweepGrid(list(rates), list(dropouts), list(units), list(optimizers)).validate()
                config = RunConfig.from_dict(RunConfig(data, model, train).to_dict())
                if _start(config, grid):
                    st.session_state.pop("sweep_result", None)
            except (StudioError, ValueError) as error:
                st.error(str(error))
        finished = task_outcome("sweep")  # progress and Stop while it runs
        if finished is not None:
            st.session_state.sweep_result = finished
        _sweep_progress(model, train)


def _sweep_progress(model, train) -> None:
    result = st.session_state.get("sweep_result")
    if result is None:
        return
    st.caption(f"{len(result.table)} settings in {result.seconds:.1f} s (features {result.extraction_seconds:.1f} s)")
    st.dataframe(result.table, hide_index=True)
    _use_best(model, train, result.best)


def _use_best(model, train, best: dict) -> None:
    """The best setting's changes, before → after, and a button that applies them (nothing changes without it)."""
    from tlcore.training.sweep import apply_best, best_changes, describe_changes, shown

    if not best:
        return
    config = RunConfig(model=model, train=train)
    changes = best_changes(config, best)
    if not changes:
        st.caption("The form already has the best settings.")
        return
    st.markdown("**The best setting would change:**")
    rows = [{"setting": row["setting"], "where": row["where"], "now": shown(row["now"]), "best": shown(row["best"])}
            for row in changes]  # fmt: skip
    st.table(rows)
    if st.button(f"Use the best ({len(changes)} change{'s' if len(changes) > 1 else ''})", type="primary",
                 key="sweep_use_best"):  # fmt: skip
        apply_best(config, best)
        st.session_state.sweep_applied = describe_changes(changes)
        st.rerun(scope="app")
