"""Where the studio keeps things, and which folders the dashboard may read.

Four folders, each set by an environment variable with a default that works on a
laptop: the cache (``TLCORE_CACHE_DIR``), the dashboard's workspace
(``TLCORE_WORKSPACE``), the run store (``TLCORE_RUNS_DIR``) and the Keras model cache
(``KERAS_HOME``, as Keras defines it).

On a shared demo server any browser user can type a path; ``check_allowed`` keeps them
inside ``TLCORE_DATA_ROOTS`` (and the studio's own folders). The CLI is run by a local
user on their own files and does not call it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tlcore.errors import StudioError

DATA_ROOTS_VARIABLE = "TLCORE_DATA_ROOTS"


def cache_dir() -> Path:
    """``$TLCORE_CACHE_DIR`` (default ``~/.cache/tlcore``): derived data that can be rebuilt."""
    return Path(os.environ.get("TLCORE_CACHE_DIR") or Path.home() / ".cache" / "tlcore")


def workspace_dir() -> Path:
    """``$TLCORE_WORKSPACE`` (default ``./workspace``): uploads and datasets built in the dashboard."""
    return Path(os.environ.get("TLCORE_WORKSPACE") or "workspace")


def runs_dir() -> Path:
    """``$TLCORE_RUNS_DIR`` (default ``./runs``): where the dashboard keeps runs."""
    return Path(os.environ.get("TLCORE_RUNS_DIR") or "runs")


def keras_home() -> Path:
    """``$KERAS_HOME`` (default ``~/.keras``, or ``/tmp/.keras`` when that cannot be created), as Keras picks it."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(home, os.W_OK) and not os.path.exists(home):
        parent = os.path.dirname(home) or "."
        if not os.access(parent, os.W_OK):
            home = os.path.join("/tmp", ".keras")
    return Path(home)


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights (``$KERAS_HOME/models``, as Keras defines it)."""
    return keras_home() / "models"


def data_roots() -> list[Path]:
    """The folders a dashboard user may read images and model files from.

    ``$TLCORE_DATA_ROOTS`` lists them, separated by ``os.pathsep`` (``:`` on Linux and
    macOS, ``;`` on Windows). Unset, it is the user's home folder and the current
    folder, so a person running the studio on their own machine can point at their
    photos; a demo server sets it to its data folders. Set but empty, only the studio's
    own folders (see ``studio_dirs``) are readable.

    Returns:
        The roots, with ``~`` expanded and symbolic links and ``..`` resolved.
    """
    configured = os.environ.get(DATA_ROOTS_VARIABLE)
    if configured is None:
        return [Path.home().resolve(), Path.cwd().resolve()]
    return [Path(entry).expanduser().resolve() for entry in configured.split(os.pathsep) if entry.strip()]


def studio_dirs() -> list[Path]:
    """The studio's own folders, always readable: workspace (uploads, built datasets),
    cache (extracted zips, the demo set) and the Keras datasets folder (downloads)."""
    return [workspace_dir().resolve(), cache_dir().resolve(), (keras_home() / "datasets").resolve()]


def _resolved(path: str | Path) -> Path:
    # Symbolic links and ``..`` are resolved before comparing: a link or a climb inside
    # an allowed folder must not lead out of it.
    return Path(path).expanduser().resolve()


def is_allowed(path: str | Path) -> bool:
    """Whether ``path`` (after resolving ``~``, ``..`` and symbolic links) lies inside an allowed folder."""
    resolved = _resolved(path)
    return any(resolved.is_relative_to(root) for root in data_roots() + studio_dirs())


def check_allowed(path: str | Path) -> Path:
    """Returns ``path`` resolved if the dashboard may read it; refuses it otherwise.

    ``..`` and symbolic links are resolved first, so neither can lead out of an
    allowed folder. The path does not need to exist.

    Args:
        path: a folder, zip or model file a dashboard user typed or picked.

    Returns:
        The absolute, resolved path.

    Raises:
        StudioError: the path is outside ``TLCORE_DATA_ROOTS`` and the studio's own
            folders; the message names the setting and the allowed folders.
    """
    if is_allowed(path):
        return _resolved(path)
    configured = os.environ.get(DATA_ROOTS_VARIABLE)
    roots = ", ".join(str(root) for root in data_roots()) or "none"
    where = (
        f"{DATA_ROOTS_VARIABLE} allows: {roots}"
        if configured is not None
        else f"{DATA_ROOTS_VARIABLE} is not set, so only your home folder and the current folder are allowed: {roots}"
    )
    raise StudioError(
        f"{path} is outside the folders this studio may read ({where}). Choose a path inside one of them, "
        f"upload the files instead, or ask whoever runs the studio to add the folder to {DATA_ROOTS_VARIABLE} "
        f"(folders separated by {os.pathsep!r})."
    )
