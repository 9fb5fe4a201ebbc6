"""The sidebar on every page: current dataset, model and job (the job line follows the job live)."""

from __future__ import annotations

import streamlit as st

from tlcore.progress import job_progress
from ui import messages, shared
from ui.identity import cookie_script, facts


def sidebar(area: str = "image") -> None:
    """Current dataset, model and job, on every page; the job line follows the job live.

    Args:
        area: the part of the studio the page belongs to ("image" or "text"): the job line
            shows the latest job of that part.
    """
    from tlcore.model.choices import describe_backbone

    with st.sidebar:
        script = cookie_script()
        if script:
            st.html(script, unsafe_allow_javascript=True)
        st.caption("CURRENT SETUP")
        summary = facts().get("data_summary")
        st.markdown(
            f"**Dataset** · {messages.escape_markdown(shared.config('data').describe())}"
            + (f"  \n{summary}" if summary else "")
        )
        st.markdown(f"**Model** · {messages.escape_markdown(describe_backbone(shared.config('model')))}")
        job = shared.current_job(area)
        if job is not None and st.query_params.get("job") != job.job_id:
            st.query_params["job"] = job.job_id  # page changes drop it; a refresh shows it again
        if st.session_state.pop("foreign_job", False):
            st.caption("The job in this link belongs to another browser: only the browser that started a job sees it.")
        job_line(job, area)


# While nothing runs the job line still looks every few seconds: a job started (or ended)
# in another tab of this browser then redraws this page too, instead of leaving it stale.
IDLE_POLL_SECONDS = 3.0


def job_line(shown, area: str = "image") -> None:
    """The sidebar's job line; redraws the whole page when the visitor's latest job is not the one it shows.

    Args:
        shown: the job the page was drawn with (``None``: none).
        area: "image" or "text".
    """
    shown_id = shown.job_id if shown is not None else None
    active = shown is not None and shown.active

    @st.fragment(run_every=1.0 if active else IDLE_POLL_SECONDS)
    def line():
        job = shared.current_job(area)
        if job is None:
            st.markdown("**Job** · none yet")
            return
        state = job_progress(job)["text"] if job.active else job.status
        st.markdown(f"**Job** · {messages.escape_markdown(job.title)}  \n{messages.escape_markdown(state)}")
        if job.job_id != shown_id or job.active != active:
            st.rerun()  # started or ended here or in another tab: redraw the page around it

    line()
