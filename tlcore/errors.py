"""Errors a user can act on.

Every error raised for bad input says what was expected, what was received and what
to do. Pages show them with ``st.error``; the CLI prints one line and exits with 2.
Anything else is a bug, and :func:`unexpected` is the one way it is worded.
"""

import traceback


class StudioError(ValueError):
    """Bad input or an unmet precondition that the user can fix."""


class WeightsUnavailableError(StudioError):
    """Pretrained weights could not be downloaded or found on disk."""


class UnsafeModelError(StudioError):
    """A user-supplied model file was refused (corrupt, unsafe or unusable)."""


class JobBusyError(StudioError):
    """Too many training jobs are running; try again later."""


def first_line(error: BaseException, limit: int = 500) -> str:
    """The first non-empty line of an error's message (its type name when it has none).

    Library errors often carry pages of detail; a user sees one line that names the
    problem. Long lines are cut at ``limit`` characters.
    """
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line[:limit]


def unexpected(error: BaseException) -> str:
    """What a user reads about an error no check anticipated (a bug): its type, its first line, a request.

    The one wording of the job runners, the CLI and the pages' last-resort handler.
    """
    return f"Unexpected {type(error).__name__}: {first_line(error)}. Please report this."


def job_failure(error: BaseException) -> tuple[str, str | None]:
    """How a job that raised ``error`` failed: the message its user reads, and a traceback for the log.

    Bad input and unreadable files (``ValueError``, which :class:`StudioError` is, and
    ``OSError``) are the user's to fix: their own message says what to do, no traceback.
    Anything else is a bug: :func:`unexpected` and the traceback (for the report).

    Returns:
        ``(message, traceback)``; the traceback is ``None`` for an expected error.
    """
    if isinstance(error, ValueError | OSError):
        return str(error), None
    return unexpected(error), "".join(traceback.format_exception(error))
