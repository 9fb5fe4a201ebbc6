"""Ray Data plumbing shared by feature extraction and batch prediction.

Both spread a list of image paths over a pool of Ray Data actors (``map_batches`` with
a callable class that loads its model once): these helpers build the dataset of paths,
size the actor pool, keep Ray Data quiet on the CLI's streams and turn a worker's
failure into one line. Which engine a command may use (``local`` or ``ray``) is checked
here too, once for both.
"""

from __future__ import annotations

import math
import os

from tlcore.errors import StudioError, first_line

ENGINES = ("local", "ray")


def check_engine(engine: str, workers: int) -> None:
    """Raises ``StudioError`` for an unknown engine or a worker count below 1."""
    if engine not in ENGINES:
        raise StudioError(f"Unknown engine. Expected one of {list(ENGINES)}. Received: --engine {engine}.")
    if workers < 1:
        raise StudioError(f"Expected at least 1 worker. Received: --workers {workers}.")


def ray_dataset(paths: list[str], batch_size: int):
    """Paths as a Ray dataset of ``{"index", "path"}`` rows, one block per batch."""
    import ray

    # Absolute paths: a worker's current folder may differ from this process's.
    rows = [{"index": index, "path": os.path.abspath(path)} for index, path in enumerate(paths)]
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))


def actor_pool(workers: int) -> dict:
    """``map_batches`` arguments for ``workers`` actors, each with a GPU when the cluster has them."""
    import ray

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return {"compute": ray.data.ActorPoolStrategy(size=workers), "num_cpus": 1, "num_gpus": gpus}


def quiet_ray_data() -> None:
    """No progress bars or info logs on the CLI's streams."""
    import logging

    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def ray_batches(dataset):
    """Batches as Ray Data produces them; a failed worker becomes one line that names the cause."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
    except StudioError:
        raise
    except Exception as error:  # noqa: BLE001  - Ray wraps the worker's error in its own types
        cause = getattr(error, "cause", None) or error
        raise StudioError(f"A Ray worker failed: {first_line(cause)}") from None
