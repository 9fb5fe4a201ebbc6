"""One audience request, start to end: the link's room, its limits, the answer, the tally, and the
photo kept only while the presenter collects.

The audience page calls :func:`answer` and nothing else of the studio: it reaches the one run its
token opens, with the model the caller's shared loader gives (one loaded model per run for every
phone of the server), and nothing else.

A blank or placeholder photo (a 1x1 PNG, a solid colour, one smaller than every training image)
gets the Predict page's pixel check (:func:`tlcore.inference.input_check.pixel_reason`, against the
run's training-image reference) and a plain warning instead of an answer: a classifier answers
such a picture with a confident bar that means nothing. It is not predicted, not counted in the
room's tally and never kept for the presenter's inbox. (Predict's second check, the distance to
the training images in the backbone's feature space, costs a second pass of the backbone per
photo: phones do not get it, so that thirty of them share the two cores with the presenter.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tlcore.errors import StudioError
from tlcore.paths import runs_dir
from tlcore.present.inbox import keep_photo
from tlcore.present.rooms import Room, RoomClosedError, RoomLimits, find_room, room_state
from tlcore.runs.store import Run, RunStore

CLOSED = "This link is not open: the presenter closed it, or it was never a link of this studio."


@dataclass
class Answer:
    """What a phone is shown: the top classes, whether the photo was kept for the presenter, and why
    not when it should have been (``note``: e.g. the inbox is full; the answer stands).

    ``warning``: why the photo got no answer (a blank or placeholder picture, see
    :func:`photo_warning`); ``result`` is then empty and nothing was counted or kept.
    """

    result: list[dict]
    kept: bool
    note: str = ""
    warning: str = ""


def room_run(token) -> tuple[Room, Run]:
    """The open room of ``token`` and its run (looked up again on every request: revoking ends it at once).

    Raises:
        RoomClosedError: an unknown or revoked token, or its run is gone.
    """
    room = find_room(token)
    if room is None:
        raise RoomClosedError(CLOSED)
    try:
        # The presenter's right to show this run was checked when the room was opened; the
        # store (as the operator) only finds the folder, a direct child of the runs folder.
        run = RunStore(runs_dir()).get(room.run_id)
    except StudioError:
        raise RoomClosedError(CLOSED) from None
    if not run.has_model:
        raise RoomClosedError(CLOSED)
    return room, run


def photo_warning(run: Run, data: bytes, reference_of: Callable[[Run], object] | None = None) -> str:
    """Why a phone's photo gets no answer, in a sentence for the phone; ``""`` for a photo.

    The Predict page's pixel check (:func:`tlcore.inference.input_check.pixel_reason`) with the
    run's training-image reference: a blank or placeholder picture, a drawing when the run was
    trained on photos, or an image smaller than every training image.

    Args:
        run: the presented run.
        data: the photo's bytes.
        reference_of: gives the run's input reference (a cached loader); default: read from the run folder.

    Raises:
        StudioError: the photo cannot be read (its reason).
    """
    from tlcore.inference.input_check import load_reference, pixel_reason

    reference = reference_of(run) if reference_of is not None else load_reference(run.path)
    reason = pixel_reason(data, reference)
    if reason is None:
        return ""
    classes = " or ".join(run.labels)
    return (
        f"This picture {reason}: the model would answer it with a class that means nothing. "
        f"Take a photo of {classes} and send that."
    )


def answer(
    token,
    phone: str,
    data: bytes,
    load_model: Callable[[Run], object],
    said: str | None = None,
    top_k: int = 3,
    limits: RoomLimits | None = None,
    reference_of: Callable[[Run], object] | None = None,
) -> Answer:
    """Predicts one audience photo for the room of ``token``.

    Args:
        token: the link's token.
        phone: the audience session's id (counts against the room's capacity and rate).
        data: the photo's bytes.
        load_model: gives the run's loaded model (shared by every phone: a bounded cache).
        said: the class the audience member says the photo shows (kept with it while collecting).
        top_k: how many classes to answer.
        limits: the room's limits (default :class:`RoomLimits`, used when the room is first counted).
        reference_of: gives the run's input reference (see :func:`photo_warning`).

    Returns:
        The answer; for a blank or placeholder picture no answer but its ``warning`` (not
        predicted, not counted in the tally, not kept).

    Raises:
        RoomClosedError: the link is not open.
        RoomLimitError: the room is full or asked too often.
        StudioError: the photo cannot be read (its reason).
    """
    from tlcore.inference.predict import predict_top_k

    room, run = room_run(token)
    state = room_state(room, limits)
    state.admit(phone)
    warning = photo_warning(run, data, reference_of)
    if warning:
        return Answer([], kept=False, warning=warning)
    started = time.perf_counter()
    result = predict_top_k(load_model(run), run.labels, [data], top_k)[0]
    state.record(result[0]["label"], time.perf_counter() - started)
    if not (room.collecting and said is not None and room.owner is not None):
        return Answer(result, kept=False)
    try:
        keep_photo(room.owner, run.run_id, run.labels, said, data)
    except StudioError as error:  # the answer is given all the same
        return Answer(result, kept=False, note=str(error))
    return Answer(result, kept=True)


def keep_said(token, data: bytes, said: str, reference_of: Callable[[Run], object] | None = None) -> str:
    """Keeps a photo already answered, with the class its sender chose after seeing the answer.

    The page asks the class per photo, after the answer, and keeps a photo once: a class carried
    over from the previous photo, or a second choice, filed photos under the wrong class. A
    blank or placeholder picture (:func:`photo_warning`) is never kept.

    Returns:
        ``""`` when the photo is in the presenter's inbox, else why not (the link closed,
        the presenter stopped collecting, the inbox is full, …).
    """
    try:
        room, run = room_run(token)
    except StudioError as error:
        return str(error)
    if not (room.collecting and room.owner is not None):
        return "the presenter is not collecting photos now."
    try:
        warning = photo_warning(run, data, reference_of)
        if warning:
            return warning
        keep_photo(room.owner, run.run_id, run.labels, said, data)
    except StudioError as error:
        return str(error)
    return ""
