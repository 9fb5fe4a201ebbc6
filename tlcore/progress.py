"""Where a job is, in words and as a fraction: the progress line of the job panel and the sidebar.

Read from the job's :class:`~tlcore.jobs.ProgressLog` (batches, epochs, phases, extraction)
and its stop flag; nothing here changes a job.
"""

from __future__ import annotations

import time

from tlcore.jobs import Job, ProgressLog


def progress_summary(log: ProgressLog, total_epochs: int) -> dict:
    """Where a training job is: fraction done, ETA, and a one-line description.

    The ETA is measured on the phase that is running, from its own batch and epoch times
    (a fine-tune epoch on images can take a hundred times a head epoch on cached
    features), and it is given only while no later phase is still to come: during
    phase 1 of a run that fine-tunes, the text says how long this phase has left
    instead. During feature extraction the bar follows the extraction's batches.

    Args:
        log: the job's progress log.
        total_epochs: epochs planned over both phases (early stopping may end sooner).

    Returns:
        ``{"fraction", "eta_seconds", "text", "phase"}``; ``eta_seconds`` is ``None``
        while it cannot be measured (before the phase's second batch) or covers only
        part of the job.
    """
    records = log.records()
    status = next((r for r in reversed(records) if r["kind"] == "status"), None)
    if status and status.get("status") in ("done", "stopped", "failed"):
        return {"fraction": 1.0, "eta_seconds": 0.0, "text": status["status"], "phase": None}
    latest = next((r for r in reversed(records) if r["kind"] in ("batch", "extract")), None)
    if latest is None:
        return {"fraction": 0.0, "eta_seconds": None, "text": (status or {}).get("status", "starting"), "phase": None}
    preparing = _preparing(records, latest, total_epochs)
    if preparing is not None:
        return preparing
    if latest["kind"] == "extract":
        text = f"computing backbone activations: batch {latest['step']}/{latest['steps']}"
        fraction = latest["step"] / max(latest["steps"], 1)
        return {"fraction": fraction, "eta_seconds": None, "text": text, "phase": "extract"}
    return _training_progress(records, latest, total_epochs)


def _preparing(records: list[dict], latest: dict, total_epochs: int) -> dict | None:
    """Progress while a training phase has started and its first batch has not ended, else ``None``.

    Keras builds and compiles the phase's training step during its first batch: tens of
    seconds for a fine-tune, during which no batch is logged. The bar stays at the
    epochs already done and the text says what is happening.
    """
    phase = next((r for r in reversed(records) if r["kind"] == "phase"), None)
    if phase is None or phase.get("phase") in (None, "extract") or phase["time"] < latest["time"]:
        return None
    if latest["kind"] == "batch" and latest["phase"] == phase["phase"]:
        return None
    done = max((r["epoch"] for r in records if r["kind"] == "epoch" and not r.get("partial")), default=0)
    text = f"{phase['phase']} · preparing: compiling the model for this phase (its first batch takes longest)"
    return {
        "fraction": min(done / max(total_epochs, 1), 1.0),
        "eta_seconds": None,
        "text": text,
        "phase": phase["phase"],
    }


def _training_progress(records: list[dict], batch: dict, total_epochs: int) -> dict:
    phase = batch["phase"]
    steps = batch.get("steps") or batch["step"]
    phases = [r for r in records if r["kind"] == "phase" and r.get("phase") not in (None, "extract")]
    planned = next((r.get("epochs") for r in reversed(phases) if r["phase"] == phase), None) or total_epochs
    batches = [r for r in records if r["kind"] == "batch" and r["phase"] == phase]
    epochs = [r for r in records if r["kind"] == "epoch" and r["phase"] == phase and not r.get("partial")]
    first_epoch = batches[0]["epoch"]
    left_in_epoch = 1 - batch["step"] / steps
    epochs_after = max(planned - (batch["epoch"] - first_epoch + 1), 0)
    eta = _phase_seconds_left(batches, epochs, steps, left_in_epoch, epochs_after)
    text = f"{phase} · epoch {batch['epoch']}/{total_epochs} · batch {batch['step']}/{steps}"
    later = bool(phases) and sum(r.get("epochs") or 0 for r in phases) < total_epochs  # a phase still to come
    # The bar: the phases share it by planned epochs; inside the running phase it moves with
    # measured time once an ETA exists (epochs of one phase take about equally long).
    within = (batch["epoch"] - first_epoch + batch["step"] / steps) / max(planned, 1)
    if eta is not None:
        elapsed = batch["time"] - batches[0]["time"]
        within = elapsed / (elapsed + eta) if elapsed + eta > 0 else within
    start, share = (first_epoch - 1) / max(total_epochs, 1), planned / max(total_epochs, 1)
    fraction = min(max(start + share * within, 0.0), 1.0)
    if later and eta is not None:
        text = f"{text} · this phase about {eta:.0f} s more"
        return {"fraction": fraction, "eta_seconds": None, "text": text, "phase": phase}
    return {"fraction": fraction, "eta_seconds": eta, "text": text, "phase": phase}


def _phase_seconds_left(batches: list, epochs: list, steps: int, left_in_epoch: float, epochs_after: int):
    """Seconds the running phase has left, from its own measured times; ``None`` before two batches."""
    if epochs:  # a whole epoch of this phase (training and validation) was timed
        timed = [r["seconds"] for r in epochs if r.get("seconds") is not None]
        per_epoch = sorted(timed[1:] or timed)[len(timed[1:] or timed) // 2]  # the first one also traced
        return per_epoch * (left_in_epoch + epochs_after)
    if len(batches) < 2:
        return None
    per_batch = (batches[-1]["time"] - batches[0]["time"]) / (len(batches) - 1)  # after the first (tracing)
    return per_batch * steps * (left_in_epoch + epochs_after)


def task_progress(job: Job) -> dict:
    """Where a short job (one of :data:`TASK_KINDS`) is: ``{"fraction": float | None, "text"}``.

    Reads the last ``extract`` (backbone features), ``sweep`` or ``step`` record of its
    log; ``fraction`` is ``None`` when the job reports no steps (a bar cannot be drawn).
    """
    latest = None
    for kind in ("extract", "sweep", "step"):
        record = job.log.last(kind)
        if record is not None and (latest is None or record["time"] >= latest["time"]):
            latest = record
    seconds = time.time() - job.started
    if latest is None or not latest.get("steps"):
        return {"fraction": None, "text": f"{job.title}: {seconds:.0f} s"}
    what = "computing backbone features" if latest["kind"] == "extract" else job.title
    fraction = min(max(latest["step"] / latest["steps"], 0.0), 1.0)
    doing = latest.get("doing") if latest["kind"] == "step" and latest["step"] < latest["steps"] else None
    text = f"{what}: {latest['step']}/{latest['steps']}{f' ({doing})' if doing else ''} · {seconds:.0f} s"
    eta = (job.log.last("step") or {}).get("eta_seconds")  # a job of several steps says how long it has left
    return {"fraction": fraction, "text": text + (f" · about {eta:.0f} s left" if eta else "")}


def job_progress(job: Job) -> dict:
    """:func:`progress_summary` of a job against the epochs the job itself planned.

    Training logs its end before the job has saved the run (the model file, predictions,
    metrics): meanwhile the job says so (phase ``"save"``; nothing left to stop) instead
    of "done · about 0 s left" beside a Stop button.
    """
    progress = progress_summary(job.log, job.epochs)
    if job.active and progress["phase"] is None and progress["text"] in ("done", "stopped"):
        return {
            **progress,
            "eta_seconds": None,
            "text": f"training {progress['text']} · saving the run…",
            "phase": "save",
        }
    if job.active and job.stop.is_set():  # Stop was pressed (in any tab): the batch running now ends first
        return {**progress, "eta_seconds": None, "text": f"{STOPPING} · {progress['text']}", "phase": "stopping"}
    return progress


# What a job says from the moment Stop is pressed until it has stopped: the running batch
# (the first batch of a fine-tune compiles the model, tens of seconds) ends first.
STOPPING = "Stopping — after the current batch"
# What the job panel says beside its Stop button, once Stop was pressed, and under a failed job's error.
STOP_HINT = "Stops after the current batch and keeps the best weights so far."
STOP_PRESSED = "Stop was pressed: the job keeps the best weights so far and ends."
FAILED_HINT = "Your settings are kept: change them and start again."


def progress_line(progress: dict) -> str:
    """The job panel's line under its bar: :func:`job_progress`'s text and, once known, the time left."""
    eta = progress["eta_seconds"]
    return progress["text"] + (f" · about {eta:.0f} s left" if eta is not None else "")


def task_line(job: Job) -> str:
    """A short job's line (:func:`task_progress`), saying "stopping…" once its Stop was pressed."""
    return task_progress(job)["text"] + (" · stopping…" if job.stop.is_set() else "")


def training_figure(job: Job):
    """The Train page's live chart of ``job``: its epochs so far, the epoch whose weights it keeps marked."""
    from tlcore.charts import history_figure
    from tlcore.jobs import history_frame

    best = job.log.last("best")
    kept = {None: best["epoch"]} if best else {}
    return history_figure(history_frame(job.log), title=job.title, kept_epochs=kept)
