"""The server side of the Ray runner: a job registry whose jobs run in Ray workers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tlcore.caches import BoundedCache
from tlcore.errors import first_line, job_failure
from tlcore.jobs import Job, JobRegistry, ProgressLog, fail
from tlcore.runners.cluster import JobResources, connect_ray, worker_environment
from tlcore.runners.host import JobHost
from tlcore.runs.store import set_status


class RayJobRegistry(JobRegistry):
    """A :class:`~tlcore.jobs.JobRegistry` whose jobs run on a Ray cluster.

    Same interface and ``Job`` objects: ``start``, ``get``, ``for_owner``; each job's log,
    stop, status, result, error and run folder behave as with threads. Differences: no
    fixed cap: as many jobs run as the cluster has room for (:meth:`capacity`), the
    others wait first come, first served with ``queued (position N)`` in their log; and
    ``where`` (host and pid, in words) and ``worker_pid`` attributes on each started job.

    Args:
        address: see :func:`connect_ray`; connected at the first job.
        resources: what each job asks for (default :class:`JobResources`).
        poll_seconds: how often the server copies a job's new progress records.
    """

    def __init__(self, address: str | None = None, resources: JobResources | None = None, poll_seconds: float = 0.5):
        super().__init__(max_concurrent=10**9)
        self.address = address
        self.resources = resources or JobResources()
        self.poll_seconds = poll_seconds
        self._waiting: list[str] = []  # job ids not yet submitted to Ray, oldest first
        self._submitted: set[str] = set()
        self._turn = threading.Condition(self._lock)  # notified whenever a job leaves

    def start(
        self,
        owner: str,
        kind: str,
        title: str,
        target,
        run_dir: str | None = None,
        epochs: int = 0,
        in_process: bool = False,
    ) -> Job:
        """Queues ``target(job)`` for Ray and returns the job at once (see :meth:`JobRegistry.start`).

        Raises:
            JobBusyError: this session already has a job running or queued.

        Ray is connected to in the job's thread (the first job may start a local Ray);
        an unreachable cluster fails the job with a message.
        """
        return super().start(owner, kind, title, target, run_dir=run_dir, epochs=epochs, in_process=in_process)

    def capacity(self) -> int:
        """How many jobs the cluster runs at once with :attr:`resources` per job."""
        import ray

        return self.resources.capacity(ray.cluster_resources())

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to go when a worker frees up; 0 when it may go now; ``None`` once submitted."""
        with self._lock:
            return self._position(job, self.capacity())

    def _position(self, job: Job, capacity: int) -> int | None:
        if job.job_id not in self._waiting:
            return None
        ahead, free = self._waiting.index(job.job_id), max(capacity - len(self._submitted), 0)
        return ahead - free + 1 if ahead >= free else 0

    def _wait_for_turn(self, job: Job) -> bool:
        """Blocks until the job may go to Ray (True), or it was stopped while queued (False)."""
        shown = None
        with self._turn:
            self._waiting.append(job.job_id)
            while True:
                position = self._position(job, self.capacity())
                if position == 0:
                    self._waiting.remove(job.job_id)
                    self._submitted.add(job.job_id)
                    return True
                if job.stop.is_set():
                    self._waiting.remove(job.job_id)
                    self._turn.notify_all()
                    return False
                if position != shown:
                    shown = position
                    job.log.append("status", status=f"queued (position {position})", queue_position=position)
                self._turn.wait(timeout=self.poll_seconds)  # also wakes for Stop and a grown cluster

    def _run(self, job: Job, target) -> None:
        try:
            job.log.append("status", status="connecting to Ray")
            connect_ray(self.address)
            outcome = self._run_on_ray(job, target) if self._wait_for_turn(job) else {"ok": True, "result": None}
            if outcome["ok"]:
                job.result = outcome["result"]
                job.status = "stopped" if job.stop.is_set() else "done"
            else:
                fail(job, outcome["message"], outcome.get("traceback"))
        except Exception as error:  # noqa: BLE001  - reported to the user, never raised into Streamlit
            fail(job, *job_failure(error))
        finally:
            with self._turn:
                self._submitted.discard(job.job_id)
                self._turn.notify_all()
            job.finished = time.time()
            job.log.append("status", status=job.status, error=job.error)
            self.forget_finished()

    def _run_on_ray(self, job: Job, target) -> dict:
        import ray

        meta = {"job_id": job.job_id, "owner": job.owner, "kind": job.kind, "title": job.title}
        meta.update(run_dir=job.run_dir, epochs=job.epochs)
        options = self.resources.options(ray.cluster_resources())
        job.log.append("status", status="starting a Ray worker")
        host = (
            _remote_host_class()
            .options(max_concurrency=4, max_restarts=0, **options)
            .remote(meta, worker_environment(), os.getcwd())
        )
        try:
            return _Follower(self, job, host).follow(host.run.remote(target))
        finally:
            ray.kill(host)


_REMOTE_CLASSES = BoundedCache("Ray actor classes", max_items=1)


def _remote_host_class():
    """:class:`JobHost` as a Ray actor class, made once (Ray exports a class at each ``ray.remote``)."""

    def make():
        import ray

        return ray.remote(JobHost)

    return _REMOTE_CLASSES.get_or_create("host", make)


class _Follower:
    """Mirrors one Ray job into its server-side :class:`Job` until it ends."""

    def __init__(self, registry: RayJobRegistry, job: Job, host):
        self.registry, self.job, self.host = registry, job, host
        self.started, self.copied, self.generation = False, 0, 0
        self.stop_sent = False

    def follow(self, run_ref) -> dict:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        poll_ref = self.host.poll.remote(0, 0)
        while True:
            finished = bool(ray.wait([run_ref], timeout=0)[0])
            try:
                self._mirror(ray.get(poll_ref, timeout=self.registry.poll_seconds))
                poll_ref = self.host.poll.remote(self.copied, self.generation)
            except GetTimeoutError:
                pass  # no answer yet: the worker is starting, or the cluster is busy with other work
            except RayActorError:
                finished = True
            self._forward_stop()
            if finished:
                break
        try:  # the records written between the last poll and the end
            self._mirror(ray.get(self.host.poll.remote(self.copied, self.generation), timeout=30))
        except (RayActorError, GetTimeoutError):
            pass
        try:
            return ray.get(run_ref)
        except RayActorError as error:
            return self._died(error)

    def _mirror(self, state: dict) -> None:
        if not self.started:
            self.started = True
            self.job.where, self.job.worker_pid = state["where"], state["pid"]
            self.job.log.append("status", status=f"running on Ray worker {state['where']}")
        if state["generation"] != self.generation:
            self.job.log, self.generation, self.copied = ProgressLog(), state["generation"], 0
        for record in state["records"]:  # its "time" is kept: the worker's clock times the batches
            self.job.log.append(record["kind"], **{key: value for key, value in record.items() if key != "kind"})
        self.copied += len(state["records"])
        self.job.run_dir = state["run_dir"] or self.job.run_dir
        self.job.epochs = state["epochs"]

    def _forward_stop(self) -> None:
        """Passes a Stop on to the worker (once); the job stops after its current batch."""
        if self.job.stop.is_set() and not self.stop_sent:
            self.stop_sent = True
            self.host.request_stop.remote()

    def _died(self, error) -> dict:
        message = (
            f"The Ray worker running this job died before it finished ({first_line(error, 200)}). "
            "The run is marked failed; start it again. If it keeps happening, the worker may be out of memory."
        )
        if self.job.run_dir and Path(self.job.run_dir).is_dir():
            set_status(Path(self.job.run_dir), "failed", error=message)
        return {"ok": False, "message": message}
