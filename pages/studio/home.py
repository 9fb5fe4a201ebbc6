import pandas as pd
import streamlit as st

from tlcore.data.sources import DOWNLOADABLE
from tlcore.model.backbones import BACKBONES

st.title("Transfer-learning studio")
st.markdown(
    "Bring a few hundred photos, start from a network pretrained on millions of images, "
    "and train your own classifier in minutes. Every number you see is measured on images "
    "the model did not train on, and every run is saved with its settings so you can repeat it."
)

steps = st.columns(3)
with steps[0]:
    st.subheader("1 · Data")
    st.write("Use the built-in demo, a folder, a .zip, or build classes from uploads and your webcam.")
    st.page_link("pages/image/data.py", label="Choose data", icon=":material/folder_open:")
with steps[1]:
    st.subheader("2 · Model")
    st.write("Pick a pretrained backbone (or your own Keras model) and decide which layers to freeze.")
    st.page_link("pages/image/model.py", label="Set up the model", icon=":material/layers:")
with steps[2]:
    st.subheader("3 · Train")
    st.write("Train the new head with a live chart, fine-tune, then evaluate and try predictions.")
    st.page_link("pages/image/train.py", label="Train", icon=":material/monitoring:")

st.divider()
left, right = st.columns([3, 2])
with left:
    st.subheader("Backbones")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "backbone": spec.name,
                    "input size": spec.default_size,
                    "parameters (M)": spec.parameters_millions,
                    "pretrained weights": "ImageNet (downloaded on first use)"
                    if spec.imagenet_weights
                    else "none: trains from scratch, works offline",
                }
                for spec in BACKBONES.values()
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    st.caption("Or bring your own: any Keras model file (.keras / .h5), cut at the layer you choose.")
with right:
    st.subheader("Datasets")
    rows = [{"dataset": "demo: shapes", "what": "circles, squares, triangles · 600 images · generated offline"}]
    rows += [{"dataset": d.name, "what": f"{d.description} · needs internet"} for d in DOWNLOADABLE.values()]
    rows.append({"dataset": "your own", "what": "a folder or .zip with one sub-folder per class"})
    st.table(pd.DataFrame(rows).set_index("dataset"))  # a table wraps long descriptions instead of cutting them
