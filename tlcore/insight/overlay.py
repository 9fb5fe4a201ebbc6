"""The user's label decisions ("relabel", "exclude") as an overlay on a dataset folder.

The user's files are never moved or changed: decisions are kept in the workspace,
one JSON file per dataset folder and per owner (a dashboard visitor's decisions are
theirs: in their own folder, ``sessions/<owner>/overlays/``; the CLI's are in
``overlays/``), and applied to the scanned items when a dataset is
loaded (``tlcore.data.pipeline.load_dataset`` calls :func:`apply_stored_overlay`).
A decision names the file by its path inside the dataset folder and remembers the
file's content digest: a file that changed since is no longer covered.

No TensorFlow and no other tlcore data module is imported here (``tlcore.data.pipeline`` imports this).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tlcore.errors import StudioError
from tlcore.paths import owner_dir, workspace_dir

ACTIONS = ("relabel", "exclude")


@dataclass
class Overlay:
    """Decisions for one dataset folder.

    Attributes:
        root: the dataset folder (resolved).
        entries: path inside ``root`` → ``{"action", "label", "digest"}``; ``label`` is
            the new class for ``"relabel"`` and ``None`` for ``"exclude"``.
        owner: whose decisions these are (``None``: the CLI's).
    """

    root: str
    entries: dict[str, dict] = field(default_factory=dict)
    owner: str | None = None

    def relabel(self, path: str, digest: str, label: str) -> None:
        self.entries[self._key(path)] = {"action": "relabel", "label": label, "digest": digest}

    def exclude(self, path: str, digest: str) -> None:
        self.entries[self._key(path)] = {"action": "exclude", "label": None, "digest": digest}

    def undo(self, path: str) -> None:
        self.entries.pop(self._key(path), None)

    def decision(self, path: str) -> dict | None:
        """The decision about ``path`` (an absolute path or one inside ``root``), or ``None``."""
        return self.entries.get(self._key(path))

    def _key(self, path: str) -> str:
        # Scans give paths as the user typed the folder (relative or absolute): compare resolved.
        candidate = Path(path)
        try:
            return candidate.resolve().relative_to(self.root).as_posix()
        except ValueError:
            if candidate.is_absolute():
                raise StudioError(
                    f"Expected an image inside the dataset folder {self.root}. Received: {path}."
                ) from None
            return candidate.as_posix()  # already a path inside the folder

    def __len__(self) -> int:
        return len(self.entries)


def overlay_path(root: str | Path, owner: str | None = None) -> Path:
    """Where ``owner``'s overlay of a dataset folder is kept: ``<their folder>/overlays/<hash>.json``
    in the workspace (``$TLCORE_WORKSPACE/overlays/<hash>.json`` for ``owner=None``, the CLI)."""
    resolved = str(Path(root).resolve())
    folder = owner_dir(owner) if owner is not None else workspace_dir()
    return folder / "overlays" / f"{hashlib.sha256(resolved.encode()).hexdigest()[:24]}.json"


def load_overlay(root: str | Path, owner: str | None = None) -> Overlay:
    """``owner``'s stored overlay of ``root``; an empty one when there is none (or it is unreadable)."""
    resolved = str(Path(root).resolve())
    path = overlay_path(resolved, owner)
    try:
        raw = json.loads(path.read_text())
        return Overlay(resolved, {key: dict(value) for key, value in raw["entries"].items()}, owner)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Overlay(resolved, owner=owner)


def save_overlay(overlay: Overlay) -> Path:
    """Writes the overlay (in its owner's folder) atomically; an empty overlay removes the file."""
    path = overlay_path(overlay.root, overlay.owner)
    if not overlay.entries:
        path.unlink(missing_ok=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"root": overlay.root, "entries": overlay.entries}, indent=1, sort_keys=True))
    os.replace(temporary, path)
    return path


def apply_overlay(items: list, overlay: Overlay, classes: list[str] | None = None) -> list:
    """The items with the overlay's decisions applied: relabelled, or left out.

    Args:
        items: scanned images (``path``, ``label``, ``digest``; e.g. ``ImageItem``).
        overlay: the decisions for the folder the items come from.
        classes: the known classes; a relabel to any other class is ignored.

    Returns:
        A new list; the items themselves are frozen dataclasses and are not changed.
    """
    if not overlay.entries:
        return list(items)
    kept = []
    for item in items:
        try:
            decision = overlay.decision(item.path)
        except StudioError:
            decision = None
        if decision is None or decision.get("digest") != item.digest:
            kept.append(item)  # no decision, or the file changed since it was made
        elif decision["action"] == "relabel" and (classes is None or decision["label"] in classes):
            kept.append(dataclasses.replace(item, label=decision["label"]))
        elif decision["action"] != "exclude":
            kept.append(item)
    return kept


def apply_stored_overlay(scan, owner: str | None = None):
    """A scan with ``owner``'s stored overlay of its folder applied (the same scan when there is none).

    This is the hook ``load_dataset`` calls after every ``scan_folder``: training, the
    CLI and every analysis then see the user's decisions (a visitor's own, never another's).
    """
    overlay = load_overlay(scan.root, owner)
    if not overlay.entries:
        return scan
    return dataclasses.replace(scan, items=apply_overlay(scan.items, overlay, scan.classes))


def decision_folder(source: str) -> str:
    """The folder label decisions about ``source`` are kept for: a .zip or the demo set resolved to the folder
    its images are read from; a source that does not resolve (gone, refused) stays itself."""
    from tlcore.data.sources import resolve_source

    try:
        return str(resolve_source(source))
    except StudioError:
        return source


def images_left(scans: list, owner: str | None = None) -> str:
    """What ``owner``'s label decisions leave of each scanned folder: "38 of 40 in bees · 9 of 10 in val"."""
    return " · ".join(
        f"{len(apply_stored_overlay(scan, owner).items)} of {len(scan.items)} in {Path(scan.root).name}"
        for scan in scans
    )


def decision_words(decision: dict) -> str:
    """A stored decision in words: "excluded" or "relabelled → bees"."""
    return "excluded" if decision["action"] == "exclude" else f"relabelled → {decision['label']}"


def root_of(path: str, roots: list[str]) -> str:
    """The dataset folder among ``roots`` (training, validation) that holds ``path``.

    Raises:
        StudioError: none of them does.
    """
    resolved = Path(path).resolve()
    for root in roots:
        if root and resolved.is_relative_to(Path(root).resolve()):
            return str(Path(root).resolve())
    raise StudioError(f"Expected an image inside {', '.join(filter(None, roots))}. Received: {path}.")


def decisions(roots: list[str], owner: str | None = None) -> list[tuple[str, dict]]:
    """Every decision ``owner`` stored about the dataset folders ``roots``, as ``(absolute path, decision)``.

    What the Data page lists (and offers to undo) whether or not an analysis ran in this
    browser session: the decisions live in the workspace, so they survive a refresh.
    """
    found = []
    for root in dict.fromkeys(str(Path(root).resolve()) for root in roots if root):
        overlay = load_overlay(root, owner)
        found += [(str(Path(root) / key), dict(entry)) for key, entry in sorted(overlay.entries.items())]
    return found


def record(
    roots: list[str], path: str, digest: str, action: str, label: str | None = None, owner: str | None = None
) -> Overlay:
    """Stores one of ``owner``'s decisions (``"relabel"`` to ``label``, ``"exclude"``, or ``"undo"``) about ``path``.

    Args:
        roots: the dataset folders (training, validation); the one holding ``path`` is used.
        path: the image.
        digest: its content digest (from the scan).
        action: ``"relabel"``, ``"exclude"`` or ``"undo"``.
        label: the new class for ``"relabel"``.
        owner: the visitor deciding (``None``: the CLI); an undo touches only their own.

    Returns:
        The saved overlay of that folder.
    """
    overlay = load_overlay(root_of(path, roots), owner)
    if action == "relabel":
        if not label:
            raise StudioError("Relabelling needs the new class. Received: no label.")
        overlay.relabel(path, digest, label)
    elif action == "exclude":
        overlay.exclude(path, digest)
    elif action == "undo":
        overlay.undo(path)
    else:
        raise StudioError(f"Unknown action. Expected one of {[*ACTIONS, 'undo']}. Received: {action!r}.")
    save_overlay(overlay)
    return overlay


def stamp(roots: list[str], owner: str | None = None) -> tuple:
    """Changes whenever ``owner`` saves a decision about one of ``roots`` (for caches keyed on it)."""
    stamps = []
    for root in filter(None, roots):
        try:
            stamps.append(overlay_path(root, owner).stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)
