"""Transfer-learning studio: the router and the sidebar shared by every page.

Nothing here imports TensorFlow, so the home page shows before it has loaded.
"""

from pathlib import Path

import streamlit as st

from tlcore.present import screen
from ui import identity, keras_state, messages
from ui.sidebar import sidebar

st.set_page_config(
    page_title="Transfer-learning studio",
    page_icon=str(Path(__file__).parent / "ui" / "favicon.png"),
    layout="wide",
)

# Page scripts live in sub-folders of pages/: Streamlit's legacy multipage mode (which
# would run a deep-linked pages/*.py directly, bypassing this router) only looks at
# top-level pages/*.py files, of which there are none. Streamlit still runs the first
# script run of a server beside a pages/ folder in that legacy mode (st.navigation turns it
# off for later runs), whose own navigation knows no page but this script: an open tab
# reconnecting after a restart got "Page not found" before this router showed the right
# page. `make run` / `make serve` start through serve.py, which turns the mode off first.
PAGES = {
    "Studio": [
        st.Page("pages/studio/home.py", title="Home", icon=":material/home:", default=True),
    ],
    "Image classifier": [
        st.Page("pages/image/data.py", title="Data", icon=":material/folder_open:"),
        st.Page("pages/image/model.py", title="Model", icon=":material/layers:"),
        st.Page("pages/image/train.py", title="Train", icon=":material/monitoring:"),
        st.Page("pages/image/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
        st.Page("pages/image/predict.py", title="Predict", icon=":material/image_search:"),
        st.Page("pages/image/runs.py", title="Runs", icon=":material/history:"),
        st.Page("pages/image/present.py", title="Present", icon=":material/co_present:"),
    ],
    "Language": [
        st.Page("pages/text/generate.py", title="Text (GPT-2)", icon=":material/edit_note:", url_path="text"),
    ],
}

keras_state.keep_keras_state()
if st.query_params.get("present") or "audience_token" in st.session_state:
    # An audience link (issue 22): the phone gets the audience page and nothing else, for the rest
    # of its session (dropping the query keeps it there). It is the only page navigation knows in
    # such a session, served at the root and under every page address: the studio's own and the one
    # this phone opened (…/model?present=… got Streamlit's "Page not found" before the audience page).
    st.session_state.audience_token = st.query_params.get("present") or st.session_state.audience_token
    paths = st.session_state.setdefault("audience_paths", {page.url_path for part in PAGES.values() for page in part})
    paths.add(screen.requested_page(st.context.url))
    audience = st.navigation(
        [st.Page("pages/image/audience.py", title="Live demo", default=True, url_path="")]
        + [st.Page("pages/image/audience.py", title="Live demo", url_path=path) for path in sorted(paths - {""})],
        position="hidden",
    )
    messages.run_page(audience)
    st.stop()
navigation = st.navigation(PAGES)
identity.identify()  # the browser's cookie: its setup and jobs survive a refresh
setup = identity.setup_in_use()  # first: it picks up what another tab of this browser saved
sidebar("text" if navigation in PAGES["Language"] else "image")  # the job line shows this part's job
try:
    messages.run_page(navigation)  # an unexpected error is a message on the page, never a traceback
finally:
    identity.persist_setup(setup)  # also after st.stop()/st.rerun() inside the page
