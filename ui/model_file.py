"""The Model page's gate for an uploaded model file: read in safe mode before it becomes the model."""

from __future__ import annotations

import streamlit as st

from tlcore.errors import StudioError
from ui.cache import model_file_info
from ui.messages import escape_markdown


def accepted_model_file(path: str, name: str, current: str) -> bool:
    """Whether the uploaded model file at ``path`` can become the setup's model; shows why not.

    The file is read (in safe mode, see :func:`ui.cache.model_file_info`) before it replaces
    the current model, so a refused file never becomes the model that Train would start with.
    A refusal is remembered per file, so reruns do not load it again.

    Args:
        path: where the upload was saved.
        name: the uploaded file's name, as the visitor knows it.
        current: the current model in words (it stays the setup's model when the file is refused).
    """
    refused = st.session_state.setdefault("refused_model_files", {})
    if path not in refused:
        try:
            model_file_info(path)
            return True
        except (StudioError, OSError) as error:
            refused[path] = str(error)
    st.error(
        escape_markdown(refused[path])
        + f"\n\n{escape_markdown(name)} is refused. Your model is still **{escape_markdown(current)}**. "
        "Upload another model file above, or choose a **Backbone** from the list.",
        icon=":material/error:",
    )
    return False


def follow_setup(key: str, setup_value, options) -> None:
    """Makes the keyed widget ``key`` show ``setup_value`` only when the setup changed elsewhere.

    A widget given ``index=`` from the setup and changing the setup itself swapped values with it
    (a choice whose first run failed, like ImageNet offline, never settled), and one whose setup
    value was changed by the page showed one choice while the page ran another (a backbone picked
    after a model file showed "Your own Keras model file…" over the other backbone's page).
    """
    seen = f"{key}_setup"
    if st.session_state.get(seen) != setup_value or st.session_state.get(key) not in options:
        st.session_state[key] = st.session_state[seen] = setup_value
