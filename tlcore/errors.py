"""Errors a user can act on.

Every error raised for bad input says what was expected, what was received and what
to do. Pages show them with ``st.error``; the CLI prints one line and exits with 2.
"""


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
