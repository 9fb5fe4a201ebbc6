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
first come first served; their log says ``queued (position N)``. A worker that
dies mid-job fails the job and its run folder with a message.

Run folders and datasets must be on storage every worker sees under the same path
(one machine, or a shared mount): the worker writes the run folder itself.

Modules: ``cluster`` (connecting to Ray, what a job asks for), ``host`` (the job inside
its worker), ``ray_registry`` (the server side). Ray itself is imported only when used.
"""

from __future__ import annotations

import os

from tlcore.errors import StudioError
from tlcore.jobs import JobRegistry
from tlcore.runners.cluster import ADDRESS_VARIABLE, JobResources
from tlcore.runners.ray_registry import RayJobRegistry

RUNNER_VARIABLE = "TLCORE_JOB_RUNNER"
RUNNERS = ("thread", "ray")


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
