"""Job runners: where a background job runs. ``thread`` (the default) or ``ray``.

``thread`` is :class:`tlcore.jobs.JobRegistry` as it always was: the job runs in a
thread of the server, nothing to install or start. ``ray`` (``TLCORE_JOB_RUNNER=ray``)
is :class:`RayJobRegistry`, the same interface, whose jobs run in Ray worker
processes: a classroom of 30 shares the cluster's capacity instead of two threads, and
a GPU box next to the laptop trains the jobs.

How a Ray job reaches the page: the job's target runs inside a :class:`JobHost` actor
(one worker process per job) that keeps a real :class:`~tlcore.jobs.ProgressLog` and a
stop event. A thread in the server follows the actor, copies new records into the
server-side job's log and forwards a Stop, so the pages read the same ``Job`` object
as with threads. Jobs beyond the cluster's capacity wait in the registry's queue,
first come first served; their log says ``queued (position N)``. A worker that dies mid-job fails the job and its run
folder with a message.

Run folders and datasets must be on storage every worker sees under the same path
(one machine, or a shared mount): the worker writes the run folder itself.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlcore.errors import StudioError, first_line
from tlcore.jobs import Job, JobRegistry, ProgressLog
from tlcore.runs import set_status

RUNNER_VARIABLE = "TLCORE_JOB_RUNNER"
ADDRESS_VARIABLE = "TLCORE_RAY_ADDRESS"
CPUS_VARIABLE = "TLCORE_RAY_CPUS_PER_JOB"
GPUS_VARIABLE = "TLCORE_RAY_GPUS_PER_JOB"
RUNNERS = ("thread", "ray")
# Passed to every Ray worker: a cluster started elsewhere has its own environment.
FORWARDED_VARIABLES = ("KERAS_HOME", "TF_CPP_MIN_LOG_LEVEL", "TL_SHARED_DIR")
FORWARDED_PREFIXES = ("TLCORE_",)
DEFAULT_OBJECT_STORE_BYTES = 512 * 1024**2


# ----------------------------------------------------------------------------- choosing a runner


def runner_from_env(environ=None) -> str:
    """The job runner the server's environment asks for: ``TLCORE_JOB_RUNNER`` (default ``thread``).

    Raises:
        StudioError: an unknown runner name.
    """
    raw = (os.environ if environ is None else environ).get(RUNNER_VARIABLE, "").strip().lower() or "thread"
    if raw not in RUNNERS:
        raise StudioError(
            f"Unknown job runner. Expected {RUNNER_VARIABLE} to be one of {list(RUNNERS)}. Received: {raw!r}. "
            "Fix it in the server's environment and restart the studio."
        )
    return raw


def registry_from_env(max_concurrent: int, environ=None) -> JobRegistry:
    """The job registry the environment asks for: a :class:`JobRegistry` or a :class:`RayJobRegistry`.

    Args:
        max_concurrent: the thread runner's cap (``TLCORE_MAX_JOBS``); the Ray runner's
            cap is the cluster's capacity instead.
        environ: the environment to read (default ``os.environ``).

    Raises:
        StudioError: an unknown runner or an invalid resource setting.
    """
    environ = os.environ if environ is None else environ
    if runner_from_env(environ) == "thread":
        return JobRegistry(max_concurrent=max_concurrent)
    address = environ.get(ADDRESS_VARIABLE, "").strip() or None
    return RayJobRegistry(address=address, resources=JobResources.from_env(environ))


# ----------------------------------------------------------------------------- connecting to Ray

_CONNECT_LOCK = threading.Lock()


def worker_environment(environ=None) -> dict[str, str]:
    """The variables a Ray worker needs from this process (cache, runs, workspace, Keras home)."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in environ.items()
        if name in FORWARDED_VARIABLES or name.startswith(FORWARDED_PREFIXES)
    }


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connects this process to Ray once: an existing cluster, or a local one started now.

    Args:
        address: ``"auto"`` (a cluster started with ``ray start`` on this machine),
            ``"ray://host:10001"`` (a remote cluster through Ray Client), or ``None``
            for a local Ray started on demand with this machine's CPUs.
        num_cpus: CPUs of a local Ray (default: this machine's); ignored with an address.

    A local Ray's processes die with the thread that started them (Linux parent-death
    signal), and a dashboard page's thread ends after every rerun, so the local cluster
    is started from a thread that lives as long as the process.

    Raises:
        StudioError: the cluster cannot be reached, or ``ray`` is not installed.
    """
    try:
        import ray
    except ModuleNotFoundError:
        raise StudioError(
            "The Ray runner needs Ray: `pip install 'ray[data]'` (it is in requirements.txt), or unset "
            f"{RUNNER_VARIABLE} to train in the server."
        ) from None
    with _CONNECT_LOCK:
        if ray.is_initialized():
            return
        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address:
            # A cluster started elsewhere does not have this code: ship the tlcore package.
            options.update(address=address, runtime_env={"py_modules": [str(Path(__file__).parent)]})
        else:
            options.update(num_cpus=num_cpus or os.cpu_count(), object_store_memory=DEFAULT_OBJECT_STORE_BYTES)
        _init_in_lasting_thread(ray, options, address)


def _init_in_lasting_thread(ray, options: dict, address: str | None) -> None:
    outcome: dict = {}
    ready = threading.Event()

    def init_and_stay():
        try:
            ray.init(**options)
        except Exception as error:  # noqa: BLE001  - reported to the caller below
            outcome["error"] = error
        ready.set()
        if "error" not in outcome:
            threading.Event().wait()  # keep the local cluster's parent thread alive

    threading.Thread(target=init_and_stay, name="ray-driver", daemon=True).start()
    ready.wait()
    if "error" in outcome:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise StudioError(
            f"Could not start or reach {where}: {first_line(outcome['error'])}. Check {ADDRESS_VARIABLE} "
            "(auto, ray://host:10001, or unset for a local Ray)."
        )


# ----------------------------------------------------------------------------- resources


@dataclasses.dataclass
class JobResources:
    """What one Ray job asks the cluster for; the cluster's capacity is how many fit at once.

    Attributes:
        num_cpus: CPUs per job.
        num_gpus: GPUs per job; ``None`` asks for one when the cluster has GPUs, none otherwise.
    """

    num_cpus: float = 1.0
    num_gpus: float | None = None

    @classmethod
    def from_env(cls, environ=None) -> JobResources:
        """``TLCORE_RAY_CPUS_PER_JOB`` (default 1) and ``TLCORE_RAY_GPUS_PER_JOB`` (default: 1 if the cluster has GPUs).

        Raises:
            StudioError: a value that is not a non-negative number.
        """
        environ = os.environ if environ is None else environ
        return cls(_number(environ, CPUS_VARIABLE, 1.0), _number(environ, GPUS_VARIABLE, None))

    def options(self, cluster: dict) -> dict:
        """Ray ``.options()`` for one job on a cluster with ``cluster`` resources."""
        gpus = self.num_gpus if self.num_gpus is not None else (1.0 if cluster.get("GPU", 0) >= 1 else 0.0)
        return {"num_cpus": self.num_cpus, "num_gpus": gpus}

    def capacity(self, cluster: dict) -> int:
        """How many jobs the cluster runs at once (the others wait in the queue)."""
        options = self.options(cluster)
        resource = {"num_cpus": "CPU", "num_gpus": "GPU"}
        fits = [cluster.get(resource[name], 0) / need for name, need in options.items() if need]
        return max(int(min(fits)), 0) if fits else 1


def _number(environ, name: str, default):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise StudioError(f"{name} should be a number of at least 0. Received: {raw!r}.")
    return value


# ----------------------------------------------------------------------------- inside the worker


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


def portable_result(result: Any) -> Any:
    """What goes back to the server: the result without a Keras model (the run folder has it)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        names = {field.name for field in dataclasses.fields(result)}
        if "model" in names:
            return dataclasses.replace(result, model=None)
    return result


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
            return {"ok": True, "result": portable_result(target(self.job))}
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


# ----------------------------------------------------------------------------- the server side


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

    def start(self, owner: str, kind: str, title: str, target, run_dir: str | None = None, epochs: int = 0) -> Job:
        """Queues ``target(job)`` for Ray and returns the job at once (see :meth:`JobRegistry.start`).

        Raises:
            JobBusyError: this session already has a job running or queued.

        Ray is connected to in the job's thread (the first job may start a local Ray);
        an unreachable cluster fails the job with a message.
        """
        return super().start(owner, kind, title, target, run_dir=run_dir, epochs=epochs)

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
                job.error = outcome["message"]
                if "traceback" in outcome:
                    job.log.append("traceback", text=outcome["traceback"])
                job.status = "failed"
        except StudioError as error:
            job.error, job.status = str(error), "failed"
        except Exception as error:  # noqa: BLE001  - reported to the user, never raised into Streamlit
            job.error = f"Unexpected {type(error).__name__}: {first_line(error)}. Please report this."
            job.log.append("traceback", text=traceback.format_exc())
            job.status = "failed"
        finally:
            with self._turn:
                self._submitted.discard(job.job_id)
                self._turn.notify_all()
            job.finished = time.time()
            job.log.append("status", status=job.status, error=job.error)

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


_REMOTE_CLASSES: dict = {}


def _remote_host_class():
    """:class:`JobHost` as a Ray actor class, made once (Ray exports a class at each ``ray.remote``)."""
    if "host" not in _REMOTE_CLASSES:
        import ray

        _REMOTE_CLASSES["host"] = ray.remote(JobHost)
    return _REMOTE_CLASSES["host"]


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
        return {"ok": False, "expected": True, "message": message}


__all__ = [
    "JobHost",
    "JobResources",
    "RayJobRegistry",
    "RemoteJob",
    "connect_ray",
    "registry_from_env",
    "runner_from_env",
    "worker_environment",
]
