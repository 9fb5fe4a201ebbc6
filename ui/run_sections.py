"""Runs page sections: the A/B pair (fixed features vs fine-tuning) and the export report."""

from __future__ import annotations

import streamlit as st

from tlcore.errors import StudioError
from tlcore.runs.exports import export_outcome, export_report, profile_table
from ui import messages, shared
from ui.job_panel import task_outcome


def ab_section(store) -> None:
    """Trains the current setup twice on one split (frozen vs fine-tuned); the verdict when done."""
    st.subheader("A/B: fixed feature extractor vs fine-tuning")
    st.caption(
        "Trains the current setup twice on the same split: A with the backbone frozen, B with the same head "
        "training plus fine-tuning. The Train page shows both results when the pair finishes."
    )
    job = shared.current_job()
    if st.button("Run the A/B pair", disabled=job is not None and job.active):
        from tlcore.training.launch import start_ab

        try:
            shared.remember_job(start_ab(shared.registry(), shared.session_id(), shared.run_config(), store))
            st.rerun()
        except (StudioError, ValueError) as error:
            messages.show_error(error)
    if job is not None and job.kind == "ab":
        if job.active:
            st.info("A/B running. Follow it on the Train page; this table updates when it finishes.")
            st.page_link("pages/image/train.py", label="Watch it train", icon=":material/monitoring:")
        elif job.status == "failed":
            messages.show_error(StudioError(job.error))
        elif job.result is not None:
            st.success(job.result.verdict, icon=":material/compare_arrows:")


def exports_section(run) -> None:
    """What the last export job did, and the export profile table of ``run``."""
    report = task_outcome("export")  # a job of the registry: progress and Stop meanwhile, an error shown once
    if report:
        done, reasons = export_outcome(report)
        st.success(done)
        for reason in reasons:
            st.warning(reason)

    profile = export_report(run)
    if profile:
        st.markdown("**Exports: checked in their own runtime, timed on this server**")
        st.dataframe(
            profile_table(profile),
            column_config={
                "top1_agreement": st.column_config.NumberColumn("top-1 agrees", format="percent"),
                "max_prob_diff": st.column_config.NumberColumn("max prob. diff", format="%.4f"),
                "latency_ms": st.column_config.NumberColumn("ms / image", format="%.1f"),
                "images_per_second": st.column_config.NumberColumn("images/s", format="%.0f"),
            },
            hide_index=True,
            width="stretch",
        )
