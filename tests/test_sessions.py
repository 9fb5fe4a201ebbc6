"""Browser identity and the setup a browser finds again after a refresh or a restart."""

from pathlib import Path

import pytest

from tlcore import sessions
from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig


def test_a_secret_gives_one_stable_owner_that_does_not_reveal_it():
    secret = sessions.new_secret()
    assert sessions.is_secret(secret)
    assert sessions.owner_id(secret) == sessions.owner_id(secret)
    assert sessions.owner_id(secret) != sessions.owner_id(sessions.new_secret())
    assert secret not in sessions.owner_id(secret) and secret[:16] != sessions.owner_id(secret)


@pytest.mark.parametrize("value", [None, "", "abc", "x" * 32, "0" * 31, "0" * 33, "../../etc/passwd" + "0" * 16])
def test_cookie_values_of_another_shape_are_not_secrets(value):
    assert not sessions.is_secret(value)


def test_the_whole_setup_round_trips_through_disk(tmp_path):
    config = RunConfig(
        DataConfig("/photos/train", val_dir="/photos/val"),
        ModelConfig("/models/dog.h5", weights="none", cut_layer="out_relu", freeze=FreezePlan("from", "block_16")),
        TrainConfig(epochs=10, fine_tune_epochs=3, unfreeze_from="block_15", learning_rate=3e-4),
    )
    store = sessions.SetupStore(tmp_path)
    owner = sessions.owner_id(sessions.new_secret())
    assert store.load(owner) is None
    store.save(owner, sessions.Setup(config, "398 images · 2 classes", 2))
    loaded = store.load(owner)
    assert loaded.config == config
    assert (loaded.data_summary, loaded.num_classes) == ("398 images · 2 classes", 2)


def test_a_damaged_setup_file_is_ignored_and_owner_ids_cannot_walk_out(tmp_path):
    store = sessions.SetupStore(tmp_path)
    owner = "0123456789abcdef"
    store.path(owner).parent.mkdir(parents=True)
    store.path(owner).write_text("{ not json")
    assert store.load(owner) is None
    for hostile in ("..", "../x", "a/b", ""):
        with pytest.raises(ValueError, match="owner id"):
            store.path(hostile)


def test_a_logged_in_account_is_one_owner_per_provider_and_subject():
    alice = {"iss": "https://accounts.example", "sub": "1001", "email": "alice@example.org"}
    assert sessions.account_owner_id(alice) == sessions.account_owner_id(dict(alice, name="Alice B."))
    assert sessions.account_owner_id(alice) != sessions.account_owner_id(dict(alice, sub="1002"))
    assert sessions.account_owner_id(alice) != sessions.account_owner_id(dict(alice, iss="https://other.example"))
    with pytest.raises(ValueError, match="sub"):
        sessions.account_owner_id({"is_logged_in": True})


# ----------------------------------------------------------------------------- what a visitor may read (issue 21)

ALICE, BOB = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A studio whose workspace, runs and cache sit inside its current folder (the defaults' layout),
    with TLCORE_DATA_ROOTS unset: home and the current folder are data roots."""
    from tests.helpers import make_colour_dataset
    from tlcore import paths

    project = tmp_path / "project"
    for name in ("workspace", "runs", "cache"):
        (project / name).mkdir(parents=True)
    monkeypatch.chdir(project)
    monkeypatch.delenv("TLCORE_DATA_ROOTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TLCORE_WORKSPACE", str(project / "workspace"))
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(project / "runs"))
    monkeypatch.setenv("TLCORE_CACHE_DIR", str(project / "cache"))
    for name in ("TLCORE_SHARED", "TLCORE_ALLOW_DOWNLOADS"):
        monkeypatch.delenv(name, raising=False)
    built = make_colour_dataset(paths.owner_dir(ALICE) / "built", per_class=3, classes=("red", "blue"))
    photos = make_colour_dataset(project / "photos", per_class=3, classes=("red", "blue"))
    outside = make_colour_dataset(tmp_path / "outside", per_class=3, classes=("red", "blue"))
    return project, built, photos, outside


def test_a_visitor_reads_their_own_folder_and_never_anothers_or_the_studios(server):
    from tlcore import paths
    from tlcore.errors import StudioError

    project, built, photos, _ = server
    assert paths.check_allowed(built, ALICE) == built.resolve()
    assert paths.check_allowed(photos, BOB) == photos.resolve()
    for typed in (built, project / "workspace" / "sessions", project / "workspace", project / "runs", "cache"):
        with pytest.raises(StudioError, match="other visitors' uploads, datasets and runs are theirs") as caught:
            paths.check_allowed(typed, BOB)
        assert ALICE not in str(caught.value) or ALICE in str(typed)


def test_a_scan_of_a_folder_that_holds_the_studios_folders_leaves_them_out(server):
    from tlcore import paths
    from tlcore.data.scan import scan_folder

    project, _, _, _ = server
    scan = scan_folder(project, min_images_per_class=1, fence=paths.dataset_fence(project, BOB))
    assert scan.classes == ["photos"] and len(scan.items) == 6  # the project folder's own images only
    assert {item.label for item in scan.items} == {"photos"}
    refused = {Path(s.path).name: s.reason for s in scan.skipped}
    assert set(refused) >= {"workspace", "runs", "cache"}
    assert all("folder the studio keeps for its visitors" in refused[name] for name in ("workspace", "runs", "cache"))


def test_links_inside_a_dataset_are_followed_only_where_the_visitor_may_read(server):
    from tlcore import paths
    from tlcore.data.scan import scan_folder

    project, built, photos, outside = server
    (photos / "red" / "stolen.png").symlink_to(outside / "red" / "red_0.png")
    (photos / "red" / "theirs.png").symlink_to(built / "blue" / "blue_0.png")
    (photos / "red" / "near.png").symlink_to(photos / "blue" / "blue_0.png")
    (photos / "green").symlink_to(outside / "blue", target_is_directory=True)
    (photos / "blue" / "deeper").symlink_to(outside, target_is_directory=True)
    scan = scan_folder(photos, min_images_per_class=1, fence=paths.dataset_fence(photos, BOB))
    reasons = {Path(s.path).name: s.reason for s in scan.skipped}
    assert "outside the folders this studio may read" in reasons["stolen.png"]
    assert str((outside / "red" / "red_0.png").resolve()) in reasons["stolen.png"]
    assert "folder the studio keeps for its visitors" in reasons["theirs.png"]
    assert "outside the folders" in reasons["green"] and "not followed" in reasons["deeper"]
    assert scan.classes == ["blue", "red"] and scan.counts == {"blue": 3, "red": 4}  # near.png stays: inside
    cli = scan_folder(photos, min_images_per_class=1)  # the CLI: a local user's own links are followed
    assert cli.counts == {"blue": 3, "green": 3, "red": 6}


def test_label_decisions_are_kept_per_visitor(server):
    from tlcore.data.scan import scan_folder
    from tlcore.insight import overlay

    _, _, photos, _ = server
    scan = scan_folder(photos, min_images_per_class=1)
    item = scan.items[0]
    overlay.record([str(photos)], item.path, item.digest, "exclude", owner=ALICE)
    assert len(overlay.apply_stored_overlay(scan, ALICE).items) == len(scan.items) - 1
    assert len(overlay.apply_stored_overlay(scan, BOB).items) == len(scan.items)
    assert overlay.decisions([str(photos)], BOB) == []
    overlay.record([str(photos)], item.path, item.digest, "undo", owner=BOB)  # Bob's undo: his own (none)
    assert len(overlay.decisions([str(photos)], ALICE)) == 1
    assert overlay.decisions([str(photos)]) == []  # nor the CLI's


def test_training_applies_the_owners_decisions_through_the_fence(server):
    from tlcore.config import DataConfig
    from tlcore.data.pipeline import load_dataset
    from tlcore.data.scan import scan_folder
    from tlcore.insight import overlay

    _, _, photos, outside = server
    (photos / "red" / "stolen.png").symlink_to(outside / "red" / "red_0.png")
    item = scan_folder(photos, min_images_per_class=1).items[0]
    overlay.record([str(photos)], item.path, item.digest, "exclude", owner=ALICE)
    sizes = {
        owner: len(load_dataset(DataConfig(str(photos), val_split=0.34, owner=owner)).train)
        + len(load_dataset(DataConfig(str(photos), val_split=0.34, owner=owner)).val)
        for owner in (ALICE, BOB, None)
    }
    assert sizes == {ALICE: 5, BOB: 6, None: 7}  # Alice's exclusion is hers; the link only outside the fence


def test_only_a_local_server_offers_to_allow_a_folder_and_only_for_that_visitor(server, monkeypatch):
    from tlcore import paths
    from tlcore.errors import StudioError

    _, _, _, outside = server
    assert paths.is_local_server("127.0.0.1") and paths.is_local_server("localhost") and paths.is_local_server("::1")
    assert not paths.is_local_server(None) and not paths.is_local_server("0.0.0.0")
    assert not paths.is_local_server("192.168.1.20")
    assert not paths.can_allow(outside, ALICE, local=False)
    with pytest.raises(StudioError, match="TLCORE_DATA_ROOTS"):
        paths.allow_folder(ALICE, outside, local=False)
    assert paths.can_allow(outside, ALICE, local=True)
    paths.allow_folder(ALICE, outside, local=True)
    assert paths.check_allowed(outside / "red", ALICE) and not paths.is_allowed(outside, BOB)
    with pytest.raises(StudioError, match="cannot be allowed"):
        paths.allow_folder(BOB, paths.workspace_dir(), local=True)
    monkeypatch.setenv("TLCORE_SHARED", "1")  # behind a reverse proxy: loopback, yet shared
    assert not paths.is_local_server("127.0.0.1")
    monkeypatch.setenv("TLCORE_SHARED", "maybe")
    with pytest.raises(StudioError, match="TLCORE_SHARED should be 1 or 0"):
        paths.is_local_server("127.0.0.1")


def test_downloads_a_visitor_names_need_a_local_server_or_the_operators_yes(server, monkeypatch, tmp_path):
    from tlcore import paths
    from tlcore.errors import StudioError
    from tlcore.runs.store import RunStore
    from tlcore.text.models import check_model_source

    assert paths.downloads_allowed(local=True) and not paths.downloads_allowed(local=False)
    monkeypatch.setenv("TLCORE_ALLOW_DOWNLOADS", "1")
    assert paths.downloads_allowed(local=False)
    monkeypatch.setenv("TLCORE_ALLOW_DOWNLOADS", "0")
    assert not paths.downloads_allowed(local=True)
    store = RunStore(paths.runs_dir(), owner=BOB)
    for source in ("gpt2_base_en", "hf://openai-community/gpt2", "kaggle://keras/gpt2/keras/gpt2_base_en"):
        with pytest.raises(StudioError, match="TLCORE_ALLOW_DOWNLOADS=1"):
            check_model_source(source, store, BOB, downloads=False)
        assert check_model_source(source, store, BOB, downloads=True) == source
    preset = tmp_path / "elsewhere" / "preset"
    preset.mkdir(parents=True)
    (preset / "config.json").write_text('{"secret_field": 42}')
    with pytest.raises(StudioError, match="outside the folders this studio may read") as caught:
        check_model_source(str(preset), store, BOB, downloads=True)
    assert "secret_field" not in str(caught.value)
    theirs = RunStore(paths.runs_dir(), owner=ALICE).create(name="text-gpt2")
    with pytest.raises(StudioError, match="No run named"):
        check_model_source(str(theirs / "preset"), store, BOB, downloads=True)
    assert check_model_source(str(theirs / "preset"), RunStore(paths.runs_dir(), owner=ALICE), ALICE, False)


def test_pasted_text_counts_toward_the_20_megabyte_limit():
    from tlcore.errors import StudioError
    from tlcore.text.finetuning import read_text_files

    with pytest.raises(StudioError, match="The pasted text total 21.0 MB; the limit is 20 MB"):
        read_text_files([], pasted="x" * (21 * 2**20))
    with pytest.raises(StudioError, match="The text files and the pasted text total"):
        read_text_files([("a.txt", b"y" * (15 * 2**20))], pasted="x" * (6 * 2**20))
    assert read_text_files([("a.txt", b"files")], pasted="pasted") == "files\n\npasted"


# ----------------------------------------------------------------------------- the pages (AppTest)


@pytest.fixture
def pages(tmp_path, monkeypatch):
    """The dashboard through app.py (tests.test_app), with an allowed folder and one outside it."""
    import streamlit as st

    from tests.helpers import make_colour_dataset

    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path / "allowed"))
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    for name in ("TLCORE_SHARED", "TLCORE_ALLOW_DOWNLOADS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "allowed").mkdir()
    outside = make_colour_dataset(tmp_path / "outside", per_class=3, classes=("red", "blue"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield outside
    serve_on(None)


def serve_on(address):
    """Streamlit's ``server.address`` as ``make run`` (127.0.0.1) or ``make serve`` sets it."""
    from streamlit import config

    config.set_option("server.address", address)


def open_page(page: str):
    from tests.test_app import app

    return app(page)


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_the_data_page_offers_to_allow_an_outside_folder_on_a_local_server_only(pages, address):
    serve_on(address)
    at = open_page("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(pages)).run()
    assert "outside the folders this studio may read" in at.error[0].value
    offers = [button for button in at.button if button.label.startswith("Allow")]
    if address != "127.0.0.1":
        assert not offers and not at.metric  # a shared server: only the operator decides
        return
    offers[0].click().run()
    assert not at.error and not at.exception
    assert at.session_state["data_config"].data_dir == str(pages.resolve())
    assert [metric.value for metric in at.metric][:2] == ["6", "2"]


def test_the_text_page_downloads_only_where_allowed_and_reads_only_allowed_folders(pages, tmp_path, monkeypatch):
    monkeypatch.setenv("TLCORE_SHARED", "1")
    serve_on("127.0.0.1")  # behind a proxy: loopback, yet shared
    at = open_page("pages/text/generate.py")
    assert "does not download models visitors name" in " ".join(info.value for info in at.info)
    next(button for button in at.button if button.label == "Generate").click().run()
    assert "TLCORE_ALLOW_DOWNLOADS=1" in at.error[0].value.replace("\\_", "_")
    preset = tmp_path / "outside" / "preset"
    preset.mkdir()
    (preset / "config.json").write_text('{"secret_field": "found"}')
    at.radio[0].set_value("Local preset folder").run()
    at.text_input[0].set_value(str(preset)).run()
    next(button for button in at.button if button.label == "Generate").click().run()
    message = at.error[0].value.replace("\\_", "_")
    assert "outside the folders this studio may read" in message and "secret_field" not in message
    assert not at.exception
