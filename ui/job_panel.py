"""One live job panel for every page that starts a job (Train, Text), and the short jobs.

The panel reruns on its own every second while the job runs (an ``st.fragment``), so
the user can leave the page and come back; it reads the job's own epoch plan, never
a widget that the user may have moved since the job started.

Everything else heavy (analyses, sweeps, the learning-rate finder, exports, GPT-2
generation) is a short job of the same registry: :func:`start_task` starts it under a
"slot" of the page (the process-wide cap and one job at a time per visitor hold, with
their messages) and :func:`task_outcome` follows it with progress and Stop, then hands
its result to the page once, or shows its error once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from tlcore.errors import JobBusyError, StudioError
from tlcore.progress import FAILED_HINT, STOP_HINT, STOP_PRESSED, job_progress, progress_line, task_line, task_progress
from ui import messages, shared


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
            st.progress(progress["fraction"], text=messages.escape_markdown(progress_line(progress)))
            if progress["phase"] != "save":  # saving the run: nothing left to stop
                stop_button(current, progress["phase"] == "stopping")
        elif current.status in ("done", "stopped"):
            finished(current)
        else:
            messages.show_error(StudioError(current.error), FAILED_HINT)
        st.plotly_chart(figure(current), width="stretch", key=chart_key)
        if running and not current.active:
            st.rerun()  # the job ended: redraw the whole page (re-enables Start, stops polling)

    panel()


def stop_button(job, stopping: bool) -> None:
    """Stop; once the job's stop flag is set (by any tab of its owner), a line in its place.

    The click sets the flag in a callback, before the panel redraws, so the progress line
    above says "Stopping" in the same rerun. What Stop does is said beside the button, not in
    a tooltip, which covered the progress line.
    """
    if stopping:
        st.caption(f":material/hourglass_top: {STOP_PRESSED}")
        return
    left, right = st.columns([1, 5], vertical_alignment="center")
    left.button("Stop", on_click=job.request_stop)
    right.caption(STOP_HINT)


# ----------------------------------------------------------------------------- short jobs


def _slot_key(slot: str) -> str:
    return f"task_job_{slot}"


def start_task(slot: str, kind: str, title: str, target: Callable) -> bool:
    """Starts ``target(job)`` as this visitor's job under ``slot``; shows why not when refused.

    Args:
        slot: where the page finds the job again (one per section, e.g. ``"analysis_embedding"``).
        kind: one of :data:`tlcore.jobs.TASK_KINDS`.
        title: what it does, in a few words (shown while it runs and in "already running").
        target: the work; receives the job (its log and stop event). Runs in this process.

    Returns:
        True when the job started; follow it with :func:`task_outcome`.
    """
    try:
        job = shared.registry().start(shared.session_id(), kind, title, target, in_process=True)
    except JobBusyError as error:
        messages.show_error(error)
        return False
    job.slot = slot
    st.session_state[_slot_key(slot)] = job.job_id
    return True


def task_running(slot: str) -> bool:
    """Whether the slot's job is still running (e.g. to disable the button that starts another)."""
    job = shared.registry().get(st.session_state.get(_slot_key(slot)))
    return job is not None and job.active


def task_outcome(slot: str) -> Any:
    """The result of the slot's job, once; while it runs, its progress and a Stop button.

    The page waits here while the job runs (it runs in the registry's thread, not in
    this one), redrawing the progress twice a second. A click anywhere (Stop, another
    page) ends the wait at once; the job goes on and the next run of the page finds it.

    Returns:
        The job's result the first time the page sees it finished or stopped (a stopped
        sweep returns its rows so far; the slot is then emptied: keep the result), else
        ``None`` (no job, or it failed: its error is shown, once).
    """
    jobs = shared.registry()
    job = jobs.get(st.session_state.get(_slot_key(slot))) or jobs.undelivered(shared.session_id(), slot)
    if job is None or job.owner != shared.session_id():
        st.session_state.pop(_slot_key(slot), None)
        return None
    st.session_state[_slot_key(slot)] = job.job_id
    if job.active:
        _follow(slot, job)
    del st.session_state[_slot_key(slot)]
    job.delivered = True
    if job.status == "failed":
        messages.show_error(StudioError(job.error), FAILED_HINT)
    return job.result if job.status in ("done", "stopped") else None


def _follow(slot: str, job) -> None:
    area = st.empty()
    with area.container():
        if st.button("Stop", key=f"stop_{slot}", help="Stops as soon as the work allows (a sweep after this setting)."):
            job.request_stop()
        bar = st.empty()
    while job.active:
        progress, text = task_progress(job), messages.escape_markdown(task_line(job))
        if progress["fraction"] is None:
            bar.caption(f":material/hourglass_top: {text}")
        else:
            bar.progress(progress["fraction"], text=text)
        job.wait(0.5)
    area.empty()
