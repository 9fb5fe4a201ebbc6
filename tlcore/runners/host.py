"""The job inside its Ray worker: the target runs here, the server polls its progress."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from tlcore.errors import job_failure
from tlcore.jobs import Job, summary_of


class JobHost:
    """Hosts one job in a Ray worker process (used as a threaded Ray actor).

    ``run`` works in one thread of the actor; ``poll`` and ``request_stop`` answer from
    others while it does.
    """

    def __init__(self, meta: dict, environment: dict, cwd: str):
        os.environ.update(environment)
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative run stores and datasets mean what they meant in the server
        self.job = Job(**meta)  # the same Job as in the server; its log and stop live in this worker
        self._followed_log, self._generation = self.job.log, 0

    def run(self, target: Callable[[Job], Any]) -> dict:
        """Runs ``target(job)``; returns ``{"ok", "result"}`` or ``{"ok", "message", "traceback"}``."""
        try:
            return {"ok": True, "result": summary_of(target(self.job))}  # the run folder has the model
        except Exception as error:  # noqa: BLE001  - reported to the user through the server
            message, trace = job_failure(error)
            return {"ok": False, "message": message, "traceback": trace}  # no traceback for bad input

    def poll(self, start: int, generation: int) -> dict:
        """New records since ``start`` of the log the job writes now, and what the server mirrors."""
        if self.job.log is not self._followed_log:  # an A/B job starts a new log for its second half
            self._followed_log, self._generation = self.job.log, self._generation + 1
        if generation != self._generation:
            start = 0
        return {
            "generation": self._generation,
            "records": self._followed_log.records(start),
            "run_dir": self.job.run_dir,
            "epochs": self.job.epochs,
            "where": f"{socket.gethostname()} pid {os.getpid()}",
            "pid": os.getpid(),
        }

    def request_stop(self) -> None:
        self.job.stop.set()
