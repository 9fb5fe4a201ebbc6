"""Transfer-learning studio: the router and the sidebar shared by every page.

Nothing here imports TensorFlow, so the home page shows before it has loaded.
"""

import streamlit as st

from pages import _shared as shared

st.set_page_config(page_title="Transfer-learning studio", page_icon=":material/science:", layout="wide")

PAGES = {
    "Studio": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/folder_open:"),
        st.Page("pages/model.py", title="Model", icon=":material/layers:"),
        st.Page("pages/train.py", title="Train", icon=":material/monitoring:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
    ],
}

navigation = st.navigation(PAGES)
shared.sidebar()
navigation.run()
