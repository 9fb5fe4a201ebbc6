import json

from tests.test_cli import assert_clean_failure, tlcore


def test_compare_backbones_prints_the_leaderboard_json_and_writes_table_and_chart(tmp_path, colour_dataset):
    out = tmp_path / "board"
    completed = tlcore(
        "compare-backbones", "--data", colour_dataset, "--backbone", "SmallCNN:none", "--backbone", "NoSuchNet",
        "--folds", "2", "--epochs", "40", "--out", out,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["best"] == "SmallCNN:none" and result["seconds"] > 0
    first, failed = result["candidates"]
    assert first["accuracy_mean"] > 0.5 and first["accuracy_sd"] is not None and first["latency_ms"] > 0
    assert first["input_size"] == 64 and first["error"] is None
    assert failed["backbone"] == "NoSuchNet" and "Unknown backbone" in failed["error"]
    assert {"leaderboard.csv", "leaderboard.json", "leaderboard.html"} <= {p.name for p in out.iterdir()}


def test_compare_backbones_refuses_bad_folds_in_one_line(tmp_path, colour_dataset):
    completed = tlcore(
        "compare-backbones", "--data", colour_dataset, "--backbone", "SmallCNN:none", "--folds", "0",
        "--out", tmp_path / "board",
    )  # fmt: skip
    assert_clean_failure(completed, "folds")


def test_compare_depths_prints_each_depth_and_a_verdict(tmp_path, colour_dataset):
    out = tmp_path / "depths"
    completed = tlcore(
        "compare-depths", "--data", colour_dataset, "--backbone", "SmallCNN", "--weights", "none",
        "--image-size", "32", "--epochs", "3", "--fine-tune-epochs", "1", "--blocks", "2", "--out", out,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert [row["depth"] for row in result["depths"]] == ["head only", "block4", "block3"]
    assert result["best"] in {"head only", "block4", "block3"} and result["verdict"]
    assert (out / "depths.csv").is_file() and (out / "depths.html").is_file()


def test_compare_depths_on_a_backbone_without_blocks_says_so(tmp_path, colour_dataset):
    completed = tlcore(
        "compare-depths", "--data", colour_dataset, "--backbone", "SmallCNN", "--weights", "none",
        "--blocks", "0", "--out", tmp_path / "depths",
    )  # fmt: skip
    assert_clean_failure(completed, "blocks between 1 and 20")
