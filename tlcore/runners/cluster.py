"""Connecting to Ray, and what one job asks the cluster for."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

from tlcore.errors import StudioError, first_line

ADDRESS_VARIABLE = "TLCORE_RAY_ADDRESS"
CPUS_VARIABLE = "TLCORE_RAY_CPUS_PER_JOB"
GPUS_VARIABLE = "TLCORE_RAY_GPUS_PER_JOB"
# Passed to every Ray worker: a cluster started elsewhere has its own environment.
FORWARDED_VARIABLES = ("KERAS_HOME", "TF_CPP_MIN_LOG_LEVEL", "TL_SHARED_DIR")
FORWARDED_PREFIXES = ("TLCORE_",)
DEFAULT_OBJECT_STORE_BYTES = 512 * 1024**2


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
            "TLCORE_JOB_RUNNER to train in the server."
        ) from None
    with _CONNECT_LOCK:
        if ray.is_initialized():
            return
        options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address:
            # A cluster started elsewhere does not have this code: ship the tlcore package.
            options.update(address=address, runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1])]})
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
