"""Extracting an uploaded zip safely: the guards against hostile archives, in one place.

Nothing may land outside the destination (``..``, absolute paths and symbolic links are
refused); the number of entries, the total size and each entry's compression ratio are
bounded, both as declared and as actually written. Any refusal removes everything
extracted so far.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path

from tlcore.data.common import DEFAULT_LIMITS, Limits, is_ignored, short_reason
from tlcore.data.scan import find_dataset_root
from tlcore.errors import StudioError


def extract_zip(zip_path: str | Path, destination: str | Path, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Extracts a zip safely and returns the folder that holds the class folders.

    No entry may land outside ``destination`` (``..``, absolute paths and symlinks are
    refused), and the total size, entry count and compression ratio are bounded, both
    as declared and as actually written. ``__MACOSX``, ``.DS_Store`` and hidden files
    are not extracted.

    Raises:
        StudioError: the zip is corrupt, hostile or over a limit; nothing is left behind.
    """
    destination = Path(destination)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise StudioError(f"{Path(zip_path).name} is not a readable zip file ({short_reason(error)}).") from None
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with archive:
            members = _safe_members(archive, destination.resolve(), limits)
            written = 0
            for info, target in members:
                target.parent.mkdir(parents=True, exist_ok=True)
                written = _copy_bounded(archive, info, target, written, limits)
    except (StudioError, zipfile.BadZipFile, OSError, RuntimeError, EOFError) as error:
        shutil.rmtree(destination, ignore_errors=True)
        if isinstance(error, StudioError):
            raise
        raise StudioError(f"{Path(zip_path).name} could not be extracted ({short_reason(error)}).") from None
    return find_dataset_root(destination)


def _safe_members(archive: zipfile.ZipFile, root: Path, limits: Limits) -> list[tuple[zipfile.ZipInfo, Path]]:
    infos = archive.infolist()
    if len(infos) > limits.max_zip_files:
        raise StudioError(f"The zip has {len(infos):,} entries, over the {limits.max_zip_files:,} limit.")
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_zip_bytes:
        raise StudioError(
            f"The zip expands to {declared / 2**30:.1f} GB, over the {limits.max_zip_bytes / 2**30:.0f} GB limit."
        )
    members = []
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise StudioError(f"The zip entry {name!r} points outside the extraction folder; the zip is refused.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise StudioError(f"The zip entry {name!r} is a symbolic link; links are refused.")
        if info.is_dir() or any(is_ignored(part) for part in parts if part):
            continue
        if info.compress_size and info.file_size / info.compress_size > limits.max_compression_ratio:
            raise StudioError(
                f"The zip entry {name!r} is compressed {info.file_size / info.compress_size:.0f}:1, "
                f"over the {limits.max_compression_ratio:.0f}:1 limit (zip bomb guard)."
            )
        target = (root / "/".join(p for p in parts if p)).resolve()
        if not target.is_relative_to(root):
            raise StudioError(f"The zip entry {name!r} points outside the extraction folder; the zip is refused.")
        members.append((info, target))
    return members


def _copy_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, written: int, limits: Limits) -> int:
    # Declared sizes can lie: count what is actually written.
    entry_written = 0
    with archive.open(info) as source, open(target, "wb") as sink:
        while chunk := source.read(1 << 20):
            entry_written += len(chunk)
            written += len(chunk)
            if entry_written > max(info.file_size, 1) or written > limits.max_zip_bytes:
                raise StudioError(
                    f"The zip entry {info.filename!r} expands beyond its declared size; the zip is refused."
                )
            sink.write(chunk)
    return written
