"""Messages on a page: Markdown shown literally, errors with what to do, and the page runner that
turns an unexpected exception into a message (never a traceback)."""

from __future__ import annotations

import logging
import re

import streamlit as st

from tlcore.errors import unexpected
from ui.offline import retry_button

# A web address in a message: shown as a Markdown autolink, whose text and target are taken
# literally. Escaping its characters instead would leave the backslashes in the link (GFM's
# bare-URL links keep them: ``vgg16\\_notop.h5``, ``%5C_`` in the address).
_URL = re.compile(r"https?://[^\s<>]*[^\s<>.,;:!?)\]'\"]")


def escape_markdown(text: str) -> str:
    """Shows ``text`` literally where Streamlit renders Markdown (``cats/*.jpg`` keeps its stars).

    Web addresses in it become working links, shown as written.
    """
    text, parts, start = str(text), [], 0
    for match in _URL.finditer(text):
        parts += [_escape(text[start : match.start()]), f"<{match.group()}>"]
        start = match.end()
    return "".join(parts + [_escape(text[start:])])


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>~$|])", r"\\\1", text)


def show_error(error: Exception, hint: str = "") -> None:
    st.error(escape_markdown(error) + (f"\n\n{hint}" if hint else ""), icon=":material/error:")
    retry_button(error, hint or "error")  # a failed download: tried again when the visitor asks


def run_page(navigation) -> None:
    """Runs the chosen page; an unexpected exception becomes a message, never a traceback.

    ``st.stop()`` and ``st.rerun()`` are ``BaseException``s and pass through. The full
    traceback goes to the server log for a bug report; the page says what happened.
    """
    try:
        navigation.run()
    except Exception as error:  # noqa: BLE001  - shown to the user, logged for the report
        logging.getLogger("tlcore.dashboard").exception("uncaught error on page %s", navigation.title)
        st.error(
            escape_markdown(unexpected(error))
            + "\n\nYour settings are kept. Change the last setting or reload the page; "
            "the server log has the details for a report.",
            icon=":material/error:",
        )
