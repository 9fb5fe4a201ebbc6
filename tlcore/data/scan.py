"""Scanning a dataset folder: what can be used, and every file that cannot, with why.

A dataset is a folder with one sub-folder per class. Files that cannot be used are
skipped and listed with the reason; nothing is dropped silently.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tlcore.caches import BoundedCache
from tlcore.data.common import DEFAULT_LIMITS, IMAGE_SUFFIXES, Limits, is_ignored, short_reason
from tlcore.data.images import check_image_file
from tlcore.errors import StudioError
from tlcore.words import plural

MIN_CLASSES = 2  # a classifier needs at least two classes with images


@dataclass(frozen=True)
class ImageItem:
    """One usable image: its path, class label and content digest."""

    path: str
    label: str
    digest: str


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why."""

    path: str
    reason: str


@dataclass
class DatasetScan:
    """The result of scanning a dataset folder.

    Attributes:
        root: the folder scanned.
        classes: class labels, sorted; index = label id.
        items: usable images.
        skipped: unusable files with reasons.
        warnings: dataset-level problems (too-small classes, imbalance, empty classes).
    """

    root: str
    classes: list[str]
    items: list[ImageItem]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(item.label for item in self.items)
        return {label: counter.get(label, 0) for label in self.classes}

    def to_dict(self) -> dict:
        """A JSON-ready summary (the ``inspect`` CLI prints it)."""
        return {
            "root": self.root,
            "classes": self.classes,
            "counts": self.counts,
            "num_images": len(self.items),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "warnings": self.warnings,
        }


def scan_folder(
    root: str | Path,
    min_images_per_class: int = 5,
    limits: Limits = DEFAULT_LIMITS,
    workers: int | None = None,
    skip_placeholders: bool = True,
    fence: Callable[[Path], str | None] | None = None,
) -> DatasetScan:
    """Scans a folder of class sub-folders and reports what can be used.

    Images in nested folders count for the class folder they are in. Hidden files,
    ``__MACOSX`` and ``.DS_Store`` are ignored; any other file that is not a usable
    image is listed in ``skipped`` with its reason. Symbolic links to files and class
    folders are followed when ``fence`` lets them lead where they lead (links to folders
    deeper down are listed, not followed: a link loop cannot trap the scan).

    Args:
        root: the dataset folder.
        min_images_per_class: classes with fewer usable images get a warning.
        limits: pixel and file-size bounds.
        workers: decoding threads (default: CPU count).
        skip_placeholders: skip blank or placeholder graphics (see ``check_image_file``).
        fence: the dashboard's rule, ``fence(path) -> reason or None`` for every folder and
            linked file (``tlcore.paths.dataset_fence``): what it refuses is skipped with
            its reason. ``None`` (the CLI) reads everything the folder leads to.

    Raises:
        StudioError: the folder does not exist or has no class sub-folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise StudioError(f"Dataset folder not found: {root}. Expected a folder with one sub-folder per class.")
    fence = fence or _open
    skipped = [
        Skipped(str(p), "not inside a class folder")
        for p in sorted(root.iterdir())
        if p.is_file() and not is_ignored(p.name)
    ]
    class_dirs = _class_folders(root, fence, skipped)
    if not class_dirs:
        raise StudioError(
            f"No class folders in {root}. Expected one sub-folder per class, e.g. {root}/cats/*.jpg and {root}/dogs/*.jpg."
        )
    candidates = _candidates(class_dirs, fence, skipped)
    items: list[ImageItem] = []
    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        for (path, label), outcome in zip(
            candidates, pool.map(lambda c: _check_or_reason(c[0], limits, skip_placeholders), candidates)
        ):
            if outcome[0]:
                items.append(ImageItem(str(path), label, outcome[1]))
            else:
                skipped.append(Skipped(str(path), outcome[1]))
    classes = [d.name for d in class_dirs]
    scan = DatasetScan(str(root), classes, items, skipped)
    scan.warnings = dataset_warnings(scan.counts, min_images_per_class)
    return scan


def _class_folders(root: Path, fence: Callable[[Path], str | None], skipped: list[Skipped]) -> list[Path]:
    """The class folders the fence lets the scan read; the others are added to ``skipped``."""
    kept = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not is_ignored(p.name)):
        reason = fence(folder)
        if reason is None:
            kept.append(folder)
        else:
            skipped.append(Skipped(str(folder), _link_words(folder, reason)))
    return kept


def _candidates(class_dirs: list[Path], fence, skipped: list[Skipped]) -> list[tuple[Path, str]]:
    """``(image file, class)`` for every file with an image suffix; other files go to ``skipped``."""
    candidates = []
    for class_dir in class_dirs:
        for path, reason in _walk_files(class_dir, fence):
            if reason:
                skipped.append(Skipped(str(path), reason))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                candidates.append((path, class_dir.name))
            else:
                skipped.append(Skipped(str(path), f"not an image file ({path.suffix or 'no extension'})"))
    return candidates


def _open(path: Path) -> None:
    return None


def _link_words(path: Path, reason: str) -> str:
    """The fence's reason, saying where a link leads (a refused link is the usual case)."""
    if path.is_symlink():
        return f"a link to {Path(path).resolve()}, {reason}; not followed"
    return f"{reason}; not read"


def _walk_files(folder: Path, fence: Callable[[Path], str | None]) -> Iterator[tuple[Path, str | None]]:
    """Files under ``folder`` with ``None``, or with the reason they are not read."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        kept = []
        for name in sorted(d for d in dirnames if not is_ignored(d)):
            if (here / name).is_symlink():
                yield here / name, "a link to a folder inside a class folder; not followed"
            elif (reason := fence(here / name)) is not None:
                yield here / name, _link_words(here / name, reason)
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if is_ignored(name):
                continue
            path = here / name
            reason = fence(path) if path.is_symlink() else None
            yield path, (_link_words(path, reason) if reason else None)


# (usable, reason) per (path, size, modification time, limits, placeholder choice).
_CHECKED = BoundedCache("image-file verdicts", max_items=200_000)


def _check_or_reason(path: Path, limits: Limits, skip_placeholders: bool) -> tuple[bool, str]:
    # Re-scanning an unchanged file (same path, size and modification time) reuses the
    # verdict: experimenting means scanning the same folder again and again.
    try:
        stat_result = path.stat()
    except OSError as error:
        return False, f"could not be read ({short_reason(error)})"
    key = (str(path), stat_result.st_size, stat_result.st_mtime_ns, limits, skip_placeholders)
    known = _CHECKED.get(key)
    if known is not None:
        return known
    try:
        outcome = (True, check_image_file(path, limits, skip_placeholders))
    except StudioError as error:
        outcome = (False, str(error))
    except OSError as error:
        outcome = (False, f"could not be read ({short_reason(error)})")
    except Exception as error:  # noqa: BLE001  - one odd file must never abort the whole scan
        outcome = (False, f"could not be checked ({type(error).__name__}: {short_reason(error)})")
    return _CHECKED.put(key, outcome)


def folder_stamp(source: str | Path) -> float:
    """What changes when images are added to or removed from a dataset folder (its and its class folders'
    modification times), or a file (a .zip) is replaced: part of a cached scan's key. 0.0 when unreadable."""
    path = Path(source)
    try:
        if not path.is_dir():
            return path.stat().st_mtime
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
    except OSError:
        return 0.0


def dataset_warnings(counts: dict[str, int], min_images_per_class: int) -> list[str]:
    """Dataset-level problems a user should know about before training."""
    warnings = []
    usable = {label: n for label, n in counts.items() if n > 0}
    for label, count in counts.items():
        if count == 0:
            warnings.append(f"Class '{label}' has no usable images; it is left out.")
        elif count < min_images_per_class:
            warnings.append(
                f"Class '{label}' has only {plural(count, 'image')} (fewer than {min_images_per_class}); add more."
            )
    if len(usable) < MIN_CLASSES:
        warnings.append(f"Fewer than {MIN_CLASSES} classes have images; a classifier needs at least {MIN_CLASSES}.")
    elif max(usable.values()) >= 3 * min(usable.values()):
        big = max(usable, key=usable.get)
        small = min(usable, key=usable.get)
        warnings.append(
            f"Classes are imbalanced: '{big}' has {usable[big]} images, '{small}' only {usable[small]}; "
            "accuracy will favour the larger class."
        )
    return warnings


def find_dataset_root(folder: Path) -> Path:
    """Descends through wrapper folders (``data.zip → data/ → classes``) to the class folders."""
    folder = Path(folder)
    while True:
        entries = [p for p in folder.iterdir() if not is_ignored(p.name)]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and len(entries) == 1:
            folder = dirs[0]
        else:
            return folder
