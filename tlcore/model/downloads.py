"""ImageNet weight downloads that failed, remembered per process for a while.

Without internet every visit to the Model page tried the download again: a wait, then the
same failure. A failure is remembered (for at most :data:`MAX_REMEMBERED` weight files) and
said again at once; the download is tried again when the file has appeared where Keras looks
for it, after :data:`RETRY_AFTER_SECONDS`, or when the visitor asks (:func:`forget`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from tlcore.caches import BoundedCache
from tlcore.errors import WeightsUnavailableError
from tlcore.paths import keras_models_dir

RETRY_AFTER_SECONDS = 600.0
MAX_REMEMBERED = 32
_URL = re.compile(r"https?://[^\s:]+(?::\d+)?[^\s:]*")


@dataclass(frozen=True)
class FailedDownload:
    """One weights file that could not be downloaded.

    Attributes:
        key: the weights file in this process's memory (see :func:`remember_failure`).
        name: the architecture ("MobileNetV2").
        url: where Keras tried to download it from ("" when the error did not say).
        when: ``time.time()`` of the failure.
    """

    key: str
    name: str
    url: str
    when: float

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1] if self.url else ""

    def error(self) -> WeightsUnavailableError:
        """What the visitor reads, the first time and every time it is remembered.

        Its ``download`` attribute is the key to :func:`forget` when the visitor asks to try again.
        """
        place = keras_models_dir() / self.filename if self.filename else keras_models_dir()
        source = f"download {self.url} on a computer with internet" if self.url else "the keras.applications file"
        tried = time.strftime("%H:%M", time.localtime(self.when))
        error = WeightsUnavailableError(
            f"No internet on the server: the ImageNet weights for {self.name} could not be downloaded "
            f"(tried at {tried}; tried again when the file appears, after {RETRY_AFTER_SECONDS / 60:.0f} "
            f"minutes, or when you ask). Put the file at {place} ({source}; KERAS_HOME moves that folder), "
            "or choose random weights ('none'), a weights file you have, or your own Keras model file as the backbone."
        )
        error.download = self.key
        return error


_FAILED = BoundedCache("failed weight downloads", max_items=MAX_REMEMBERED)


def remember_failure(key: str, name: str, error: Exception, now: float | None = None) -> WeightsUnavailableError:
    """Remembers that ``key``'s weights (one file: architecture and input size) failed to download.

    Returns:
        The error to raise (it names the file and where to put it).
    """
    urls = _URL.findall(str(error))
    failed = FailedDownload(key, name, urls[0] if urls else "", time.time() if now is None else now)
    _FAILED.put(key, failed)
    return failed.error()


def known_failure(key: str, now: float | None = None) -> WeightsUnavailableError | None:
    """The remembered failure of ``key`` to raise again without a download, or ``None``: try it.

    ``None`` when it never failed, when the failure is older than :data:`RETRY_AFTER_SECONDS`,
    or when the file has appeared in the Keras cache meanwhile (then it is forgotten).
    """
    failed = _FAILED.get(key)
    now = time.time() if now is None else now
    if failed is None:
        return None
    if now - failed.when >= RETRY_AFTER_SECONDS or (failed.filename and _arrived(failed)):
        _FAILED.pop(key)
        return None
    return failed.error()


def _arrived(failed: FailedDownload) -> bool:
    return (keras_models_dir() / failed.filename).is_file()


def forget(key: str | None = None) -> bool:
    """Forgets ``key``'s failure (every one when ``None``): the next load downloads again. Whether one was kept."""
    if key is None:
        had = len(_FAILED) > 0
        _FAILED.clear()
        return had
    return _FAILED.pop(key) is not None


def remembered() -> list[str]:
    """The keys whose failure is remembered, oldest first."""
    return _FAILED.keys()
