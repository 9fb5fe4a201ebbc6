"""Background jobs: training runs off the script thread, shared by all browser sessions.

Streamlit reruns a page script on every click and stops the old run at its next
``st.*`` call, so a fit can never run in the script thread. A :class:`JobRegistry`
(one per process; the dashboard keeps it in ``st.cache_resource``) owns the threads.
Each job has an id, a status, an append-only :class:`ProgressLog`, a
stop event, and its result. Job threads never touch Streamlit.

Every heavy piece of work goes through it, not only trainings: sweeps, learning-rate
finders, the analyses, exports and GPT-2, so the process-wide cap and "one at a time
per visitor" hold for all of them. The server lives for days, so what the registry keeps
is bounded: a finished job keeps a summary of its result (a trained model is on disk
in its run folder, never held here, see :func:`summary_of`), and only the last few
finished jobs of each visitor are kept (always their latest of each kind, so a refresh
finds it).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tlcore.errors import JobBusyError, StudioError, job_failure

DEFAULT_MAX_JOBS = 2
# Finished jobs kept: each visitor's last few, and at most this many over the whole
# process (a visitor's latest job of each kind is kept past the first bound).
KEEP_FINISHED_PER_OWNER = 4
KEEP_FINISHED = 64
KEEP_LATEST = 1024


# Short jobs a page starts and waits for (analyses, sweeps, exports, GPT-2 generation, comparisons): they
# count against the cap like a training; the training panel does not follow them (:func:`task_progress`).
TASK_KINDS = ("analysis", "sweep", "export", "generate", "compare")

# How long a page waits for a job it just started before it shows the live panel: a
# retrain on cached features (about 0.2 s training + 0.3-0.5 s saving) then shows its
# result on the click itself instead of at the panel's first poll a second later.
QUICK_JOB_SECONDS = 1.0

# Which part of the studio a job belongs to, by what it does: the image pages show only
# image jobs and the Text page only text jobs (a failed GPT-2 fine-tune must not take the
# place of the last training on the image pages). Kinds not listed are image jobs.
JOB_AREAS = {"text-finetune": "text", "generate": "text"}
AREAS = ("image", "text")


def max_jobs_from_env(environ=None) -> int:
    """The process-wide job cap: ``TLCORE_MAX_JOBS`` (default 2).

    Raises:
        StudioError: the variable is set to something other than a whole number >= 1.
    """
    raw = (os.environ if environ is None else environ).get("TLCORE_MAX_JOBS", "").strip()
    if not raw:
        return DEFAULT_MAX_JOBS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StudioError(
            f"TLCORE_MAX_JOBS should be a whole number of at least 1 (how many trainings may run at once); "
            f"received {raw!r}. Fix it in the server's environment and restart the studio."
        )
    return value


class ProgressLog:
    """A thread-safe, append-only list of plain progress records.

    The job thread appends; page scripts read snapshots from other threads. Records
    are dicts with at least ``kind`` and ``time``.
    """

    def __init__(self):
        self._records: list[dict] = []
        self._lock = threading.Lock()

    def append(self, kind: str, **fields) -> None:
        record = {"kind": kind, "time": time.time(), **fields}
        with self._lock:
            self._records.append(record)

    def records(self, start: int = 0, kind: str | None = None) -> list[dict]:
        with self._lock:
            snapshot = self._records[start:]
        return [r for r in snapshot if kind is None or r["kind"] == kind]

    def last(self, kind: str) -> dict | None:
        with self._lock:
            for record in reversed(self._records):
                if record["kind"] == kind:
                    return dict(record)
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


@dataclass
class Job:
    """One background job.

    Attributes:
        job_id: unique id (kept in the browser's session state and URL).
        owner: the browser session that started it.
        kind: what it does ("train", "text-finetune", ...), for display.
        title: a short description.
        log: progress records.
        stop: set by :meth:`request_stop`; the job's Keras callback stops within a batch.
        status: "running", "done", "stopped" or "failed".
        result: what the target returned.
        error: the failure message ("what is wrong and what to do").
        run_dir: the run folder the job writes, if any.
        epochs: epochs the job plans (the progress bar's denominator; early stopping may end sooner).
        slot: for a short job, the page section that follows it: a page opened later (a
            reload, another tab) finds the job there and shows its result once.
        delivered: whether a page has already shown the short job's result or error.
    """

    job_id: str
    owner: str
    kind: str
    title: str
    log: ProgressLog = field(default_factory=ProgressLog)
    stop: threading.Event = field(default_factory=threading.Event)
    status: str = "running"
    result: Any = None
    error: str = ""
    run_dir: str | None = None
    epochs: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    thread: threading.Thread | None = None
    slot: str | None = None  # the page section that follows a short job (see ui/job_panel.py)
    delivered: bool = False  # a page has shown its result or error

    def request_stop(self) -> None:
        self.stop.set()

    @property
    def area(self) -> str:
        """``"image"`` or ``"text"``: the pages that show this job (see :data:`JOB_AREAS`)."""
        return JOB_AREAS.get(self.kind, "image")

    @property
    def active(self) -> bool:
        return self.status == "running"

    def wait(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for the job to end; True if it has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.active


def summary_of(result: Any) -> Any:
    """What a finished job keeps of its target's result: everything but a Keras model.

    A dataclass with a ``model`` field (a training's :class:`~tlcore.training.trainer.TrainResult`)
    comes back with ``model=None``: the model is saved in the run folder, and keeping it
    here would hold tens of megabytes per finished training for the life of the server.
    """
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        names = {item.name for item in dataclasses.fields(result)}
        if "model" in names and result.model is not None:
            return dataclasses.replace(result, model=None)
    return result


def fail(job: Job, message: str, trace: str | None = None) -> None:
    """Marks ``job`` failed with ``message``; a bug's traceback goes to its log, for the report.

    The one failure path of both runners (see :func:`tlcore.errors.job_failure`).
    """
    job.error = message
    if trace:
        job.log.append("traceback", text=trace)
    job.status = "failed"


class JobRegistry:
    """All jobs of this process; thread-safe.

    Args:
        max_concurrent: how many jobs may run at once in the whole process; one more
            is refused with a :class:`~tlcore.errors.JobBusyError` ("busy, try again").
        keep_per_owner: finished jobs kept per owner (their latest of each kind is
            always kept, up to ``KEEP_LATEST`` such jobs in the process).
        keep_finished: finished jobs kept in the whole process, beyond those latest ones.
    """

    def __init__(
        self,
        max_concurrent: int = DEFAULT_MAX_JOBS,
        keep_per_owner: int = KEEP_FINISHED_PER_OWNER,
        keep_finished: int = KEEP_FINISHED,
    ):
        self.max_concurrent = max_concurrent
        self.keep_per_owner = keep_per_owner
        self.keep_finished = keep_finished
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(
        self,
        owner: str,
        kind: str,
        title: str,
        target: Callable[[Job], Any],
        run_dir: str | None = None,
        epochs: int = 0,
        in_process: bool = False,
    ) -> Job:
        """Starts ``target(job)`` in a background thread and returns the job.

        Args:
            owner: the browser session that owns the job (only it may see and stop it).
            kind: what it does, for display.
            title: a short description.
            target: the work; receives the job (its log and stop event).
            run_dir: the run folder, when known up front.
            epochs: epochs planned, for the progress bar.
            in_process: run in a thread of this process whatever the runner (an analysis
                or export works on objects this process holds; a Ray registry would have
                to ship them to a worker).

        Raises:
            JobBusyError: this session already has a running job, or the process-wide
                cap is reached.
        """
        with self._lock:
            running = [j for j in self._jobs.values() if j.active]
            mine = [j for j in running if j.owner == owner]
            if mine:
                raise JobBusyError(
                    f"You already have a job running ({mine[0].title}). Stop it or wait for it to finish."
                )
            if len(running) >= self.max_concurrent:
                count = f"{len(running)} jobs are" if len(running) != 1 else "1 job is"
                raise JobBusyError(
                    f"The studio is busy: {count} running (trainings, analyses, exports; the limit is "
                    f"{self.max_concurrent}). Try again in a minute."
                )
            job = Job(uuid.uuid4().hex[:12], owner, kind, title, run_dir=run_dir, epochs=epochs)
            self._jobs[job.job_id] = job
        run = functools.partial(JobRegistry._run, self) if in_process else self._run
        job.thread = threading.Thread(target=run, args=(job, target), name=f"job-{job.job_id}", daemon=True)
        job.thread.start()
        return job

    def _run(self, job: Job, target: Callable[[Job], Any]) -> None:
        try:
            job.result = summary_of(target(job))
            job.status = "stopped" if job.stop.is_set() else "done"
        except Exception as error:  # noqa: BLE001  - reported to the user, never raised into Streamlit
            fail(job, *job_failure(error))
        finally:
            job.finished = time.time()
            job.log.append("status", status=job.status, error=job.error)
            self.forget_finished()

    def forget_finished(self) -> int:
        """Drops finished jobs beyond the bounds (see the class); returns how many were dropped."""
        with self._lock:
            dropped = self._finished_to_drop()
            for job_id in dropped:
                del self._jobs[job_id]
        return len(dropped)

    def _finished_to_drop(self) -> list[str]:
        newest_first = sorted(self._jobs.values(), key=lambda job: job.started, reverse=True)
        latest = {}
        for job in newest_first:
            latest.setdefault((job.owner, job.kind), job.job_id)
        per_owner: dict[str, int] = {}
        kept = kept_latest = 0
        drop = []
        for job in newest_first:
            if job.active:
                continue
            is_latest = latest[(job.owner, job.kind)] == job.job_id
            mine = per_owner.get(job.owner, 0)
            if mine < self.keep_per_owner and kept < self.keep_finished:
                per_owner[job.owner], kept = mine + 1, kept + 1
            elif is_latest and kept_latest < KEEP_LATEST:
                kept_latest += 1
            else:
                drop.append(job.job_id)
        return drop

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id or "")

    def for_owner(self, owner: str, area: str | None = None, kinds: tuple[str, ...] | None = None) -> list[Job]:
        """The owner's jobs kept by the registry, oldest first.

        Args:
            owner: the visitor's owner id.
            area: only jobs of this area ("image", "text") when given.
            kinds: only jobs of these kinds (e.g. ``("train",)``) when given.
        """
        if area is not None and area not in AREAS:
            raise ValueError(f"Expected an area in {list(AREAS)}. Received: area={area!r}.")
        with self._lock:
            mine = [
                j
                for j in self._jobs.values()
                if j.owner == owner and area in (None, j.area) and (kinds is None or j.kind in kinds)
            ]
        return sorted(mine, key=lambda j: j.started)

    def undelivered(self, owner: str, slot: str) -> Job | None:
        """The owner's latest short job of ``slot`` whose result or error no page has shown yet, or ``None``.

        A page opened after a reload, or in another tab, finds it and shows its outcome once.
        """
        waiting = [job for job in self.for_owner(owner) if job.slot == slot and not job.delivered]
        return waiting[-1] if waiting else None


# ----------------------------------------------------------------------------- reading a job's log

HISTORY_COLUMNS = ["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]


def history_frame(log: ProgressLog):
    """Epoch records of a log as one continuous history DataFrame (both phases).

    An epoch cut short by a stop request is left out: its training loss and accuracy
    cover only the batches before the stop, so it is no epoch to plot beside full ones.
    """
    import pandas as pd

    records = [record for record in log.records(kind="epoch") if not record.get("partial")]
    rows = [{column: record.get(column) for column in HISTORY_COLUMNS} for record in records]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
