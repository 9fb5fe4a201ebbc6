"""One live job panel for every page that starts a job (Train, Text).

The panel reruns on its own every second while the job runs (an ``st.fragment``), so
the user can leave the page and come back; it reads the job's own epoch plan, never
a widget that the user may have moved since the job started.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from pages.studio import shared
from tlcore.errors import StudioError
from tlcore.jobs import job_progress


def job_panel(job, figure: Callable, finished: Callable, chart_key: str = "live_chart") -> None:
    """Progress and Stop while ``job`` runs, ``finished(job)`` after, the chart throughout.

    Args:
        job: the session's job when the page ran.
        figure: ``figure(job)`` → the Plotly figure of its progress.
        finished: ``finished(job)`` renders the result of a job that is done or stopped.
        chart_key: a widget key, unique on the page.
    """
    running = job.active

    @st.fragment(run_every=1.0 if running else None)
    def panel():
        current = shared.current_job(job.area)
        if current is None or current.job_id != job.job_id:
            return
        if current.active:
            progress = job_progress(current)
            eta = progress["eta_seconds"]
            left = f" · about {eta:.0f} s left" if eta is not None else ""
            st.progress(progress["fraction"], text=shared.escape_markdown(progress["text"] + left))
            if st.button("Stop", help="Stops after the current batch and keeps the best weights so far."):
                current.request_stop()
                st.toast("Stopping after this batch…")
        elif current.status in ("done", "stopped"):
            finished(current)
        else:
            shared.show_error(StudioError(current.error), "Your settings are kept: change them and start again.")
        st.plotly_chart(figure(current), width="stretch", key=chart_key)
        if running and not current.active:
            st.rerun()  # the job ended: redraw the whole page (re-enables Start, stops polling)

    panel()
