"""What the Train page shows when a job has finished: one run, or both halves of an A/B pair."""

from pathlib import Path

import pandas as pd
import streamlit as st

from ui import messages


def show_result(job) -> None:
    verb = "Finished" if job.status == "done" else "Stopped"
    if job.kind == "ab":
        show_ab(job, verb)
    else:
        show_run(job, verb)
    cols = st.columns(2)
    cols[0].page_link("pages/image/evaluate.py", label="Evaluate this run", icon=":material/fact_check:")
    cols[1].page_link("pages/image/predict.py", label="Try predictions", icon=":material/image_search:")


def show_run(job, verb: str) -> None:
    metrics = job.result.metrics if job.result is not None else {}
    run_id = Path(job.run_dir).name if job.run_dir else None
    if run_id is None or not metrics:  # stopped while queued (Ray) or before its first epoch: nothing saved
        st.warning("The job was stopped before it trained: no run was saved.", icon=":material/stop_circle:")
        return
    st.session_state.run_id = run_id
    st.success(
        f"{verb}: validation accuracy **{metrics.get('val_accuracy', 0):.1%}** "
        f"(loss {metrics.get('val_loss', 0):.3f}) after {metrics.get('epochs_run', 0)} epochs: "
        f"{seconds_words(metrics.get('train_seconds', 0), job)}. Saved as run `{run_id}`.",
        icon=":material/check_circle:",
    )
    if metrics.get("kept_reason"):
        st.info(messages.escape_markdown(metrics["kept_reason"]) + " (★ on the chart)", icon=":material/star:")


def seconds_words(train_seconds: float, job) -> str:
    """What the time covers: the epochs alone, and the whole job (features, loading, saving) when it is known."""
    words = f"{train_seconds:.1f} s training"
    if job.finished is not None and job.finished - job.started > train_seconds:
        words += f", {job.finished - job.started:.1f} s for the whole job (loading, feature extraction, saving)"
    return words


def show_ab(job, verb: str) -> None:
    result = job.result
    if result is None or not result.runs:
        st.warning("The A/B pair was stopped before its first half finished.")
        return
    rows = [
        {
            "half": label,
            "run": run_id,
            "val accuracy": f"{metrics.get('val_accuracy', 0):.1%}",
            "val loss": f"{metrics.get('val_loss', 0):.3f}",
            "kept": metrics.get("kept_reason", ""),
        }
        for label, run_id, metrics in result.runs
    ]
    st.session_state.run_id = result.runs[-1][1]
    st.success(f"{verb}: A/B pair. {result.verdict}", icon=":material/compare_arrows:")
    st.table(pd.DataFrame(rows).set_index("half"))
    st.caption("The chart shows the last half (B). Compare both curves on the Runs page.")
