"""Hostile inputs, big inputs, interruptions: clear messages, bounded resources, nothing lost."""

import io
import json
import random
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import colour_image
from tests.test_cli import tlcore
from tests.test_data import jpeg_bytes, png_claiming
from tlcore import data
from tlcore.errors import StudioError

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
        scan = data.scan_folder(root)
    except StudioError as error:
        assert "class" in str(error)  # no class folders: a clear message
        return
    seen = {item.path for item in scan.items} | {s.path for s in scan.skipped}
    for path in written:
        if path.is_file() and not data._is_ignored(path.name) and not data._is_ignored(path.parent.name):
            assert str(path) in seen, f"{path} was neither used nor reported"
    assert all(s.reason for s in scan.skipped)
    assert sum(scan.counts.values()) == len(scan.items)


def test_ten_thousand_tiny_images_scan_with_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        folder = tmp_path / label
        folder.mkdir()
        for index in range(5000):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    tracemalloc.start()
    scan = data.scan_folder(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert scan.counts == {"a": 5000, "b": 5000} and not scan.skipped
    assert peak < 100 * 2**20, f"scan peaked at {peak / 2**20:.0f} MB of Python memory"


def test_a_zip_that_expands_to_gigabytes_is_refused_without_extracting(tmp_path):
    bomb = tmp_path / "bomb.zip"
    zeros = bytes(2**24)
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("cats/huge.png", "w", force_zip64=True) as entry:
            for _ in range(160):  # 2.5 GB of zeros
                entry.write(zeros)
    assert bomb.stat().st_size < 20 * 2**20
    with pytest.raises(StudioError, match="GB limit|zip bomb"):
        data.extract_zip(bomb, tmp_path / "out")
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


def test_data_page_health_report_lists_hostile_files(tmp_path, monkeypatch):
    from tests.test_app import app

    root = hostile_folder(tmp_path / "hostile")
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(tmp_path / "runs"))
    at = app("pages/image/data.py")
    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input[0].set_value(str(root)).run()
    assert not at.exception
    table = at.dataframe[0].value
    reasons = dict(zip(table["file"].map(lambda p: Path(p).name), table["reason"]))
    assert all(fragment in reasons[name] for name, fragment in EXPECTED_SKIPS.items())
    assert any("'empty class' has no usable images" in w.value for w in at.warning)


def test_corrupt_and_lambda_model_uploads_are_refused_on_the_model_page(tmp_path):
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


def test_predict_page_handles_a_sixteen_bit_upload(trained_run, monkeypatch):
    from tests.test_app import app

    monkeypatch.setenv("TLCORE_RUNS_DIR", str(trained_run.path.parent))
    deep = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).integers(0, 65535, (40, 40))).astype(np.uint16)).save(deep, "PNG")
    at = app("pages/image/predict.py")
    at.file_uploader[0].set_value(("deep.png", deep.getvalue(), "image/png")).run()
    assert not at.exception, at.exception[0].stack_trace[-4:] if at.exception else ""
    assert not at.error and at.get("plotly_chart")
