"""Ray Data extraction and prediction on a real local Ray cluster (2 CPUs: two worker processes).

Each result is compared with the in-process path it replaces: the same feature-cache
entry (training then reads it), the same predictions, the same CLI contract.
"""

import argparse
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig

OBJECT_STORE_BYTES = 256 * 1024**2


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray with 2 CPUs (two worker processes at most), shut down after the module."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        log_to_driver=False,
        logging_level="ERROR",
    )
    yield ray
    ray.shutdown()


pytestmark = pytest.mark.usefixtures("ray_cluster")


def photo_subset(hymenoptera: Path, root: Path, per_class: int = 16) -> Path:
    """Real photos, a few per class (the probe measured Ray on all 396: that is the bench's job)."""
    for label in ("ants", "bees"):
        (root / label).mkdir(parents=True)
        for path in sorted((hymenoptera / "train" / label).glob("*.jpg"))[:per_class]:
            shutil.copy(path, root / label / path.name)
    return root


@pytest.fixture(scope="module")
def photos(hymenoptera, tmp_path_factory):
    return photo_subset(hymenoptera, tmp_path_factory.mktemp("photos"))


def dog_config(photos: Path, dog_model: Path) -> RunConfig:
    model = ModelConfig(str(dog_model), cut_layer="mobilenetv2_1.00_160")
    return RunConfig(DataConfig(str(photos), val_split=0.25), model, TrainConfig(epochs=3, batch_size=8, seed=3))


def stored(path: str) -> tuple:
    with np.load(path) as entry:
        return list(entry["digests"]), entry["features"]


def run_cli(argv: list[str]) -> dict:
    from tlcore.cli.main import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())


@pytest.mark.real_assets
def test_ray_extraction_writes_the_cache_entry_training_reads(photos, dog_model, tmp_path, monkeypatch):
    from tlcore.training.extraction import extract_to_cache
    from tlcore.training.trainer import run_training

    config = dog_config(photos, dog_model)
    monkeypatch.setenv("TLCORE_CACHE_DIR", str(tmp_path / "local"))
    local = extract_to_cache(config, "local")
    monkeypatch.setenv("TLCORE_CACHE_DIR", str(tmp_path / "ray"))
    flags = ["--data", str(photos), "--val-split", "0.25", "--seed", "3"]
    flags += ["--backbone", str(dog_model), "--cut-layer", "mobilenetv2_1.00_160"]
    ray = run_cli(["extract", *flags, "--engine", "ray", "--workers", "2"])

    assert {key: ray[key] for key in ("images", "engine", "workers")} == {"images": 32, "engine": "ray", "workers": 2}
    assert ray["seconds"] > 0 and ray["from_cache"] is False
    assert Path(ray["cache_file"]).relative_to(tmp_path / "ray") == Path(local.cache_file).relative_to(
        tmp_path / "local"
    )
    local_digests, local_features = stored(local.cache_file)
    ray_digests, ray_features = stored(ray["cache_file"])
    assert ray_digests == local_digests
    assert ray_features.shape == local_features.shape == (32, 5, 5, 1280)
    np.testing.assert_allclose(ray_features, local_features, rtol=1e-4, atol=1e-4)

    trained = run_training(config)  # the Ray-made entry is what training reads: no backbone pass
    assert trained.metrics["features_from_cache"] is True
    assert extract_to_cache(config, "ray", workers=2).from_cache is True  # found: Ray is not even started


@pytest.fixture
def mixed_folder(colour_dataset, tmp_path) -> Path:
    """Images in nested folders, plus a text file and a broken PNG that must be listed as skipped."""
    root = tmp_path / "to-predict"
    shutil.copytree(colour_dataset / "red", root / "red")
    shutil.copytree(colour_dataset / "blue", root / "deeper" / "blue")
    (root / "notes.txt").write_text("not an image")
    (root / "deeper" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def predict_parser() -> argparse.ArgumentParser:
    """The predict parser of tlcore.cli.main, with the flags it takes from tlcore.cli.scale."""
    from tlcore.cli.scale import add_predict_flags

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("images", nargs="+")
    add_predict_flags(parser)
    return parser


def test_ray_predictions_csv_equals_local_predictions(trained_run, mixed_folder, colour_dataset, tmp_path):
    from tlcore.cli.scale import predict_folders
    from tlcore.inference.batch import predict_images

    sources = [str(mixed_folder), str(colour_dataset / "green" / "green_0.png")]
    output = tmp_path / "out" / "preds.csv"
    argv = ["--model", str(trained_run.path), "--engine", "ray", "--workers", "2", "--output", str(output)]
    report = predict_folders(predict_parser().parse_args([*argv, *sources]))
    local = predict_images(trained_run.path, sources, "local")

    frame = pd.read_csv(output)
    assert list(frame.columns) == ["path", "label", "probability"]
    assert len(frame) == report["images"] == len(local.rows) == 25  # 12 red + 12 blue, nested; the named file
    assert frame["path"].tolist() == [row["path"] for row in local.rows]
    assert frame["label"].tolist() == [row["label"] for row in local.rows]
    np.testing.assert_allclose(frame["probability"], [row["probability"] for row in local.rows], atol=1e-5)
    assert report["skipped"] == local.skipped
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["notes.txt"] == "not an image file (.txt)"
    assert "not a readable image" in reasons["broken.png"]
    assert dict(zip(frame["path"].map(lambda p: Path(p).parent.name), frame["label"])) == {
        "red": "red",
        "blue": "blue",
        "green": "green",
    }
    assert (report["engine"], report["workers"]) == ("ray", 2)


def test_bad_engine_and_missing_model_are_one_line_errors(trained_run, tmp_path, capsys):
    from tlcore.cli.main import main

    flags = ["--data", str(tmp_path), "--backbone", "SmallCNN", "--workers", "0", "--engine", "ray"]
    assert main(["extract", *flags]) == 2
    assert "Expected at least 1 worker" in capsys.readouterr().err
    from tlcore.cli.scale import predict_folders

    args = argparse.Namespace(model=str(tmp_path), images=[str(tmp_path)], engine="ray", workers=2)
    args.output, args.ray_address = str(tmp_path / "p.csv"), None
    with pytest.raises(ValueError, match="not a finished run folder"):
        predict_folders(args)
