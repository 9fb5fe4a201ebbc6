"""Hostile inputs, big inputs, interruptions: clear messages, bounded resources, nothing lost."""

import io
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import colour_image, make_colour_dataset
from tests.test_cli import tlcore
from tests.test_data import documented_message, jpeg_bytes, png_claiming, write_zip
from tlcore import paths
from tlcore.data.archives import extract_zip
from tlcore.data.common import is_ignored
from tlcore.data.demo import DEMO_DATASET, make_demo_dataset
from tlcore.data.scan import scan_folder
from tlcore.data.sources import resolve_source
from tlcore.errors import StudioError

ROOT = Path(__file__).resolve().parents[1]

NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\0"), min_size=1, max_size=12
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(tree=st.dictionaries(NAMES, st.dictionaries(NAMES, st.binary(max_size=300), max_size=4), min_size=0, max_size=4))
def test_scan_of_any_folder_tree_accounts_for_every_file_and_never_crashes(tmp_path_factory, tree):
    root = tmp_path_factory.mktemp("tree")
    written = []
    for folder, files in tree.items():
        try:
            (root / folder).mkdir(exist_ok=True)
            for name, payload in files.items():
                (root / folder / name).write_bytes(payload)
                written.append(root / folder / name)
        except OSError:
            continue  # a name the file system refuses (e.g. '.' or '..')
    try:
        scan = scan_folder(root)
    except StudioError as error:
        assert "class" in str(error)  # no class folders: a clear message
        return
    seen = {item.path for item in scan.items} | {s.path for s in scan.skipped}
    for path in written:
        if path.is_file() and not is_ignored(path.name) and not is_ignored(path.parent.name):
            assert str(path) in seen, f"{path} was neither used nor reported"
    assert all(s.reason for s in scan.skipped)
    assert sum(scan.counts.values()) == len(scan.items)


SCAN_MEMORY = """
import json, sys
from tlcore.data.scan import scan_folder
def status(field):  # kB; VmHWM is this process's peak (ru_maxrss would include the parent's)
    line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024
before = status("VmRSS")
scan = scan_folder(sys.argv[1])
print(json.dumps({"growth": status("VmHWM") - before, "counts": scan.counts, "skipped": len(scan.skipped)}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the process size from /proc (Linux)")
def test_ten_thousand_images_scan_with_bounded_process_memory(tmp_path):
    # 10,000 images of 128x128: kept in memory they would take 10,000 x 48 KB = 470 MB
    # (Pillow holds 64 KB each), so a scan that kept them would break the 150 MB bound.
    # A smooth gradient has 16,384 colours (not a placeholder) and is 300 bytes as a PNG;
    # hard links make the 10,000 files in a fraction of a second.
    y, x = np.mgrid[0:128, 0:128]
    source = tmp_path / "gradient.png"
    Image.fromarray(np.stack([x * 2, y * 2, x + y], axis=-1).astype(np.uint8)).save(source)
    for label in ("a", "b"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for index in range(5000):
            os.link(source, tmp_path / "set" / label / f"{index}.png")
    completed = subprocess.run(
        [sys.executable, "-c", SCAN_MEMORY, str(tmp_path / "set")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["counts"] == {"a": 5000, "b": 5000} and report["skipped"] == 0
    assert report["growth"] < 150 * 2**20, f"the scan grew the process by {report['growth'] / 2**20:.0f} MB"


def test_a_zip_that_expands_to_gigabytes_is_refused_without_extracting(tmp_path):
    bomb = tmp_path / "bomb.zip"
    zeros = bytes(2**24)
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("cats/huge.png", "w", force_zip64=True) as entry:
            for _ in range(160):  # 2.5 GB of zeros
                entry.write(zeros)
    assert bomb.stat().st_size < 20 * 2**20
    with pytest.raises(StudioError) as caught:
        extract_zip(bomb, tmp_path / "out")
    assert (
        str(caught.value)
        == documented_message("zip: total uncompressed size")
        == ("The zip expands to 2.5 GB, over the 2 GB limit.")
    )
    assert not (tmp_path / "out").exists()


def hostile_folder(root: Path) -> Path:
    rng = random.Random(0)
    for label in ("ants", "bees"):
        (root / label).mkdir(parents=True)
        for index in range(4):
            colour_image((200, 40 * index, 30), 48, rng).save(root / label / f"ok_{index}.png")
    photo = colour_image((120, 90, 60), 64, rng)
    good = jpeg_bytes(photo)
    files = {
        "truncated.jpg": good[: len(good) // 2],
        "zero.jpg": b"",
        "text.jpg": b"just some text",
        "one_pixel.png": _png(Image.new("RGB", (1, 1))),
        "bomb_header.png": png_claiming(40000, 40000),
    }
    for name, payload in files.items():
        (root / "ants" / name).write_bytes(payload)
    photo.convert("CMYK").save(root / "bees" / "cmyk.jpg")
    Image.fromarray((np.random.default_rng(1).integers(0, 65535, (48, 48))).astype(np.uint16)).save(
        root / "bees" / "deep16.png"
    )
    photo.convert("RGBA").save(root / "bees" / "alpha.png")
    photo.convert("P", palette=Image.ADAPTIVE).save(root / "bees" / "palette.gif")
    (root / "empty class").mkdir()
    (root / "bees" / "été à la plage.png").write_bytes((root / "bees" / "alpha.png").read_bytes())
    return root


def _png(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


EXPECTED_SKIPS = {
    "truncated.jpg": "truncated",
    "zero.jpg": "empty",
    "text.jpg": "not a readable image",
    "one_pixel.png": "too small",
    "bomb_header.png": "pixel",
}


def test_cli_inspect_reports_every_hostile_file_without_a_traceback(tmp_path):
    root = hostile_folder(tmp_path / "hostile")
    completed = tlcore("inspect", "--data", root)
    assert completed.returncode == 0 and "Traceback" not in completed.stderr, completed.stderr
    report = json.loads(completed.stdout)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    for name, fragment in EXPECTED_SKIPS.items():
        assert fragment in reasons[name], (name, reasons.get(name))
    assert report["counts"] == {"ants": 4, "bees": 9, "empty class": 0}
    assert any("'empty class' has no usable images" in w for w in report["warnings"])


def test_cli_trains_on_the_hostile_folder_using_only_the_good_images(tmp_path):
    root = hostile_folder(tmp_path / "hostile")
    completed = tlcore(
        "train",
        "--data",
        root,
        "--backbone",
        "SmallCNN",
        "--weights",
        "none",
        "--image-size",
        32,
        "--epochs",
        2,
        "--val-split",
        "0.3",
        "--out",
        tmp_path / "run",
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["skipped_files"] == len(EXPECTED_SKIPS) and summary["classes"] == ["ants", "bees"]


@pytest.fixture
def studio(tmp_path, monkeypatch):
    """The dashboard with its own workspace and run store, as in test_app: uploads and
    saved models land in ``tmp_path``, never in the repository's ``workspace/``. Like a
    demo server, it may read only ``tmp_path`` (``TLCORE_DATA_ROOTS``)."""
    import streamlit as st

    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path / "workspace"
    st.cache_resource.clear()
    st.cache_data.clear()


def test_data_page_health_report_lists_hostile_files(tmp_path, studio):
    from tests.test_app import app

    root = hostile_folder(tmp_path / "hostile")
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(root)).run()
    assert not at.exception
    table = (at.dataframe or at.table)[0].value  # the skipped files, however the page draws them
    reasons = dict(zip(table["file"].map(lambda p: Path(p).name), table["reason"]))
    assert all(fragment in reasons[name] for name, fragment in EXPECTED_SKIPS.items())
    assert any("'empty class' has no usable images" in w.value for w in at.warning)


def test_corrupt_and_lambda_model_uploads_are_refused_on_the_model_page(tmp_path, studio):
    import keras

    from tests.test_app import app

    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(keras.layers.Lambda(lambda t: t * 2)(inputs))).save(
        tmp_path / "evil.keras"
    )
    at = app("pages/image/model.py")
    at.selectbox[0].set_value("Your own Keras model file…").run()
    at.file_uploader[0].set_value(
        ("evil.keras", (tmp_path / "evil.keras").read_bytes(), "application/octet-stream")
    ).run()
    assert not at.exception, at.exception[0].stack_trace[-6:]
    assert "Lambda layer" in at.error[0].value
    at.file_uploader[0].set_value(("broken.keras", b"PK\x03\x04 not really", "application/octet-stream")).run()
    assert not at.exception and "could not be read as a Keras model" in at.error[0].value
    assert {p.name for p in studio.rglob("*.keras")} == {"evil.keras", "broken.keras"}  # not in the repository


def test_predict_page_handles_a_sixteen_bit_upload(trained_run, studio, monkeypatch):
    from tests.test_app import app

    monkeypatch.setenv("TLCORE_RUNS_DIR", str(trained_run.path.parent))
    deep = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).integers(0, 65535, (40, 40))).astype(np.uint16)).save(deep, "PNG")
    at = app("pages/image/predict.py")
    at.file_uploader[0].set_value(("deep.png", deep.getvalue(), "image/png")).run()
    assert not at.exception, at.exception[0].stack_trace[-4:] if at.exception else ""
    assert not at.error and at.get("plotly_chart")


# ----------------------------------------------------------------------------- data roots (issue 9)


@pytest.fixture
def demo_server(tmp_path, monkeypatch):
    """A demo server: TLCORE_DATA_ROOTS is its data folder; photos also exist elsewhere."""
    allowed = make_colour_dataset(tmp_path / "served" / "photos", per_class=3, classes=("red", "blue")).parent
    private = make_colour_dataset(tmp_path / "private" / "photos", per_class=3, classes=("red", "blue"))
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(allowed))
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    return allowed, private


def refused(path) -> str:
    with pytest.raises(StudioError) as caught:
        paths.check_allowed(path)
    message = str(caught.value)
    assert "TLCORE_DATA_ROOTS" in message and "outside the folders this studio may read" in message
    return message


def test_a_folder_inside_the_data_roots_is_allowed(demo_server):
    allowed, _ = demo_server
    assert paths.check_allowed(allowed / "photos") == (allowed / "photos").resolve()
    assert scan_folder(resolve_source(allowed / "photos", restricted=True)).counts == {"blue": 3, "red": 3}


def test_an_absolute_path_outside_the_data_roots_is_refused(demo_server):
    allowed, private = demo_server
    assert str(allowed) in refused(private)  # says what is allowed
    refused("/etc")
    with pytest.raises(StudioError, match="TLCORE_DATA_ROOTS"):
        resolve_source(private, restricted=True)


def test_dot_dot_cannot_climb_out_of_the_data_roots(demo_server):
    allowed, private = demo_server
    climb = allowed / "photos" / ".." / ".." / "private" / "photos"
    assert climb.is_dir() and str(climb).startswith(str(allowed))
    refused(climb)
    refused(f"{allowed}/photos/../../private/photos")


def test_a_symbolic_link_cannot_lead_out_of_the_data_roots(demo_server):
    allowed, private = demo_server
    (allowed / "shortcut").symlink_to(private, target_is_directory=True)
    (allowed / "model.keras").symlink_to(private / "red" / "red_0.png")
    refused(allowed / "shortcut")
    refused(allowed / "shortcut" / "red")
    refused(allowed / "model.keras")  # a model-file path is checked the same way


COLOURS = {"red": (200, 0, 0), "blue": (0, 0, 200)}


def test_the_visitors_own_folders_are_always_allowed(demo_server, tmp_path):
    owner = "0123456789abcdef"
    upload = paths.owner_dir(owner) / "uploads" / "photos.zip"
    upload.parent.mkdir(parents=True)
    assert paths.check_allowed(upload, owner) == upload.resolve()
    assert paths.check_allowed(make_demo_dataset(per_class=1, image_size=16))
    images = {f"{name}/a.png": _png(colour_image(rgb, 32, random.Random(0))) for name, rgb in COLOURS.items()}
    write_zip(upload, images)
    extracted = resolve_source(upload, restricted=True, owner=owner)  # lands in the cache
    scanned = scan_folder(extracted, min_images_per_class=1, fence=paths.dataset_fence(extracted, owner))
    assert scanned.counts == {"blue": 1, "red": 1}
    assert paths.check_allowed(resolve_source(DEMO_DATASET, restricted=True))


def test_unset_data_roots_allow_home_and_the_current_folder_only(tmp_path, monkeypatch):
    monkeypatch.delenv("TLCORE_DATA_ROOTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert paths.check_allowed(tmp_path / "home" / "Pictures") == (tmp_path / "home" / "Pictures").resolve()
    assert paths.check_allowed("photos") == (tmp_path / "project" / "photos").resolve()
    assert "home folder and the current folder" in refused(tmp_path / "elsewhere")


def test_empty_data_roots_allow_only_the_studios_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCORE_DATA_ROOTS", "")
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.chdir(tmp_path)
    refused(tmp_path / "photos")
    assert paths.check_allowed(tmp_path / "workspace" / "sessions" / "0123456789abcdef" / "built", "0123456789abcdef")


def test_the_data_page_refuses_a_folder_outside_the_data_roots(tmp_path, tmp_path_factory, studio):
    from tests.test_app import app

    outside = make_colour_dataset(tmp_path_factory.mktemp("outside"), per_class=3, classes=("red", "blue"))
    (tmp_path / "shortcut").symlink_to(outside, target_is_directory=True)
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    for typed in (outside, tmp_path / "shortcut", tmp_path / ".." / outside.name):
        at.text_input[0].set_value(str(typed)).run()
        assert not at.exception and "TLCORE_DATA_ROOTS" in at.error[0].value.replace("\\_", "_"), typed
        assert not at.dataframe and not at.table and not at.success  # nothing from the folder is shown


def test_the_cli_is_not_limited_by_the_data_roots(demo_server):
    _, private = demo_server
    completed = tlcore("inspect", "--data", private)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["counts"] == {"blue": 3, "red": 3}
