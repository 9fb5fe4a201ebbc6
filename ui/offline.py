"""A failed ImageNet download's "Try the download again" (the failure is remembered: tlcore.model.downloads)."""

from __future__ import annotations

import streamlit as st

from tlcore.model.downloads import forget


def retry_button(error: Exception, key: str) -> None:
    """Under the message of ``error``: when it is a remembered failed download, a button that tries it again now.

    Args:
        error: the error just shown.
        key: unique on the page (the place that showed it).
    """
    download = getattr(error, "download", None)
    if download and st.button("Try the download again", key=f"retry_download_{key}", icon=":material/refresh:"):
        forget(download)
        st.rerun()
