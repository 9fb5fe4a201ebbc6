"""The audience page of a live demo: a phone opens it by its link's token and can only ask the model
(issue 22). Nothing of the studio is reachable from here: no navigation, sidebar, runs or downloads."""

import hashlib

import streamlit as st

from tlcore import sessions
from tlcore.errors import StudioError
from tlcore.present import audience, rooms, screen
from ui.cache import input_reference, run_model
from ui.messages import escape_markdown

# No header (its menu), no sidebar, no toolbar: a phone sees the question and the answer.
st.html(
    "<style>[data-testid='stSidebar'],[data-testid='stSidebarCollapsedControl'],[data-testid='stHeader'],"
    "[data-testid='stToolbar'],[data-testid='stDecoration']{display:none}"
    ".block-container{padding:1rem 0.8rem}</style>"
)
if "phone" not in st.session_state:
    # The browser's studio cookie names the phone, so a reload does not take a second place in the room.
    secret = st.context.cookies.get(sessions.COOKIE_NAME)
    if not sessions.is_secret(secret):
        secret = sessions.new_secret()
        st.html(sessions.cookie_script(secret), unsafe_allow_javascript=True)  # the studio's one cookie rule
    st.session_state.phone = sessions.owner_id(secret)
phone = st.session_state.phone
token = st.session_state.audience_token  # the link's, kept by app.py for the session
try:
    room, run = audience.room_run(token)
    rooms.room_state(room).join(phone)
except StudioError as error:
    st.info(escape_markdown(error))
    st.stop()

st.subheader(f"Is it {' or '.join(f'**{label}**' for label in map(escape_markdown, run.labels))}?", anchor=False)
photo = st.camera_input("Take a photo")
uploaded = st.file_uploader("Or choose one", type=["jpg", "jpeg", "png", "webp"])
data = uploaded.getvalue() if uploaded else photo.getvalue() if photo else None
if data is None:
    st.caption(
        "The presenter collects photos: after the answer you can say what it really is."
        if room.collecting
        else "Your photo is used for the answer only: it is not kept."
    )
    st.stop()


def model_of(run):
    """The run's model, loaded once for every phone of the server (the studio's bounded run-model cache)."""
    return run_model(str(run.path), (run.path / "model.keras").stat().st_mtime)


digest = hashlib.sha256(data).hexdigest()
if st.session_state.get("asked") != digest:  # a rerun must not ask, count and keep the same photo again
    try:
        st.session_state.reply = audience.answer(token, phone, data, model_of, reference_of=input_reference)
    except StudioError as error:
        st.session_state.pop("reply", None)
        st.warning(escape_markdown(error))
        st.stop()
    st.session_state.asked, st.session_state.kept = digest, None
reply = st.session_state.reply
if reply.warning:  # a blank or placeholder picture: no answer, not counted, not offered for the inbox
    st.warning(escape_markdown(reply.warning), icon=":material/warning:")
    st.stop()
st.html(screen.bars_html(reply.result, font_px=30))
if not room.collecting:
    st.caption("Your photo is used for the answer only: it is not kept.")
    st.stop()
# The class is asked per photo (the radio is keyed by it) and a photo is kept once.
kept = st.session_state.get("kept")
said = st.radio(
    "The presenter collects photos: what is it really?",
    run.labels,
    index=None if kept is None else run.labels.index(kept),
    horizontal=True,
    key=f"said-{digest[:16]}",
    disabled=kept is not None,
)
if said is not None and kept is None:
    note = audience.keep_said(token, data, said, input_reference)
    if note:
        st.caption(escape_markdown(f"Your photo was not kept: {note}"))
    else:
        st.session_state.kept = kept = said
if kept is not None:
    st.caption(f"Thank you: your photo went to the presenter as '{escape_markdown(kept)}'.")
else:
    st.caption(
        "Choose its class and your photo is kept for the presenter's dataset; if you choose no class, it is not kept."
    )
