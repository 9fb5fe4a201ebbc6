"""The job inside its Ray worker: the target runs here, the server polls its progress."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import traceback
from collections.abc import Callable
from typing import Any

from tlcore.errors import StudioError, first_line
from tlcore.jobs import ProgressLog, summary_of


@dataclasses.dataclass
class RemoteJob:
    """The job as its target sees it inside a Ray worker: the same attributes as :class:`~tlcore.jobs.Job`."""

    job_id: str
    owner: str
    kind: str
    title: str
    log: ProgressLog = dataclasses.field(default_factory=ProgressLog)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    status: str = "running"
    run_dir: str | None = None
    epochs: int = 0

    def request_stop(self) -> None:
        self.stop.set()

    @property
    def active(self) -> bool:
        return self.status == "running"


class JobHost:
    """Hosts one job in a Ray worker process (used as a threaded Ray actor).

    ``run`` works in one thread of the actor; ``poll`` and ``request_stop`` answer from
    others while it does.
    """

    def __init__(self, meta: dict, environment: dict, cwd: str):
        os.environ.update(environment)
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative run stores and datasets mean what they meant in the server
        self.job = RemoteJob(**meta)
        self._followed_log, self._generation = self.job.log, 0

    def run(self, target: Callable[[RemoteJob], Any]) -> dict:
        """Runs ``target(job)``; returns ``{"ok", "result" | "message", "expected", "traceback"}``."""
        try:
            return {"ok": True, "result": summary_of(target(self.job))}  # the run folder has the model
        except (StudioError, ValueError, OSError) as error:
            return {"ok": False, "expected": True, "message": str(error)}
        except Exception as error:  # noqa: BLE001  - reported to the user through the server
            message = f"Unexpected {type(error).__name__}: {first_line(error)}. Please report this."
            return {"ok": False, "expected": False, "message": message, "traceback": traceback.format_exc()}

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
