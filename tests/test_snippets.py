"""Every downloadable inference snippet runs outside the repository and agrees with the studio.

The run is trained on pictures whose class is their orientation (red half on top vs
red half on the left), so a snippet that ignores EXIF orientation predicts the other
class for an EXIF-rotated photo; a grayscale upload checks the conversion to RGB.
"""

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tlcore.runs.formats import FORMATS

ROOT = Path(__file__).resolve().parents[1]


def halves(kind: str, size: int, rng: random.Random) -> Image.Image:
    """Red on one half, blue on the other: top/bottom for "top", left/right for "left"."""
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-40, 41, (size, size, 3))
    pixels = np.zeros((size, size, 3), int) + (40, 60, 220)
    if kind == "top":
        pixels[: size // 2] = (220, 40, 40)
    else:
        pixels[:, : size // 2] = (220, 40, 40)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def orientation_run(tmp_path_factory):
    from tlcore.runs.store import RunStore, read_run
    from tlcore.training.launch import train_run

    data = tmp_path_factory.mktemp("orientation")
    rng = random.Random(0)
    for kind in ("left", "top"):
        (data / kind).mkdir()
        for index in range(16):
            halves(kind, 48, rng).save(data / kind / f"{kind}{index}.png")
    config = RunConfig(
        DataConfig(str(data), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32, freeze=FreezePlan("none")),
        TrainConfig(epochs=12, batch_size=8, learning_rate=3e-3, early_stopping_patience=0, seed=1),
    )
    run_dir = RunStore(tmp_path_factory.mktemp("runs")).create(config, name="orientation")
    train_run(config, run_dir)
    return read_run(run_dir)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """An EXIF-rotated photo shown as "top" (stored as "left"), and a grayscale one."""
    folder = tmp_path_factory.mktemp("photos")
    stored = halves("left", 64, random.Random(5))  # stored with the red half on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display -> red half on top
    stored.save(folder / "rotated.jpg", exif=exif, quality=95)
    halves("top", 64, random.Random(6)).convert("L").save(folder / "gray.png")
    return folder


def test_the_orientation_run_learned_orientation(orientation_run):
    assert orientation_run.metrics["val_accuracy"] == 1.0


@pytest.mark.parametrize("kind", list(FORMATS))
def test_each_snippet_runs_in_a_fresh_folder_and_gives_the_studios_top1(kind, orientation_run, photos, tmp_path):
    from tlcore.inference.predict import predict_top_k
    from tlcore.runs.exports import export_downloads, export_formats

    run = orientation_run
    model = run.load_model()
    report = export_formats(run, [kind])
    assert "error" not in report[kind], report[kind]
    name, archive = export_downloads(run)[f"{FORMATS[kind].label} (.zip)"]
    assert name == f"{run.run_id}-{kind}.zip"  # each download named after its format
    folder = tmp_path / "user"  # outside the repository, no tlcore on the path
    shutil.unpack_archive(archive, folder)  # the download as it is: model, labels.txt, predict.py, card
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    for photo in ("rotated.jpg", "gray.png"):
        studio = predict_top_k(model, run.labels, [str(photos / photo)], 1)[0][0]
        assert studio["label"] == "top", photo  # both photos show the red half on top
        completed = subprocess.run(
            [sys.executable, "predict.py", str(photos / photo)],
            cwd=folder,
            env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-1500:]
        label, probability = completed.stdout.strip().splitlines()[-1].split()
        assert label == studio["label"], (kind, photo)
        # Float exports match to 1e-3; a quantized one within twice what its check measured on validation.
        tolerance = max(1e-3, 2 * report[kind]["max_prob_diff"])
        assert float(probability) == pytest.approx(studio["probability"], abs=tolerance), kind
