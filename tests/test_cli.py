import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlcore.runs.store import REQUIRED_METRICS

ROOT = Path(__file__).resolve().parents[1]


def tlcore(*args, env=None, timeout=600):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tlcore", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def assert_clean_failure(completed, fragment):
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in completed.stderr and completed.stdout == ""


def test_inspect_prints_classes_counts_and_skipped_files_as_json(tmp_path, colour_dataset):
    (colour_dataset / "red" / "broken.png").write_bytes(b"\x89PNG broken")
    try:
        completed = tlcore("inspect", "--data", colour_dataset)
    finally:
        (colour_dataset / "red" / "broken.png").unlink()
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["classes"] == ["blue", "green", "red"]
    assert report["counts"] == {"blue": 12, "green": 12, "red": 12}
    assert report["skipped"][0]["path"].endswith("broken.png") and report["skipped"][0]["reason"]


def test_train_then_predict(tmp_path, colour_dataset):
    out = tmp_path / "run"
    completed = tlcore(
        "train",
        "--data",
        colour_dataset,
        "--backbone",
        "SmallCNN",
        "--weights",
        "none",
        "--image-size",
        32,
        "--epochs",
        10,
        "--lr",
        0.1,
        "--batch-size",
        8,
        "--patience",
        0,
        "--seed",
        1,
        "--out",
        out,
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED_METRICS:
        assert key in metrics and key in summary
    assert metrics["val_accuracy"] >= 0.85 and metrics["epochs_run"] == 10
    assert completed.stderr.strip() == ""

    image = sorted((colour_dataset / "green").iterdir())[0]
    predicted = tlcore("predict", "--model", out, "--top-k", 2, image, tmp_path / "missing.jpg")
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    assert rows[0]["top_k"][0]["label"] == "green" and len(rows[0]["top_k"]) == 2
    assert "error" in rows[1]

    # evaluate: the saved numbers as they are, and again with flip TTA (the colour set is
    # mirror-symmetric in what matters, so TTA must not cost accuracy here).
    saved = json.loads(tlcore("evaluate", "--run", out).stdout)
    assert saved["tta"] == "none" and saved["images"] == metrics["num_val"]
    assert saved["val_accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert saved["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-3)
    flipped = tlcore("evaluate", "--run", out, "--tta", "flip")
    assert flipped.returncode == 0, flipped.stderr
    flipped = json.loads(flipped.stdout)
    assert flipped["tta"] == "flip" and flipped["images"] == saved["images"]
    assert flipped["val_accuracy"] >= saved["val_accuracy"] - 1e-9 and flipped["val_loss"] != saved["val_loss"]
    assert_clean_failure(tlcore("evaluate", "--run", out, "--tta", "rotate"), "Unknown --tta")
    assert_clean_failure(tlcore("evaluate", "--run", tmp_path), "not a finished run folder")


def _lambda_model(path):
    import keras

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(2, 3)(keras.layers.Lambda(lambda t: t + 1)(inputs))
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.parametrize(
    "case, fragment",
    [
        (lambda d, t: ["inspect", "--data", t / "nowhere"], "Dataset not found"),
        (lambda d, t: ["inspect", "--data", d / "red" / "red_0.png"], "is a file"),
        (lambda d, t: ["train", "--data", d, "--backbone", "ResNet9", "--out", t / "r"], "Unknown backbone"),
        (lambda d, t: ["train", "--data", d, "--backbone", "SmallCNN", "--epochs", "-1", "--out", t / "r"], "epochs"),
        (
            lambda d, t: ["train", "--data", d, "--backbone", "SmallCNN", "--val-split", "2", "--out", t / "r"],
            "val_split",
        ),
        (
            lambda d, t: [
                "train",
                "--data",
                d / "red",
                "--backbone",
                "SmallCNN",
                "--weights",
                "none",
                "--out",
                t / "r",
            ],
            "class",
        ),
        (
            lambda d, t: ["train", "--data", d, "--backbone", _lambda_model(t / "l.keras"), "--out", t / "r"],
            "Lambda layer",
        ),
        (
            lambda d, t: [
                "train",
                "--data",
                d,
                "--backbone",
                "SmallCNN",
                "--weights",
                "none",
                "--freeze",
                "block9",
                "--out",
                t / "r",
            ],
            "block9",
        ),
        (lambda d, t: ["predict", "--model", t, d / "red" / "red_0.png"], "not a finished run folder"),
        (lambda d, t: ["frobnicate"], "invalid choice"),
        (lambda d, t: ["train", "--data", d], "required"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_no_run_folder(tmp_path, colour_dataset, case, fragment):
    completed = tlcore(*case(colour_dataset, tmp_path))
    assert_clean_failure(completed, fragment)
    assert not (tmp_path / "r").exists()


def test_offline_imagenet_weights_exit_2_with_the_file_to_download(tmp_path, colour_dataset):
    # A sitecustomize that makes name resolution fail, as on a machine without internet.
    shim = tmp_path / "offline"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import socket\n"
        "def _offline(*a, **k):\n    raise socket.gaierror(-3, 'Temporary failure in name resolution')\n"
        "socket.getaddrinfo = _offline\n"
    )
    completed = tlcore(
        "train",
        "--data",
        colour_dataset,
        "--backbone",
        "MobileNetV2",
        "--weights",
        "imagenet",
        "--image-size",
        96,
        "--out",
        tmp_path / "r",
        env={"PYTHONPATH": f"{shim}{os.pathsep}{ROOT}", "KERAS_HOME": str(tmp_path / "kh")},
    )
    assert_clean_failure(completed, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5")
    assert str(tmp_path / "kh" / "models") in completed.stderr
    assert not (tmp_path / "r").exists()  # nothing of the failed run is left behind


@pytest.mark.real_assets
def test_cli_generate_with_int8_weights(tiny_gpt2_preset):
    completed = tlcore(
        "generate", "--model", tiny_gpt2_preset, "--prompt", "The quick brown", "--max-length", 12,
        "--sampler", "greedy", "--quantize", "int8",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["quantization"] == "int8" and result["text"].startswith("The quick brown")
    assert 0 < result["new_tokens"] <= 12 - 1 - 3  # start token + 3 prompt tokens fill the rest


def test_cli_generate_refuses_an_unknown_quantization():
    completed = tlcore("generate", "--model", "gpt2_base_en", "--prompt", "hi", "--quantize", "int4")
    assert_clean_failure(completed, "Unknown quantization")


@pytest.mark.real_assets
def test_cli_finetune_text_with_lora_takes_the_lora_learning_rate(tiny_gpt2_preset, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The cat sat on the mat. " * 20)
    completed = tlcore(
        "finetune-text", "--model", tiny_gpt2_preset, "--text", corpus, "--out", tmp_path / "run",
        "--epochs", 1, "--sequence-length", 32, "--lora-rank", 2,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["config"]["learning_rate"] == 1e-2


def test_export_prints_json_per_format_with_the_contract_fields(trained_run):
    completed = tlcore("export", "--run", trained_run.path, "--format", "onnx", "--format", "litert-int8")
    assert completed.returncode == 0, completed.stderr[-2000:]
    entries = json.loads(completed.stdout)
    assert [entry["format"] for entry in entries] == ["onnx", "litert-int8"]
    for entry in entries:
        assert {
            "format",
            "file",
            "size_mb",
            "top1_agreement",
            "max_prob_diff",
            "latency_ms",
            "images_per_second",
        } <= set(entry), entry
        assert (trained_run.path / entry["file"]).is_file()
    assert entries[0]["top1_agreement"] == 1.0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--format", "coreml"], "Unknown export format. Expected one of"), ([], "Name a format with --format")],
)
def test_export_bad_format_exits_2_with_one_line(trained_run, args, fragment):
    assert_clean_failure(tlcore("export", "--run", trained_run.path, *args), fragment)
