from pathlib import Path

import pandas as pd
import streamlit as st

from pages.studio import shared
from tlcore import charts
from tlcore.data import DEMO_DATASET, DOWNLOADABLE, save_class_images, save_upload, thumbnail
from tlcore.errors import StudioError

st.title("Data")
st.caption("A dataset is one folder per class. Everything below turns into that shape.")

SOURCES = [
    "Demo: shapes (offline)",
    "Folder on this server",
    "Upload a .zip",
    "Build classes from photos",
    "Download a public dataset",
]
data = shared.config("data")
source_kind = st.radio("Where are your images?", SOURCES, key="source_kind", horizontal=True)
candidate: str | None = None
val_dir: str | None = None

if source_kind == SOURCES[0]:
    candidate = DEMO_DATASET
    st.info("Generated on this machine: 200 circles, squares and triangles each. No download needed.")
elif source_kind == SOURCES[1]:
    folder = st.text_input(
        "Folder path", value="" if data.data_dir == DEMO_DATASET else data.data_dir, placeholder="/data/photos"
    )
    separate = st.checkbox("I have a separate validation folder")
    if separate:
        val_dir = st.text_input("Validation folder path", value=data.val_dir or "") or None
    candidate = folder.strip() or None
elif source_kind == SOURCES[2]:
    upload = st.file_uploader("A .zip with one folder per class", type=["zip"])
    if upload is not None:
        candidate = str(save_upload(shared.session_dir() / "uploads", upload.name, upload.getvalue()))
elif source_kind == SOURCES[3]:
    built_root = shared.session_dir() / "built"
    new_class = st.text_input("New class name", placeholder="e.g. ripe banana")
    st.caption("Add photos to a class by upload or with your camera; each class needs a few.")
    classes = sorted(p.name for p in built_root.iterdir() if p.is_dir()) if built_root.is_dir() else []
    target = st.selectbox("Add photos to", classes + ([new_class] if new_class and new_class not in classes else []))
    uploads = st.file_uploader(
        "Photos", type=["jpg", "jpeg", "png", "webp", "bmp", "gif"], accept_multiple_files=True, key="class_photos"
    )
    with st.expander("Or take a photo with your camera"):
        shot = st.camera_input("Camera", key="class_camera", label_visibility="collapsed")
    if st.button("Add to class", disabled=not target):
        files = [(f.name, f.getvalue()) for f in uploads or []] + ([("camera.jpg", shot.getvalue())] if shot else [])
        try:
            save_class_images(built_root, {target: files})
            st.success(f"Added {len(files)} photo(s) to '{target}'.")
        except StudioError as error:
            shared.show_error(error)
    if built_root.is_dir() and any(built_root.iterdir()):
        candidate = str(built_root)
elif source_kind == SOURCES[4]:
    name = st.selectbox("Dataset", list(DOWNLOADABLE), format_func=lambda n: f"{n} — {DOWNLOADABLE[n].description}")
    if st.button("Download"):
        from tlcore.data import download_dataset

        try:
            with st.spinner(f"Downloading {name}…"):
                st.session_state.downloaded = str(download_dataset(name))
        except StudioError as error:
            shared.show_error(error)
    candidate = st.session_state.get("downloaded")

with st.expander("Options"):
    skip_placeholders = st.checkbox(
        "Skip blank or placeholder images ('image not found' pictures)", value=data.skip_placeholders
    )
    if val_dir is None:
        val_split = st.slider("Validation share (per class)", 0.05, 0.5, float(data.val_split), 0.05)
    else:
        val_split = data.val_split

if not candidate:
    st.info("Choose a source above to see its classes and a health report.")
    st.stop()

try:
    scan = shared.scan(candidate, skip_placeholders, shared.folder_stamp(candidate))
    val_scan = shared.scan(val_dir, skip_placeholders, shared.folder_stamp(val_dir)) if val_dir else None
except StudioError as error:
    shared.show_error(error, "Nothing was changed: your current dataset is still the one in the sidebar.")
    st.stop()

usable = {label: count for label, count in scan.counts.items() if count}
if len(usable) >= 2:
    data.data_dir, data.val_dir, data.val_split, data.skip_placeholders = (
        candidate,
        val_dir,
        val_split,
        skip_placeholders,
    )
    st.session_state.data_summary = f"{len(scan.items)} images · {len(usable)} classes"
    st.session_state.num_classes = len(usable)
    st.success(f"Current dataset: {len(scan.items)} images in {len(usable)} classes.", icon=":material/check_circle:")
else:
    st.warning("A classifier needs at least 2 classes with images. Add another class.", icon=":material/back_hand:")

cols = st.columns(3)
cols[0].metric("Images", len(scan.items))
cols[1].metric("Classes", len(usable))
cols[2].metric("Skipped files", len(scan.skipped) + (len(val_scan.skipped) if val_scan else 0))
st.plotly_chart(charts.counts_figure(scan.counts), width="stretch")

st.subheader("Health report")
warnings = scan.warnings + (val_scan.warnings if val_scan else [])
for warning in warnings:
    st.warning(warning)
skipped = scan.skipped + (val_scan.skipped if val_scan else [])
if skipped:
    st.dataframe(
        pd.DataFrame({"file": [s.path for s in skipped], "reason": [s.reason for s in skipped]}),
        hide_index=True,
        width="stretch",
    )
if not warnings and not skipped:
    st.write("No problems found: every file is a usable image and the classes are balanced.")

st.subheader("Samples")
for label in scan.classes:
    items = [item for item in scan.items if item.label == label][:8]
    if not items:
        continue
    st.markdown(f"**{label}** · {scan.counts[label]} images")
    st.image(
        [thumbnail(item.path, 128) for item in items], width=96, caption=[Path(item.path).name[:18] for item in items]
    )
