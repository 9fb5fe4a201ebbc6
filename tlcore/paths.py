"""Where the studio keeps things, and which folders the dashboard may read.

Four folders, each set by an environment variable with a default that works on a
laptop: the cache (``TLCORE_CACHE_DIR``), the dashboard's workspace
(``TLCORE_WORKSPACE``), the run store (``TLCORE_RUNS_DIR``) and the Keras model cache
(``KERAS_HOME``, as Keras defines it).

On a shared demo server any browser user can type a path; ``check_allowed`` keeps them
inside ``TLCORE_DATA_ROOTS``, the visitor's own folder of the workspace, the demo set and
downloads, and out of the folders that hold every visitor's things (the workspace, the run
store, the cache). The CLI is run by a local user on their own files and does not call it.

Whether the server is a single person's (``make run``: bound to this machine, so nobody
else reaches it) or a shared one (``make serve``, or ``TLCORE_SHARED=1`` behind a proxy)
decides two conveniences: allowing a folder from the Data page for the session
(:func:`allow_folder`) and remote downloads a visitor names (:func:`downloads_allowed`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from tlcore.caches import BoundedCache
from tlcore.errors import StudioError

DATA_ROOTS_VARIABLE = "TLCORE_DATA_ROOTS"
SHARED_VARIABLE = "TLCORE_SHARED"
DOWNLOADS_VARIABLE = "TLCORE_ALLOW_DOWNLOADS"
# The start of every refusal of a download a visitor names (GPT-2 and KerasHub image presets alike).
DOWNLOADS_REFUSED = (
    "This studio does not download models a visitor names (KerasHub presets, hf://, kaggle://): whoever runs "
    f"it has not allowed it ({DOWNLOADS_VARIABLE}=1; on by default only for `make run` on one's own machine). "
)
OWNER_ID = re.compile(r"[0-9a-f]{8,64}")
# Folders allowed from the page, per owner, until the server stops: bounded, the least
# recently active owners first out.
MAX_EXTRA_OWNERS = 256
MAX_EXTRA_ROOTS = 32
_EXTRA_ROOTS = BoundedCache("folders allowed from the page", max_items=MAX_EXTRA_OWNERS)
_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
OUTSIDE = "outside the folders this studio may read"
PRIVATE = "a folder the studio keeps for its visitors (uploads, runs, caches), not readable here"


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
    """The folders every dashboard visitor may read images and model files from.

    ``$TLCORE_DATA_ROOTS`` lists them, separated by ``os.pathsep`` (``:`` on Linux and
    macOS, ``;`` on Windows). Unset, it is the user's home folder and the current
    folder, so a person running the studio on their own machine can point at their
    photos; a demo server sets it to its data folders. Set but empty, only the studio's
    folders of each visitor (see ``studio_dirs``) are readable.

    Returns:
        The roots, with ``~`` expanded and symbolic links and ``..`` resolved.
    """
    configured = os.environ.get(DATA_ROOTS_VARIABLE)
    if configured is None:
        return [Path.home().resolve(), Path.cwd().resolve()]
    return [Path(entry).expanduser().resolve() for entry in configured.split(os.pathsep) if entry.strip()]


def sessions_dir() -> Path:
    """``<workspace>/sessions``: one folder per visitor (setup, uploads, built datasets, label decisions)."""
    return workspace_dir() / "sessions"


def owner_dir(owner: str) -> Path:
    """The visitor's own folder, ``<workspace>/sessions/<owner>``.

    Raises:
        ValueError: ``owner`` is not an owner id (hex digits), so it cannot name another folder.
    """
    if not isinstance(owner, str) or not OWNER_ID.fullmatch(owner):
        raise ValueError(f"Expected an owner id of hex digits. Received: {owner!r}.")
    return sessions_dir() / owner


def studio_dirs(owner: str | None = None) -> list[Path]:
    """The studio's own folders a visitor may read: their own folder in the workspace
    (uploads, built datasets), the demo set and the Keras datasets folder (downloads).
    Other visitors' folders are not among them."""
    public = [(cache_dir() / "datasets").resolve(), (keras_home() / "datasets").resolve()]
    return ([owner_dir(owner).resolve()] if owner else []) + public


def private_dirs() -> list[Path]:
    """Folders that hold every visitor's things (workspace, run store, cache): never read
    through a typed path, even inside a data root (by default the current folder holds
    ``workspace/`` and ``runs/``). A visitor reaches their own through :func:`studio_dirs`
    and their runs through the run store."""
    return [workspace_dir().resolve(), runs_dir().resolve(), cache_dir().resolve()]


def _resolved(path: str | Path) -> Path:
    # Symbolic links and ``..`` are resolved before comparing: a link or a climb inside
    # an allowed folder must not lead out of it.
    return Path(path).expanduser().resolve()


def refusal(path: str | Path, owner: str | None = None) -> str | None:
    """Why a dashboard visitor may not read ``path``, in a few words; ``None`` when they may.

    The order matters: the visitor's own folder, the demo set and downloads first; then the
    studio's shared folders are refused even inside a data root; then the data roots and the
    folders this visitor allowed for the session (:func:`allow_folder`).
    """
    resolved = _resolved(path)
    if any(resolved.is_relative_to(folder) for folder in studio_dirs(owner)):
        return None
    if any(resolved.is_relative_to(folder) for folder in private_dirs()):
        return PRIVATE
    if any(resolved.is_relative_to(root) for root in readable_roots(owner)):
        return None
    return OUTSIDE


def dataset_fence(root: str | Path, owner: str | None = None):
    """The rule for what a dashboard scan of the dataset folder ``root`` may read.

    ``root`` itself was checked when the visitor chose it (an extracted upload in the
    cache included). Inside it, a link is followed only where the visitor may read, and
    the studio's folders of every visitor are left out even when ``root`` holds them
    (the current folder holds ``workspace/`` and ``runs/`` by default).

    Returns:
        ``fence(path) -> reason or None`` for ``tlcore.data.scan.scan_folder``.
    """
    root = _resolved(root)
    own = studio_dirs(owner)
    inside = [folder for folder in private_dirs() if folder.is_relative_to(root) and folder != root]

    def fence(path: str | Path) -> str | None:
        resolved = _resolved(path)
        if any(resolved.is_relative_to(folder) for folder in own):
            return None
        if any(resolved.is_relative_to(folder) for folder in inside):
            return PRIVATE
        return None if resolved.is_relative_to(root) else refusal(resolved, owner)

    return fence


def is_allowed(path: str | Path, owner: str | None = None) -> bool:
    """Whether visitor ``owner`` may read ``path`` (after resolving ``~``, ``..`` and symbolic links)."""
    return refusal(path, owner) is None


def check_allowed(path: str | Path, owner: str | None = None) -> Path:
    """Returns ``path`` resolved if the dashboard visitor ``owner`` may read it; refuses it otherwise.

    ``..`` and symbolic links are resolved first, so neither can lead out of an
    allowed folder. The path does not need to exist.

    Args:
        path: a folder, zip or model file a dashboard user typed or picked.
        owner: the visitor's owner id (their own workspace folder is readable); ``None``
            reads no visitor's folder.

    Returns:
        The absolute, resolved path.

    Raises:
        StudioError: the path is outside ``TLCORE_DATA_ROOTS`` and the visitor's folders,
            or inside the studio's folders of other visitors; the message says which and
            what to do.
    """
    reason = refusal(path, owner)
    if reason is None:
        return _resolved(path)
    if reason != OUTSIDE:
        raise StudioError(
            f"{path} is {reason}: other visitors' uploads, datasets and runs are theirs. Use your own uploads "
            "on the Data page, or a folder outside the studio's folders."
        )
    configured = os.environ.get(DATA_ROOTS_VARIABLE)
    roots = ", ".join(str(root) for root in readable_roots(owner)) or "none"
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


# ----------------------------------------------------------------------------- one person's server or a shared one


def _flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    if value in _YES or value in _NO:
        return value in _YES
    raise StudioError(f"{name} should be 1 or 0 (true/false, yes/no, on/off). Received: {name}={value!r}.")


def is_local_server(address: str | None) -> bool:
    """Whether the dashboard serves one person on this machine.

    True when it listens on a loopback address only (``make run`` binds 127.0.0.1) and
    ``TLCORE_SHARED`` is not set; a server behind a reverse proxy listens on loopback too,
    so its operator sets ``TLCORE_SHARED=1``. No address means Streamlit's default: every
    network interface.

    Args:
        address: Streamlit's ``server.address`` option.

    Raises:
        StudioError: ``TLCORE_SHARED`` is set to something that is not a yes or a no.
    """
    if _flag(SHARED_VARIABLE):
        return False
    host = (address or "").strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return bool(host) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def downloads_allowed(local: bool) -> bool:
    """Whether a visitor may make the server download a model they name (KerasHub presets,
    ``hf://``, ``kaggle://``): ``TLCORE_ALLOW_DOWNLOADS`` when set, else only on a local
    server (``local``, see :func:`is_local_server`).

    Raises:
        StudioError: ``TLCORE_ALLOW_DOWNLOADS`` is set to something that is not a yes or a no.
    """
    allowed = _flag(DOWNLOADS_VARIABLE)
    return local if allowed is None else allowed


def extra_roots(owner: str | None) -> list[Path]:
    """The folders ``owner`` allowed for this server's lifetime (:func:`allow_folder`)."""
    if not owner:
        return []
    return list(_EXTRA_ROOTS.get(owner, ()))


def readable_roots(owner: str | None) -> list[Path]:
    """Every folder ``owner`` may read besides their own uploads: the data roots and those they allowed."""
    return data_roots() + extra_roots(owner)


def readable_roots_note(owner: str | None, local: bool) -> str:
    """The Data page's line under a folder path: which folders this visitor may read, and whether they can allow more."""
    roots = ", ".join(str(root) for root in readable_roots(owner)) or "no folder"
    note = f"This studio reads folders inside {roots} ({DATA_ROOTS_VARIABLE}), plus your own uploads; never the "
    note += "studio's folders of other visitors."
    return note + (" On your own machine you can allow another folder for this session." if local else "")


def can_allow(path: str | Path, owner: str, local: bool) -> bool:
    """Whether the Data page may offer to allow ``path`` (:func:`allow_folder` would accept it)."""
    return local and refusal(path, owner) == OUTSIDE and _resolved(path).is_dir()


def allow_folder(owner: str, path: str | Path, local: bool) -> Path:
    """Lets visitor ``owner`` read ``path`` until the server stops, on a local server only.

    A person running the studio on their own machine can then use a dataset outside their
    home folder without restarting with ``TLCORE_DATA_ROOTS``. On a shared server only the
    operator decides what visitors read.

    Args:
        owner: the visitor's owner id.
        path: an existing folder.
        local: whether the server is a local one (:func:`is_local_server`).

    Returns:
        The folder, resolved.

    Raises:
        StudioError: a shared server, a path that is not a folder, or a studio folder.
    """
    if not local:
        raise StudioError(
            f"Only a studio served on this machine for one person (make run) can allow a folder from the page. "
            f"Ask whoever runs it to add the folder to {DATA_ROOTS_VARIABLE}."
        )
    resolved = _resolved(path)
    owner_dir(owner)  # checks the id
    if not resolved.is_dir():
        raise StudioError(f"Expected an existing folder to allow. Received: {path}.")
    reason = refusal(resolved, owner)
    if reason is not None and reason != OUTSIDE:
        raise StudioError(f"{path} is {reason}; it cannot be allowed.")
    _EXTRA_ROOTS.update(
        owner, lambda roots: ([r for r in roots or () if r != resolved] + [resolved])[-MAX_EXTRA_ROOTS:]
    )
    return resolved
