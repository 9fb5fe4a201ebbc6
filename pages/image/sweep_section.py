"""Train page section: sweep head settings on the cached features, then "use the best"."""

from __future__ import annotations

import threading

import streamlit as st

from tlcore.config import RunConfig
from tlcore.errors import StudioError

LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DROPOUTS = (0.0, 0.2, 0.5)
HIDDEN_UNITS = (0, 128, 256, 512)
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def _start(config: RunConfig, grid) -> dict:
    """Runs the sweep in a background thread (never in the script thread); returns its state."""
    from tlcore.jobs import ProgressLog
    from tlcore.sweep import run_sweep

    state = {"log": ProgressLog(), "stop": threading.Event(), "result": None, "error": ""}

    def work():
        try:
            state["result"] = run_sweep(config, grid, log=state["log"], stop=state["stop"])
        except (StudioError, ValueError, OSError) as error:
            state["error"] = str(error)

    state["thread"] = threading.Thread(target=work, name="sweep", daemon=True)
    state["thread"].start()
    return state


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
        cols = st.columns(4)
        rates = cols[0].multiselect("Learning rates", LEARNING_RATES, [1e-4, 1e-3, 1e-2], format_func="{:g}".format)
        dropouts = cols[1].multiselect("Dropout", DROPOUTS, list(DROPOUTS))
        units = cols[2].multiselect("Hidden units", HIDDEN_UNITS, [0, 256])
        optimizers = cols[3].multiselect("Optimizers", OPTIMIZERS, ["adam"])
        state = st.session_state.get("sweep_state")
        running = state is not None and state["thread"].is_alive()
        if st.button("Run sweep", disabled=running):
            from tlcore.sweep import SweepGrid

            try:
                grid = SweepGrid(list(rates), list(dropouts), list(units), list(optimizers)).validate()
                config = RunConfig.from_dict(RunConfig(data, model, train).to_dict())
                st.session_state.sweep_state = _start(config, grid)
                st.rerun()
            except (StudioError, ValueError) as error:
                st.error(str(error))
        if state is not None:
            _sweep_progress(model, train)


@st.fragment(run_every=1.0)
def _sweep_progress(model, train) -> None:
    state = st.session_state.get("sweep_state")
    if state is None:
        return
    if state["thread"].is_alive():
        last = state["log"].last("sweep")
        st.progress(last["step"] / last["steps"] if last else 0.0, text="sweeping…" if last else "features…")
        if st.button("Stop sweep"):
            state["stop"].set()
        return
    if state["error"]:
        st.error(state["error"])
        return
    result = state["result"]
    st.caption(f"{len(result.table)} settings in {result.seconds:.1f} s (features {result.extraction_seconds:.1f} s)")
    st.dataframe(result.table, hide_index=True)
    _use_best(model, train, result.best)


def _use_best(model, train, best: dict) -> None:
    """The best setting's changes, before → after, and a button that applies them (nothing changes without it)."""
    from tlcore.sweep import apply_best, best_changes, describe_changes, shown

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
