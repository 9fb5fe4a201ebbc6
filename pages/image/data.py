from pathlib import Path

import streamlit as st

from tlcore import charts
from tlcore.data.common import UPLOAD_TYPES
from tlcore.data.demo import DEMO_DATASET
from tlcore.data.images import thumbnail
from tlcore.data.sources import DATA_SOURCES, DOWNLOADABLE, save_class_images, save_upload, source_of
from tlcore.data.summary import class_count, class_mismatch, samples, skipped_table, summarize_for_training
from tlcore.errors import StudioError
from tlcore.paths import allow_folder, can_allow, check_allowed, readable_roots_note
from tlcore.words import plural
from ui import cache, messages, shared
from ui.identity import facts, local_server

st.title("Data")
st.caption("A dataset is one folder per class. Everything below turns into that shape.")

data = shared.config("data")
if "source_kind" not in st.session_state:  # after a refresh: show the source the setup uses
    st.session_state.source_kind = source_of(data.data_dir)
source_kind = st.radio("Where are your images?", DATA_SOURCES, key="source_kind", horizontal=True)
candidate, val_dir = None, None

if source_kind == DATA_SOURCES[0]:
    candidate = DEMO_DATASET
    st.info("Generated on this machine: 200 circles, squares and triangles each. No download needed.")
elif source_kind == DATA_SOURCES[1]:
    folder = st.text_input(
        "Folder path", value="" if data.data_dir == DEMO_DATASET else data.data_dir, placeholder="/data/photos"
    )
    if st.checkbox("I have a separate validation folder", value=bool(data.val_dir)):
        val_dir = st.text_input("Validation folder path", value=data.val_dir or "").strip() or None
    owner, local = shared.session_id(), local_server()
    st.caption(messages.escape_markdown(readable_roots_note(owner, local)))
    typed = folder.strip()
    try:
        candidate = str(check_allowed(typed, owner)) if typed else None
        typed = val_dir
        val_dir = str(check_allowed(val_dir, owner)) if val_dir else None
    except StudioError as error:
        messages.show_error(error, "Nothing was changed: your current dataset is still the one in the sidebar.")
        if can_allow(typed, owner, local):
            if st.button(f"Allow {typed} for this session", help="Until the studio restarts; only for you."):
                allow_folder(owner, typed, local)
                st.rerun()
        st.stop()
elif source_kind == DATA_SOURCES[2]:
    upload = st.file_uploader("A .zip with one folder per class", type=["zip"])
    if upload is not None:
        candidate = str(save_upload(shared.session_dir() / "uploads", upload.name, upload.getvalue()))
elif source_kind == DATA_SOURCES[3]:
    built_root = shared.session_dir() / "built"
    new_class = st.text_input("New class name", placeholder="e.g. ripe banana")
    st.caption("Add photos to a class by upload or with your camera; each class needs a few.")
    classes = sorted(p.name for p in built_root.iterdir() if p.is_dir()) if built_root.is_dir() else []
    target = st.selectbox("Add photos to", classes + ([new_class] if new_class and new_class not in classes else []))
    batch = st.session_state.setdefault("class_batch", 0)  # a new key after each batch added: an empty uploader
    uploads = st.file_uploader("Photos", type=UPLOAD_TYPES, accept_multiple_files=True, key=f"class_photos_{batch}")
    with st.expander("Or take a photo with your camera"):
        shot = st.camera_input("Camera", key=f"class_camera_{batch}", label_visibility="collapsed")
    if st.button("Add to class", disabled=not target):
        files = [(f.name, f.getvalue()) for f in uploads or []] + ([("camera.jpg", shot.getvalue())] if shot else [])
        try:
            save_class_images(built_root, {target: files})
            st.session_state.class_batch, st.session_state.class_added = batch + 1, (len(files), target)
            st.rerun()
        except StudioError as error:
            messages.show_error(error)
    if added := st.session_state.pop("class_added", None):  # the batch just added (the rerun emptied the uploader)
        st.success(f"Added {plural(added[0], 'photo')} to '{messages.escape_markdown(added[1])}'.")
    if built_root.is_dir() and any(built_root.iterdir()):
        candidate = str(built_root)
elif source_kind == DATA_SOURCES[4]:
    name = st.selectbox("Dataset", list(DOWNLOADABLE), format_func=lambda n: f"{n} — {DOWNLOADABLE[n].description}")
    if st.button("Download"):
        from tlcore.data.sources import download_dataset

        try:
            with st.spinner(f"Downloading {name}…"):
                st.session_state.downloaded = str(download_dataset(name))
        except StudioError as error:
            messages.show_error(error)
    candidate = st.session_state.get("downloaded")

with st.expander("Options"):
    skip_placeholders = st.checkbox(
        "Skip blank or placeholder images ('image not found' pictures)", value=data.skip_placeholders
    )
    val_split = data.val_split
    if val_dir is None:
        val_split = st.slider("Validation share (per class)", 0.05, 0.5, float(data.val_split), 0.05)

if not candidate:
    st.info("Choose a source above to see its classes and a health report.")
    st.stop()

try:
    scan = cache.scan(candidate, skip_placeholders)
    val_scan = cache.scan(val_dir, skip_placeholders) if val_dir else None
except StudioError as error:
    messages.show_error(error, "Nothing was changed: your current dataset is still the one in the sidebar.")
    st.stop()

# Every number below is what training will use: the label decisions kept in the workspace applied.
summary, (scan, val_scan) = summarize_for_training(scan, val_scan, data.owner)
if summary.trainable:
    facts().update(data_summary=summary.describe(), num_classes=summary.classes)
    shared.update("data", data_dir=candidate, val_dir=val_dir, val_split=val_split, skip_placeholders=skip_placeholders)
    st.success(f"Current dataset: {facts()['data_summary']}.", icon=":material/check_circle:")
else:
    st.warning("A classifier needs at least 2 classes with images. Add another class.", icon=":material/back_hand:")

parts = [("Training", scan)] + ([("Validation", val_scan)] if val_scan else [])
for column, (title, part) in zip(st.columns(len(parts)), parts):
    with column:
        st.subheader(f"{title} set" if val_scan else "Images")
        cols = st.columns(3)
        cols[0].metric("Images", len(part.items))
        cols[1].metric("Classes", class_count(part))
        cols[2].metric("Skipped files", len(part.skipped))
        st.plotly_chart(charts.counts_figure(part.counts), width="stretch", key=f"counts_{title}")
        st.markdown("**Health report**")
        for warning in part.warnings:
            st.warning(messages.escape_markdown(warning))
        if part.skipped:
            frame = skipped_table(part)
            if len(frame) <= 20:
                st.table(frame)
            else:
                st.dataframe(frame, hide_index=True, width="stretch")
        if not part.warnings and not part.skipped:
            st.write("No problems found: every file is a usable image and the classes are balanced.")
mismatch = class_mismatch(scan, val_scan)
if mismatch:
    st.warning(mismatch)

if summary.trainable:
    with st.expander("Check the labels: suspect labels, near-duplicates and leaks into validation"):
        from ui.insight.data_sections import label_issues_section, near_duplicates_section

        label_issues_section(shared.run_config())
        near_duplicates_section(shared.run_config())

st.subheader("Samples")
for label, items in samples(scan, per_class=8).items():
    st.markdown(f"**{messages.escape_markdown(label)}** · {scan.counts[label]} images")
    captions = [Path(item.path).name[:18] for item in items]
    st.image([thumbnail(item.path, 128) for item in items], width=96, caption=captions)
