import io
import os
import random
import re
import stat
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import colour_image, make_colour_dataset
from tlcore.config import DataConfig
from tlcore.data.archives import extract_zip
from tlcore.data.common import Limits
from tlcore.data.images import decode_image, is_placeholder, placeholder_reason
from tlcore.data.pipeline import image_dataset, load_dataset, split_items
from tlcore.data.scan import scan_folder
from tlcore.data.sources import download_dataset, resolve_source, save_class_images
from tlcore.errors import StudioError
from tlcore.paths import cache_dir


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (with a valid CRC)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(raw)


@pytest.fixture
def messy_dataset(tmp_path):
    root = make_colour_dataset(tmp_path / "messy", per_class=6, classes=("red", "blue"))
    good = jpeg_bytes(Image.new("RGB", (64, 64), (200, 10, 10)))
    (root / "red" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "red" / "empty.jpg").write_bytes(b"")
    (root / "red" / "notes.jpg").write_text("this is a text file with a .jpg name")
    (root / "red" / "readme.txt").write_text("hello")
    (root / "red" / "tiny.png").write_bytes(_png(Image.new("RGB", (1, 1), (255, 0, 0))))
    (root / "red" / "huge.png").write_bytes(png_claiming(40000, 40000))
    (root / "blue" / ".DS_Store").write_bytes(b"\0\0")
    (root / "blue" / "._hidden.png").write_bytes(b"junk")
    (root / "__MACOSX").mkdir()
    (root / "stray.png").write_bytes(_png(Image.new("RGB", (32, 32))))
    nested = root / "blue" / "more photos" / "déjà vu"
    nested.mkdir(parents=True)
    colour_image((10, 10, 230), 40, random.Random(0)).save(nested / "bleu été.png")
    return root


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_scan_lists_every_unusable_file_with_its_reason(messy_dataset):
    scan = scan_folder(messy_dataset)
    reasons = {Path(s.path).name: s.reason for s in scan.skipped}
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.jpg"]
    assert "not a readable image" in reasons["notes.jpg"]
    assert "not an image file" in reasons["readme.txt"]
    assert "too small" in reasons["tiny.png"]
    assert "pixel" in reasons["huge.png"]
    assert "not inside a class folder" in reasons["stray.png"]
    # Hidden files, .DS_Store and __MACOSX are ignored, not reported as problems.
    assert not any(name in reasons for name in (".DS_Store", "._hidden.png"))
    assert scan.classes == ["blue", "red"]


def test_nested_folders_and_unicode_names_count_for_their_class(messy_dataset):
    scan = scan_folder(messy_dataset)
    assert scan.counts == {"blue": 7, "red": 6}
    assert any(item.path.endswith("bleu été.png") for item in scan.items)


def test_scan_warns_about_small_empty_and_imbalanced_classes(tmp_path):
    root = make_colour_dataset(tmp_path / "d", per_class=12, classes=("red",))
    make_colour_dataset(tmp_path / "d", per_class=3, classes=("blue",))
    (tmp_path / "d" / "green").mkdir()
    warnings = " ".join(scan_folder(root).warnings)
    assert "'blue' has only 3 images" in warnings
    assert "'green' has no usable images" in warnings
    assert "imbalanced" in warnings


def test_a_folder_without_class_folders_says_what_layout_is_expected(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    with pytest.raises(StudioError, match="one sub-folder per class"):
        scan_folder(tmp_path)


def test_one_class_is_refused_for_training(tmp_path):
    root = make_colour_dataset(tmp_path / "one", classes=("red",))
    with pytest.raises(StudioError, match="at least 2 classes"):
        load_dataset(DataConfig(str(root)))


LEFT, RIGHT = (30, 120, 200), (250, 200, 20)


def two_colour_image(mode: str) -> Image.Image:
    """64x64: ``LEFT`` colour on the left half, ``RIGHT`` on the right, converted to ``mode``."""
    if mode == "I;16":  # 16-bit grey: 13107 and 52428 of 65535 are 51 and 204 of 255
        return Image.fromarray(np.repeat(np.array([[13107] * 32 + [52428] * 32], dtype=np.uint16), 64, axis=0))
    image = Image.new("RGB", (64, 64), LEFT)
    image.paste(RIGHT, (32, 0, 64, 64))
    return image.convert(mode)


GREY = (round(0.299 * 30 + 0.587 * 120 + 0.114 * 200), round(0.299 * 250 + 0.587 * 200 + 0.114 * 20))


@pytest.mark.parametrize(
    "mode, left, right",
    [
        ("CMYK", LEFT, RIGHT),
        ("RGBA", LEFT, RIGHT),
        ("P", LEFT, RIGHT),
        ("L", (GREY[0],) * 3, (GREY[1],) * 3),
        ("LA", (GREY[0],) * 3, (GREY[1],) * 3),
        ("1", (GREY[0],) * 3, (GREY[1],) * 3),  # dithered: right on average
        ("I;16", (51,) * 3, (204,) * 3),
    ],
)
def test_every_image_mode_decodes_to_its_rgb_colours(tmp_path, mode, left, right):
    image = two_colour_image(mode)
    assert image.mode == mode or (mode == "I;16" and image.mode.startswith("I;16"))
    suffix = ".jpg" if mode == "CMYK" else ".gif" if mode == "P" else ".png"
    image.save(tmp_path / f"image{suffix}", **({"quality": 95} if mode == "CMYK" else {}))
    array = decode_image(tmp_path / f"image{suffix}", 32)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    # Away from the seam (bilinear resizing blends the middle columns):
    np.testing.assert_allclose(array[:, :12].reshape(-1, 3).mean(axis=0), left, atol=8)
    np.testing.assert_allclose(array[:, -12:].reshape(-1, 3).mean(axis=0), right, atol=8)


def test_sixteen_bit_png_keeps_its_contrast(tmp_path):
    gradient = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (64, 1))
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    array = decode_image(tmp_path / "deep.png")
    assert array[:, 0].mean() < 10 and array[:, -1].mean() > 245


def test_transparent_pixels_become_white_not_black(tmp_path):
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert decode_image(tmp_path / "clear.png").min() == 255


def test_exif_rotated_photo_comes_out_upright(tmp_path):
    # Stored 60 wide x 30 high: red left half, blue right half. EXIF orientation 6
    # means "rotate 90 degrees clockwise to display": upright it is 30 x 60, red on top.
    stored = Image.new("RGB", (60, 30), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "rotated.jpg").write_bytes(jpeg_bytes(stored, exif=exif.tobytes(), quality=95))
    upright = decode_image(tmp_path / "rotated.jpg")
    assert upright.shape == (60, 30, 3)
    assert upright[:25, :, 0].mean() > 200 and upright[35:, :, 2].mean() > 200


def test_draft_decoding_matches_full_decoding(tmp_path):
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).resize((1600, 1200))
    smooth = big.resize((40, 30)).resize((1600, 1200), Image.BICUBIC)
    (tmp_path / "big.jpg").write_bytes(jpeg_bytes(smooth, quality=95))
    fast = decode_image(tmp_path / "big.jpg", 160).astype(float)
    full = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB").resize((160, 160), Image.BILINEAR)).astype(float)
    assert np.abs(fast - full).mean() < 2.0


def test_resizing_is_tensorflows_bilinear_without_antialiasing(tmp_path):
    """The pretrained models were fed `tf.image.resize` pixels; antialiased resizing cost
    1.5-2 points of accuracy in bench/accuracy_study.py. A PNG (no draft decoding) with
    fine detail, shrunk 3.7x and also enlarged: equal to TensorFlow's within rounding."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    for shape in ((593, 611, 3), (97, 120, 3)):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "detail.png")
        ours = decode_image(tmp_path / "detail.png", 160).astype(float)
        reference = tf.image.resize(pixels, (160, 160), method="bilinear", antialias=False).numpy()
        assert np.abs(ours - reference).max() < 1.01  # 8-bit rounding (Pillow rounds its fixed-point sums)
        antialiased = tf.image.resize(pixels, (160, 160), method="bilinear", antialias=True).numpy()
        if shape[0] > 160:  # shrinking: an antialiased resize would be far from ours (noise is averaged away)
            assert np.abs(ours - antialiased).mean() > 10


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_claiming(40000, 40000))
    with pytest.raises(StudioError, match="pixel"):
        decode_image(tmp_path / "bomb.png")


DOCS = Path(__file__).resolve().parents[1] / "docs" / "LIMITS.md"


def documented_message(limit: str) -> str:
    """The quoted message docs/LIMITS.md shows for ``limit`` (the table row's first column)."""
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == limit:
            return re.search(r'"([^"]+)"', cells[-1]).group(1)
    raise AssertionError(f"docs/LIMITS.md has no row for {limit!r}")


@pytest.fixture(scope="module")
def sixty_megapixel_png() -> bytes:
    """10000x6000 = 60 million pixels: over the project's 50 million, under Pillow's own
    decompression-bomb guard (89 million), so only the project's check can refuse it.
    A solid palette image: 70 KB on disk, and cheap to make."""
    image = Image.new("P", (10000, 6000), 0)
    image.putpalette([200, 30, 30] * 256)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_pixel_limit_refuses_an_image_pillow_would_decode(tmp_path, sixty_megapixel_png):
    assert Image.open(io.BytesIO(sixty_megapixel_png)).size == (10000, 6000)  # Pillow alone accepts it
    expected = documented_message("image pixels")
    (tmp_path / "big.png").write_bytes(sixty_megapixel_png)
    for source in (tmp_path / "big.png", sixty_megapixel_png):
        with pytest.raises(StudioError) as caught:
            decode_image(source)
        assert str(caught.value) == expected
    make_colour_dataset(tmp_path / "set", per_class=2, classes=("red", "blue"))
    (tmp_path / "set" / "red" / "big.png").write_bytes(sixty_megapixel_png)
    reasons = {Path(s.path).name: s.reason for s in scan_folder(tmp_path / "set").skipped}
    assert reasons == {"big.png": expected}


def test_the_file_size_limit_refuses_a_63_megabyte_image(tmp_path):
    path = tmp_path / "padded.png"
    path.write_bytes(_png(colour_image((200, 40, 40), 64, random.Random(0))))
    os.truncate(path, 63 * 2**20)  # a valid PNG with 63 MB of trailing zeros (sparse: cheap)
    assert Image.open(path).size == (64, 64)  # Pillow alone opens it
    expected = documented_message("one image file")
    with pytest.raises(StudioError) as caught:
        decode_image(path)
    assert str(caught.value) == expected
    make_colour_dataset(tmp_path / "set", per_class=2, classes=("red", "blue"))
    path.rename(tmp_path / "set" / "red" / "padded.png")
    reasons = {Path(s.path).name: s.reason for s in scan_folder(tmp_path / "set").skipped}
    assert reasons == {"padded.png": expected}


def test_split_is_stratified_and_reproducible(colour_dataset):
    scan = scan_folder(colour_dataset)
    train, val = split_items(scan.items, 0.25, seed=3)
    again_train, again_val = split_items(scan.items, 0.25, seed=3)
    assert [i.path for i in val] == [i.path for i in again_val]
    assert {label: sum(i.label == label for i in val) for label in scan.classes} == {"blue": 3, "green": 3, "red": 3}
    assert not {i.path for i in train} & {i.path for i in val}
    other_train, other_val = split_items(scan.items, 0.25, seed=4)
    assert [i.path for i in val] != [i.path for i in other_val]


def test_explicit_validation_folder_must_not_have_unknown_classes(tmp_path):
    train = make_colour_dataset(tmp_path / "train", classes=("red", "blue"))
    val = make_colour_dataset(tmp_path / "val", per_class=2, classes=("red", "green"))
    with pytest.raises(StudioError, match="green"):
        load_dataset(DataConfig(str(train), val_dir=str(val)))


# ----------------------------------------------------------------------------- zips


def write_zip(path: Path, entries: dict, symlinks=()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def test_zip_with_wrapper_folder_and_mac_junk_extracts_to_the_class_folders(tmp_path):
    png = _png(Image.new("RGB", (32, 32), (255, 0, 0)))
    archive = write_zip(
        tmp_path / "photos.zip",
        {
            "photos/cats/a.png": png,
            "photos/dogs/b.png": png,
            "__MACOSX/photos/cats/._a.png": b"junk",
            "photos/.DS_Store": b"junk",
        },
    )
    root = extract_zip(archive, tmp_path / "out")
    assert sorted(p.name for p in root.iterdir()) == ["cats", "dogs"]
    assert not (tmp_path / "out" / "__MACOSX").exists()


@pytest.mark.parametrize(
    "entries, symlinks, fragment",
    [
        ({"../evil.png": b"x"}, (), "outside"),
        ({"/etc/evil.png": b"x"}, (), "outside"),
        ({"cats/../../evil.png": b"x"}, (), "outside"),
        ({"cats/a.png": b"x"}, [("cats/link.png", "/etc/passwd")], "symbolic link"),
        ({"cats/zeros.png": b"\0" * (20 * 2**20)}, (), "zip bomb"),
    ],
)
def test_hostile_zips_are_refused_and_nothing_lands_outside(tmp_path, entries, symlinks, fragment):
    archive = write_zip(tmp_path / "hostile.zip", entries, symlinks)
    target = tmp_path / "work" / "out"
    with pytest.raises(StudioError, match=fragment):
        extract_zip(archive, target)
    assert not (tmp_path / "work" / "evil.png").exists() and not (tmp_path / "evil.png").exists()
    assert not target.exists()


def test_zip_over_the_size_limit_is_refused(tmp_path):
    payload = np.random.default_rng(0).bytes(300_000)
    archive = write_zip(tmp_path / "big.zip", {"a/1.bin": payload, "b/2.bin": payload})
    with pytest.raises(StudioError, match="GB limit|limit"):
        extract_zip(archive, tmp_path / "out", Limits(max_zip_bytes=400_000))


def test_a_zip_with_more_than_50000_entries_is_refused_before_extracting(tmp_path):
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as archive:
        for index in range(50_001):
            archive.writestr(f"c/{index}", b"")
    with pytest.raises(StudioError) as caught:
        extract_zip(tmp_path / "many.zip", tmp_path / "out")
    assert str(caught.value) == documented_message("zip: entries")
    assert not (tmp_path / "out").exists()


def test_a_zip_whose_header_understates_an_entry_is_refused(tmp_path):
    # Central directory and local header both say 1,000 bytes; the data inflates to 1 MB.
    archive = write_zip(tmp_path / "liar.zip", {"cats/a.png": bytes(2**20), "dogs/b.png": b"fine"})
    raw = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed-size fields
        start = raw.index(signature)
        raw[start + offset : start + offset + 4] = struct.pack("<I", 1000)
    archive.write_bytes(bytes(raw))
    assert zipfile.ZipFile(archive).getinfo("cats/a.png").file_size == 1000
    with pytest.raises(StudioError, match="could not be extracted"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_bounded_copy_stops_an_entry_that_inflates_past_its_declared_size(tmp_path, monkeypatch):
    # CPython's zip reader itself stops at the declared size; the bounded copy is the
    # guard for a reader that does not: what is written is counted, not what is declared.
    archive = write_zip(tmp_path / "liar.zip", {"cats/a.png": b"x" * 100, "dogs/b.png": b"y" * 100})
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *args, **kwargs: io.BytesIO(bytes(3 * 2**20)))
    with pytest.raises(StudioError) as caught:
        extract_zip(archive, tmp_path / "out")
    assert str(caught.value) == "The zip entry 'cats/a.png' expands beyond its declared size; the zip is refused."
    assert not (tmp_path / "out").exists()


def test_not_a_zip_is_reported(tmp_path):
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(StudioError, match="not a readable zip"):
        extract_zip(tmp_path / "fake.zip", tmp_path / "out")


def test_zip_source_is_extracted_once_into_the_cache(tmp_path):
    png = _png(Image.new("RGB", (32, 32), (255, 0, 0)))
    archive = write_zip(tmp_path / "d.zip", {"cats/a.png": png, "dogs/b.png": png})
    first = resolve_source(archive)
    assert resolve_source(archive) == first
    assert str(first).startswith(str(cache_dir()))


# ----------------------------------------------------------------------------- sources


def test_class_uploads_become_a_dataset_folder(tmp_path):
    png = _png(colour_image((0, 255, 0), 32, random.Random(0)))
    root = save_class_images(
        tmp_path / "built", {"ripe fruit": [("../../x.png", png), ("b.png", png)], "leaf": [("c.png", png)]}
    )
    scan = scan_folder(root)
    assert scan.counts == {"leaf": 1, "ripe fruit": 2}
    assert all(Path(item.path).resolve().is_relative_to(root.resolve()) for item in scan.items)


def test_a_photo_over_the_limits_is_refused_when_added_to_a_class_not_skipped_later(tmp_path, sixty_megapixel_png):
    png = _png(colour_image((0, 255, 0), 32, random.Random(0)))
    root = save_class_images(tmp_path / "built", {"leaf": [("c.png", png)]})
    with pytest.raises(StudioError) as caught:
        save_class_images(
            root, {"leaf": [("d.png", png)], "big": [("huge.png", sixty_megapixel_png), ("x.jpg", b"no")]}
        )
    message = str(caught.value)
    assert "huge.png: the image is 10000x6000" in message and "x.jpg: not a readable image" in message
    assert scan_folder(root).counts == {"leaf": 1}  # nothing of the batch, the earlier photo kept


def test_demo_dataset_is_generated_offline_with_three_balanced_classes(demo_dataset):
    scan = scan_folder(demo_dataset)
    assert scan.classes == ["circle", "square", "triangle"]
    assert set(scan.counts.values()) == {200}
    assert not scan.skipped and not scan.warnings


def test_unknown_downloadable_dataset_lists_the_known_ones():
    with pytest.raises(StudioError, match="hymenoptera"):
        download_dataset("imagenet-full")


def test_pipeline_batches_images_and_labels(colour_dataset):
    scan = scan_folder(colour_dataset)
    labels = np.arange(len(scan.items)) % 3
    dataset = image_dataset(scan.items, labels, 24, 8, shuffle=True, augment=True, seed=1)
    batches = list(dataset)
    assert sum(int(x.shape[0]) for x, _ in batches) == len(scan.items)
    images, batch_labels = batches[0]
    assert images.shape[1:] == (24, 24, 3) and images.dtype.name == "float32"
    assert float(images.numpy().max()) <= 255.0


def test_augmentation_changes_every_image_and_differs_between_epochs(colour_dataset):
    items = scan_folder(colour_dataset).items[:16]
    labels = np.arange(len(items)) % 3

    def epoch(dataset):
        batches = list(dataset)
        return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches])

    plain, plain_labels = epoch(image_dataset(items, labels, 24, 8))
    augmented = image_dataset(items, labels, 24, 8, augment=True, seed=1)
    first, first_labels = epoch(augmented)
    second, _ = epoch(augmented)
    assert first.shape == plain.shape and list(first_labels) == list(plain_labels) == list(labels)
    per_image_change = np.abs(first - plain).mean(axis=(1, 2, 3))
    assert per_image_change.min() > 2.0, per_image_change  # every image, not only some
    assert np.abs(second - first).mean() > 2.0  # fresh randomness each epoch
    assert 0.0 <= first.min() and first.max() <= 255.0


def test_placeholder_detector_is_public_for_uploads():
    blank = _png(Image.new("RGB", (64, 64), (240, 240, 240)))
    reason = placeholder_reason(blank)
    assert reason == "looks like a blank or placeholder graphic, not a photo (1 colour, 100% one colour)"
    assert is_placeholder(blank) and is_placeholder(Image.open(io.BytesIO(blank)))
    photo = _png(colour_image((200, 40, 40), 64, random.Random(0)))
    assert placeholder_reason(photo) is None and not is_placeholder(Image.open(io.BytesIO(photo)))


@pytest.mark.real_assets
def test_shared_placeholder_gif_is_skipped_with_a_reason(hymenoptera):
    scan = scan_folder(hymenoptera / "train")
    skipped = {Path(s.path).name: s.reason for s in scan.skipped}
    assert list(skipped) == ["imageNotFound.gif"]
    assert "placeholder" in skipped["imageNotFound.gif"]
    assert scan.counts == {"ants": 123, "bees": 121}
    assert any(item.path.endswith("formica.jpeg") for item in scan.items)
    kept = scan_folder(hymenoptera / "train", skip_placeholders=False)
    assert kept.counts["ants"] == 124
    # The Predict page can ask the same detector about an upload (issue 9).
    gif = next((hymenoptera / "train").rglob("imageNotFound.gif")).read_bytes()
    assert is_placeholder(gif) and placeholder_reason(gif) in skipped["imageNotFound.gif"]
    assert not is_placeholder(next((hymenoptera / "train").rglob("formica.jpeg")).read_bytes())


def test_an_upload_is_written_once_under_its_content_digest(tmp_path):
    from tlcore.data.sources import save_upload

    first = save_upload(tmp_path, "model.h5", b"version one")
    written = first.stat().st_mtime_ns
    time.sleep(0.01)
    assert save_upload(tmp_path, "model.h5", b"version one") == first  # a rerun: same path, not rewritten
    assert first.stat().st_mtime_ns == written
    other = save_upload(tmp_path, "model.h5", b"version two")  # same name, new content: a path of its own
    assert other != first and other.name == first.name == "model.h5"
    assert first.read_bytes() == b"version one" and other.read_bytes() == b"version two"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["model.h5", "model.h5"]  # no temp files


# ----------------------------------------------------------------------------- the Data page's summary


def _scan(root: str, labels: list[str], classes: list[str], skipped=()):
    from tlcore.data.scan import DatasetScan, ImageItem, Skipped

    items = [ImageItem(f"{root}/{label}/{index}.jpg", label, f"d{index}") for index, label in enumerate(labels)]
    return DatasetScan(root, classes, items, [Skipped(f"{root}/{path}", reason) for path, reason in skipped])


def test_the_data_summary_counts_what_training_uses_after_label_decisions():
    from tlcore.data.summary import summarize

    train = _scan("/d/train", ["ant"] * 5 + ["bee"] * 4, ["ant", "bee", "wasp"])  # wasp: an empty folder
    val = _scan("/d/val", ["ant", "bee", "bee"], ["ant", "bee"])
    decided = _scan("/d/train", ["ant"] * 4 + ["bee"] * 3, ["ant", "bee", "wasp"])  # 2 images excluded
    summary = summarize([train, val], [decided, val])
    assert (summary.images, summary.classes, summary.excluded) == (10, 2, 2)
    assert summary.trainable
    assert summary.describe() == "10 images · 2 classes (2 excluded by your label decisions)"
    assert summarize([train], [train]).describe() == "9 images · 2 classes"
    one_class = summarize([train], [_scan("/d/train", ["ant"] * 5, ["ant", "bee"])])
    assert one_class.classes == 1 and not one_class.trainable


def test_the_data_page_lists_skipped_files_by_relative_path_and_a_few_samples_per_class():
    from tlcore.data.summary import class_mismatch, samples, skipped_table

    train = _scan("/d/train", ["ant", "bee", "ant", "ant"], ["ant", "bee", "wasp"], [("ant/x.gif", "blank")])
    table = skipped_table(train)
    assert table.to_dict("records") == [{"file": "ant/x.gif", "reason": "blank"}]
    picked = samples(train, per_class=2)
    assert list(picked) == ["ant", "bee"]  # no empty class
    assert [item.path for item in picked["ant"]] == ["/d/train/ant/0.jpg", "/d/train/ant/2.jpg"]
    assert class_mismatch(train, None) is None
    assert class_mismatch(train, _scan("/d/val", ["bee"], ["bee", "ant", "wasp"])) is None  # order does not matter
    assert "differ from the training classes" in class_mismatch(train, _scan("/d/val", ["ant"], ["ant", "moth"]))


def test_the_train_page_estimates_with_the_split_the_run_will_use():
    from tlcore.data.summary import split_sizes

    assert split_sizes(245, 153, 0.2) == (245, 153)  # a validation folder: its own images
    assert split_sizes(100, None, 0.2) == (80, 20)
    assert split_sizes(9, None, 0.25) == (7, 2)
