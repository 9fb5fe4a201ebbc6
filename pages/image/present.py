"""Present: a projector view of one run, its audience link and QR code, and the room (issue 22)."""

from pathlib import Path

import streamlit as st

from tlcore.data.images import thumbnail
from tlcore.errors import StudioError
from tlcore.present import inbox, rooms, screen
from tlcore.progress import job_progress, progress_line
from tlcore.words import plural
from ui import cache, messages, shared

# A projector shows the run, not the studio: no sidebar, no header; larger text.
st.html(
    "<style>[data-testid='stSidebar'],[data-testid='stSidebarCollapsedControl'],[data-testid='stHeader']"
    "{display:none}.block-container{padding-top:1rem;max-width:100%}"
    "[data-testid='stMarkdownContainer'] p{font-size:1.4rem}</style>"
)
owner, store = shared.session_id(), cache.store()
runs = [run for run in cache.finished_runs(shared=False) if store.can_write(run)]
if not runs:
    st.info("Train a run first: the Present page shows one of your own runs to a room.")
    st.page_link("pages/image/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()
ids = [run.run_id for run in runs]
if st.session_state.get("present_next") in ids:  # a retrained run the presenter switched to
    st.session_state.present_run = st.session_state.pop("present_next")
choose, back = st.columns([4, 1], vertical_alignment="center")
run_id = choose.selectbox("Run to present", ids, key="present_run", label_visibility="collapsed")
# The projector hides the sidebar: this is the way back to the studio (the room stays open).
back.page_link("pages/image/runs.py", label="Back to the studio", icon=":material/arrow_back:")
run = runs[ids.index(run_id)]
accuracy = run.metrics.get("val_accuracy")
st.markdown(
    f"# {' · '.join(messages.escape_markdown(label) for label in run.labels)}\n"
    + (f"Validation accuracy **{accuracy:.0%}** on {run.metrics.get('num_val', '?')} images" if accuracy else "")
)
camera, upload, link = st.columns([2, 2, 1.4])
photo = camera.camera_input("Camera")
uploaded = upload.file_uploader("Or a photo", type=["jpg", "jpeg", "png", "webp", "bmp", "gif"])
show_cam = upload.toggle("Grad-CAM: where the model looks")
room = rooms.room_for_run(store, run)
with link:
    if room is None:
        if st.button("Open an audience link", type="primary"):
            rooms.open_room(store, run)
            st.rerun()
    else:
        url = screen.audience_url(screen.public_base(st.context.url), room.token)
        st.image(screen.qr_png(url), width=320, caption="Scan to open the audience page")
        st.code(url, language=None, wrap_lines=True)
        if screen.is_loopback(url):
            st.caption(f"Phones cannot open this machine's own address: set {screen.PUBLIC_URL_VARIABLE}.")
        collecting = st.toggle("Collect audience photos", room.collecting)
        if collecting != room.collecting:
            rooms.update_room(store, room, collecting=collecting)
        if st.button("Revoke the link"):
            rooms.revoke_room(store, room)
            st.rerun()

data = uploaded.getvalue() if uploaded else photo.getvalue() if photo else None
if data is not None:
    from tlcore.inference.predict import grad_cam, overlay_heatmap, predict_top_k  # TensorFlow loads here

    model = cache.load_run_model(run)
    picture, bars = st.columns([1, 2])
    try:
        result = predict_top_k(model, run.labels, [data], min(3, len(run.labels)))[0]
        shown = overlay_heatmap(data, grad_cam(model, data)[0], 480) if show_cam else thumbnail(data, 480)
    except StudioError as error:
        messages.show_error(error)
    else:
        picture.image(shown, width="stretch")
        bars.html(screen.bars_html(result, font_px=56))


@st.fragment(run_every=2)
def the_room(room) -> None:
    """The room, redrawn every 2 s: phones, answers, the tally, and the inbox to review when collecting."""
    room = rooms.find_room(room.token)
    if room is None:
        return
    seen = rooms.room_state(room).snapshot()
    timing = (
        f" · {seen['seconds_p50']:.2f} s per answer (p95 {seen['seconds_p95']:.2f} s)" if seen["predictions"] else ""
    )
    st.markdown(f"**The room** · phones {seen['phones']} · answers {seen['predictions']}{timing}")
    st.html(screen.bars_html(screen.tally_rows(seen["tally"], run.labels), font_px=28))
    photos = inbox.inbox_photos(owner, run.run_id)
    if photos:  # the review: a photo whose class is wrong is discarded before it reaches the dataset
        st.caption(inbox.review_caption(len(photos)))
        for start in range(0, min(len(photos), inbox.REVIEW_SHOWN), 6):
            for column, (label, path) in zip(st.columns(6), photos[start : start + 6]):
                column.image(thumbnail(str(path), 200), caption=label)
                column.button(
                    "Discard",
                    key=f"discard-{label}-{path.stem}",
                    on_click=inbox.discard_inbox,
                    args=(owner, run.run_id, path),
                )
    room_teaches(room, photos)


def room_teaches(room, photos) -> None:
    """Adds the inbox to the presenter's dataset and retrains the head; then offers the new run."""
    job = shared.registry().get(st.session_state.get("room_job"))
    if job is not None and st.session_state.get("room_added"):
        st.success(messages.escape_markdown(st.session_state.room_added))  # what was added, per class
    if job is not None and job.active:
        st.caption(f"Retraining with the room's photos: {progress_line(job_progress(job))}")
    elif job is not None and job.status == "failed":
        messages.show_error(StudioError(job.error or "The retraining failed."))
        st.session_state.pop("room_job")
    elif job is not None and job.status == "done" and job.run_dir:
        new = store.get(Path(job.run_dir).name)
        if st.button(inbox.retrained_label(run, new)):
            rooms.update_room(store, room, run=new)
            st.session_state.present_next = new.run_id
            st.session_state.pop("room_job")
            st.rerun(scope="app")
    elif photos and st.button(f"Add {plural(len(photos), 'photo')} to the dataset and retrain", type="primary"):
        from tlcore.training.launch import start_training

        try:
            dataset, added = inbox.add_inbox_to_dataset(owner, run)
            st.session_state.room_added = inbox.added_message(added, dataset)
            config = inbox.retrain_config(run, dataset, owner)
            st.session_state.room_job = start_training(shared.registry(), owner, config, store, name="room").job_id
        except StudioError as error:
            messages.show_error(error)


if room is not None:
    the_room(room)
