"""Live demo mode (issue 22): the audience link's token, the room's limits, the photo inbox and the
retrain that counts what the room sent."""

from __future__ import annotations

import io
import json
import random
import shutil

import pytest
from PIL import Image

from tests.helpers import COLOURS, colour_image
from tlcore.errors import StudioError
from tlcore.present import audience, inbox, rooms, screen
from tlcore.runs.store import RunStore, read_run

PRESENTER = "a" * 32
VISITOR = "b" * 32


@pytest.fixture
def studio(tmp_path, monkeypatch, trained_run, colour_dataset):
    """A studio with the presenter's own copy of the trained run (owned by PRESENTER)."""
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(colour_dataset.parent))
    shutil.copytree(trained_run.path, tmp_path / "runs" / trained_run.run_id)
    (tmp_path / "runs" / trained_run.run_id / "access.json").write_text(json.dumps({"owner": PRESENTER}))
    store = RunStore(tmp_path / "runs", owner=PRESENTER)
    return store, store.get(trained_run.run_id)


def photo(colour: str, size: int = 48) -> bytes:
    """A photo of a colour class as the training images are (noisy: thousands of colours), the same bytes every call."""
    buffer = io.BytesIO()
    colour_image(COLOURS[colour], size, random.Random(colour)).save(buffer, "PNG")
    return buffer.getvalue()


def blank(colour: str = "red", size: int = 48) -> bytes:
    """A placeholder: one solid colour (a 1x1 PNG with ``size=1``)."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), COLOURS[colour]).save(buffer, "PNG")
    return buffer.getvalue()


def model_of(run):
    return run.load_model()


# ---- tokens --------------------------------------------------------------------------------


def test_a_room_link_is_unguessable_one_per_run_and_only_its_owner_opens_it(studio):
    store, run = studio
    room = rooms.open_room(store, run)
    assert len(room.token) >= 40 and rooms.find_room(room.token).run_id == run.run_id
    assert rooms.open_room(store, run).token == room.token  # the same link while it is open
    # The folder of rooms names files by the token's hash: listing it hands out no link.
    assert all(room.token not in path.name for path in rooms.rooms_dir().iterdir())
    other = RunStore(store.root, owner=VISITOR)
    with pytest.raises(StudioError, match="Only the visitor who trained run"):
        rooms.open_room(other, read_run(run.path))
    assert rooms.find_room(room.token[:-1] + ("A" if room.token[-1] != "A" else "B")) is None
    assert rooms.find_room("../../etc/passwd") is None


def test_a_revoked_token_is_refused_on_the_next_request(studio):
    store, run = studio
    room = rooms.open_room(store, run)
    assert audience.answer(room.token, "phone-1", photo("red"), model_of).result
    with pytest.raises(StudioError, match="Only the presenter"):
        rooms.revoke_room(RunStore(store.root, owner=VISITOR), room)
    rooms.revoke_room(store, room)
    with pytest.raises(rooms.RoomClosedError, match="This link is not open"):
        audience.answer(room.token, "phone-1", photo("red"), model_of)
    assert rooms.open_room(store, run).token != room.token  # presenting again makes a new link


# ---- limits --------------------------------------------------------------------------------


def test_one_phone_is_rate_limited_and_admitted_again_a_minute_later():
    state = rooms.RoomState(rooms.RoomLimits(per_phone_per_minute=3))
    for second in range(3):
        state.admit("phone", now=1000.0 + second)
    with pytest.raises(rooms.RoomLimitError, match=r"You made 3 predictions in the last minute \(the limit is 3"):
        state.admit("phone", now=1010.0)
    state.admit("other", now=1010.0)  # another phone is not slowed down by this one
    state.admit("phone", now=1061.0)


def test_the_whole_room_is_rate_limited_per_token():
    state = rooms.RoomState(rooms.RoomLimits(per_minute=4))
    for index in range(4):
        state.admit(f"phone-{index}", now=1000.0)
    with pytest.raises(rooms.RoomLimitError, match=r"The room made 4 predictions in the last minute"):
        state.admit("phone-9", now=1030.0)
    state.admit("phone-9", now=1061.0)


def test_over_capacity_a_new_phone_gets_the_room_is_full_until_a_place_frees():
    state = rooms.RoomState(rooms.RoomLimits(capacity=2, idle_seconds=100))
    state.join("a", now=0.0)
    state.join("b", now=50.0)
    with pytest.raises(rooms.RoomLimitError, match=r"The room is full: 2 phones .* \(the limit is 2\)"):
        state.join("c", now=60.0)
    state.admit("a", now=60.0)  # a phone already in the room keeps its place
    state.join("c", now=151.0)  # b was not seen for 100 s: its place is free
    assert state.snapshot(now=151.0)["phones"] == 2


def test_the_tally_counts_each_answer_of_the_room(studio):
    store, run = studio
    room = rooms.open_room(store, run)
    for index, colour in enumerate(["red", "red", "blue"]):
        audience.answer(room.token, f"phone-{index}", photo(colour), model_of)
    snapshot = rooms.room_state(room).snapshot()
    assert snapshot["predictions"] == 3 and sum(snapshot["tally"].values()) == 3
    assert snapshot["phones"] == 3
    assert 0 < snapshot["seconds_p50"] <= snapshot["seconds_p95"] < 60  # the server's time per answer


# ---- photos --------------------------------------------------------------------------------


def test_a_blank_or_placeholder_photo_gets_predicts_warning_and_is_neither_counted_nor_kept(studio):
    store, run = studio
    assert (run.path / "input_reference.npz").is_file()  # the run's training images, as Predict compares with
    room = rooms.open_room(store, run)
    rooms.update_room(store, room, collecting=True)
    solid = audience.answer(room.token, "phone", blank("red"), model_of, said="red")
    assert solid.result == [] and not solid.kept  # no bar chart: a warning instead
    assert solid.warning == (
        "This picture looks like a blank or placeholder graphic, not a photo (1 colour, 100% one colour): the "
        f"model would answer it with a class that means nothing. Take a photo of {' or '.join(run.labels)} and send that."
    )
    tiny = audience.answer(room.token, "phone", blank("blue", size=1), model_of, said="blue")  # a 1x1 PNG
    assert tiny.result == [] and tiny.warning.startswith("This picture is only 1 pixel on its short side")
    assert audience.keep_said(room.token, blank("red"), "red") == solid.warning  # refused even if sent to be kept
    seen = rooms.room_state(room).snapshot()
    assert seen["predictions"] == 0 and seen["tally"] == {}  # not in the room's tally
    assert inbox.inbox_photos(PRESENTER, run.run_id) == []  # not in the presenter's inbox
    answered = audience.answer(room.token, "phone", photo("red"), model_of, said="red")  # a photo still is
    assert answered.result and not answered.warning and answered.kept
    assert rooms.room_state(room).snapshot()["predictions"] == 1


def test_an_audience_photo_is_not_kept_unless_the_presenter_collects(studio):
    store, run = studio
    room = rooms.open_room(store, run)
    kept = audience.answer(room.token, "phone", photo("red"), model_of, said="red")
    assert not kept.kept and inbox.inbox_photos(PRESENTER, run.run_id) == []
    rooms.update_room(store, room, collecting=True)
    assert audience.answer(room.token, "phone", photo("green"), model_of, said="green").kept
    assert [label for label, _ in inbox.inbox_photos(PRESENTER, run.run_id)] == ["green"]
    wrong = audience.answer(room.token, "phone", photo("red"), model_of, said="../../evil")
    assert wrong.result and not wrong.kept and "Expected one of the run's classes" in wrong.note
    assert len(inbox.inbox_photos(PRESENTER, run.run_id)) == 1


def test_a_class_chosen_after_the_answer_keeps_the_photo_only_while_collecting(studio):
    store, run = studio
    room = rooms.open_room(store, run)
    assert audience.keep_said(room.token, photo("red"), "red") == "the presenter is not collecting photos now."
    rooms.update_room(store, room, collecting=True)
    assert audience.keep_said(room.token, photo("red"), "red") == ""
    assert "Expected one of the run's classes" in audience.keep_said(room.token, photo("blue"), "../../evil")
    assert [label for label, _ in inbox.inbox_photos(PRESENTER, run.run_id)] == ["red"]
    rooms.revoke_room(store, room)
    assert audience.keep_said(room.token, photo("green"), "green") == audience.CLOSED


def test_a_kept_photo_loses_its_exif_and_is_bounded(studio):
    store, run = studio
    big = Image.new("RGB", (3000, 2000), COLOURS["blue"])
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", exif=exif)
    path = inbox.keep_photo(PRESENTER, run.run_id, run.labels, "blue", buffer.getvalue())
    kept = Image.open(path)
    assert max(kept.size) == inbox.MAX_SIDE and not kept.getexif()


def test_the_inbox_goes_into_the_presenters_dataset_and_a_retrain_counts_it(studio, colour_dataset):
    from tlcore.training.launch import train_run

    store, run = studio
    before = sorted(p.name for p in colour_dataset.rglob("*.png"))
    rng = random.Random(7)
    for colour in ("red", "red", "blue", "red"):
        buffer = io.BytesIO()
        colour_image(COLOURS[colour], 40, rng).save(buffer, "PNG")
        inbox.keep_photo(PRESENTER, run.run_id, run.labels, colour, buffer.getvalue())
    dataset, added = inbox.add_inbox_to_dataset(PRESENTER, run)
    assert added == {"blue": 1, "red": 3} and list(added) == [label for label in run.labels if label in added]
    assert inbox.audience_count(dataset) == 4 and inbox.inbox_photos(PRESENTER, run.run_id) == []
    # What was added, per class, then the dataset's total (36 training images of the run + 4).
    assert inbox.added_message(added, dataset) == (
        "+4 audience photos: blue +1, red +3; the dataset now has 40 images (blue 13, green 12, red 15)."
    )
    assert dataset.resolve().is_relative_to((store.root.parent / "workspace" / "sessions" / PRESENTER).resolve())
    assert sorted(p.name for p in colour_dataset.rglob("*.png")) == before  # the original folder is untouched
    config = inbox.retrain_config(run, dataset, PRESENTER)
    result = train_run(config, store.create(config, name="room"))
    original = run.metrics["num_train"] + run.metrics["num_val"]
    assert result.metrics["num_train"] + result.metrics["num_val"] == original + 4


def test_a_discarded_inbox_photo_never_reaches_the_dataset(studio):
    store, run = studio
    inbox.keep_photo(PRESENTER, run.run_id, run.labels, "red", photo("red"))
    wrong = inbox.keep_photo(PRESENTER, run.run_id, run.labels, "green", photo("blue"))  # a blue photo said green
    assert inbox.review_caption(2).startswith("The inbox: 2 photos (all shown)")
    assert inbox.review_caption(13).startswith("The inbox: 13 photos (the newest 12 shown)")
    assert inbox.discard_inbox(PRESENTER, run.run_id, wrong) == 1  # the Present page's Discard button
    assert [label for label, _ in inbox.inbox_photos(PRESENTER, run.run_id)] == ["red"]
    dataset, added = inbox.add_inbox_to_dataset(PRESENTER, run)
    assert added == {"red": 1} and [path.parent.name for path in dataset.glob("*/audience-*")] == ["red"]


# ---- the screen ----------------------------------------------------------------------------


def test_the_audience_link_carries_only_the_token_and_its_qr_code_encodes_it():
    url = screen.audience_url("http://10.0.0.5:8501/runs?page=x", "T" * 40)
    assert url == "http://10.0.0.5:8501/?present=" + "T" * 40
    from PIL import Image

    qr = Image.open(io.BytesIO(screen.qr_png(url))).convert("L")
    assert qr.size[0] == qr.size[1] >= 200 and {min(qr.getdata()), max(qr.getdata())} == {0x11, 0xFF}
    with pytest.raises(ValueError, match="Expected an http"):
        screen.audience_url("javascript:alert(1)", "T" * 40)


def test_the_present_page_does_not_encode_its_qr_code_again_on_every_run(monkeypatch):
    """The Present page reruns on every photo; the link's QR code is encoded once (a third of a run)."""
    import segno

    url = screen.audience_url("http://10.0.0.6:8501", "Q" * 40)
    first = screen.qr_png(url)
    monkeypatch.setattr(segno, "make", lambda *a, **k: pytest.fail("the QR code was encoded again"))
    assert screen.qr_png(url) == first


def test_the_router_serves_the_audience_page_under_the_page_address_a_phone_opened():
    assert screen.requested_page("http://10.0.0.5:8501/model") == "model"
    assert screen.requested_page("http://10.0.0.5:8501/studio/runs/") == "runs"  # behind a base path
    assert screen.requested_page("http://10.0.0.5:8501/nowhere") == "nowhere"  # a page that does not exist
    for root in ("http://10.0.0.5:8501/", "http://10.0.0.5:8501", None, ""):
        assert screen.requested_page(root) == ""
    assert screen.requested_page("http://10.0.0.5:8501/a%3Cb%3E") == ""  # no page can be named so


def test_bars_escape_class_names():
    html = screen.bars_html([{"label": "<script>x</script>", "probability": 0.5}])
    assert "<script>" not in html and "&lt;script&gt;" in html and "50%" in html


def test_the_room_messages_are_the_ones_docs_limits_shows(studio):
    from tests.test_data import documented_message

    state = rooms.RoomState(rooms.RoomLimits())
    for index in range(40):
        state.join(f"phone-{index}", now=0.0)
    with pytest.raises(rooms.RoomLimitError) as full:
        state.join("one more", now=1.0)
    assert str(full.value) == documented_message("audience link (Present page): phones at once")
    with pytest.raises(rooms.RoomClosedError) as closed:
        audience.answer("x" * 43, "phone", photo("red"), model_of)
    assert str(closed.value) == documented_message("audience link: revoked or unknown token")


# ---- the pages (AppTest, through the router) -------------------------------------------------


def test_an_audience_link_session_gets_the_audience_page_only(studio):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP

    store, run = studio
    room = rooms.open_room(store, run)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["present"] = room.token
    at.run()
    assert not at.exception and [s.value for s in at.subheader][0].startswith("Is it")
    assert len(at.sidebar) == 0 and not at.title  # no sidebar, no studio page
    at.query_params.clear()  # a rerun without the token (a hand-made client): still the audience page
    at.run()
    assert not at.title and [s.value for s in at.subheader][0].startswith("Is it")
    rooms.revoke_room(store, room)
    at.run()
    assert [i.value for i in at.info] == [audience.CLOSED] and not at.subheader


def test_the_present_page_offers_only_the_visitors_own_runs(studio, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP

    monkeypatch.setenv("TLCORE_SHARED", "1")
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/image/present.py")
    at.run()
    assert not at.exception
    assert "Train a run first" in at.info[0].value  # the copied run is PRESENTER's, not this session's


def test_the_retrained_run_button_says_what_it_learnt_from_and_how_it_compares():
    from types import SimpleNamespace

    old = SimpleNamespace(metrics={"num_train": 144, "val_accuracy": 0.95})
    new = SimpleNamespace(metrics={"num_train": 146, "val_accuracy": 0.97})
    assert inbox.retrained_label(old, new) == (
        "Present the retrained run: 146 training images (+2), validation accuracy 97% (was 95%)"
    )
    assert inbox.retrained_label(SimpleNamespace(metrics={}), SimpleNamespace(metrics={})) == (
        "Present the retrained run: ? training images"
    )
