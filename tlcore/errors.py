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
