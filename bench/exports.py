"""Export bench: every format of one ants/bees run, checked against Keras and timed, as a Markdown table.

Run: `.venv/bin/python bench/exports.py [--run RUN_DIR] [--rounds 5] [--shared ../shared]`.
Without --run it trains the README's run first (the shared MobileNetV2 at 160 px, frozen,
on the shared ants/bees photos, seed 1) into a temporary folder.

The export itself (files, agreement on all 153 validation images, one profile) is the
studio's own `tlcore.runs.exports.export_formats`. Then, because the machine is shared,
single-image latency is measured again in `--rounds` rounds that alternate the formats
(each round: every format's median of 20 warm calls), and printed as mean ± sd over the
rounds, with each format's ratio to the Keras compiled forward measured in the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(shared: Path, out: Path) -> Path:
    data = shared / "data" / "hymenoptera"
    command = [sys.executable, "-m", "tlcore", "train", "--data", str(data / "train"), "--val-data", str(data / "val")]
    command += ["--backbone", str(shared / "pretrained" / "dog_breed_mobilenetv2_160.h5")]
    command += ["--cut-layer", "mobilenetv2_1.00_160", "--preprocess", "mobilenet_v2", "--seed", "1", "--out", str(out)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def latency_rounds(run, report: dict, rounds: int) -> dict[str, list[float]]:
    """Each format's median single-image latency (ms) per round, formats alternating within a round."""
    from tlcore.runs.exports import LATENCY_REPEATS, validation_batch
    from tlcore.runs.formats import FORMATS

    names = [name for name, entry in report.items() if "error" not in entry]
    image = validation_batch(run, run.image_size or 224)[:1]
    predictors = {name: FORMATS[name].load(run.path / FORMATS[name].files[0]) for name in names}
    for predict in predictors.values():
        predict(image)  # warm
    measured: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            times = []
            for _ in range(LATENCY_REPEATS):
                started = time.perf_counter()
                predictors[name](image)
                times.append(time.perf_counter() - started)
            measured[name].append(1000 * statistics.median(times))
    return measured


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0:.1f}"


def table(report: dict, latencies: dict[str, list[float]]) -> str:
    from tlcore.runs.formats import FORMATS

    lines = [
        "| format | runtime | size (MB) | top-1 agreement | max prob. diff | load (s) | latency ms (mean ± sd "
        "of round medians) | × Keras | images/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keras = latencies.get("keras")
    for name, entry in report.items():
        if "error" in entry:
            lines.append(f"| {FORMATS[name].label} | {entry['runtime']} | failed: {entry['error']} | | | | | | |")
            continue
        ratio = statistics.mean(a / b for a, b in zip(latencies[name], keras)) if keras else float("nan")
        lines.append(
            f"| {FORMATS[name].label} | {entry['runtime']} | {entry['size_mb']:.2f} | "
            f"{entry['top1_agreement']:.1%} of {entry['checked_images']} | {entry['max_prob_diff']:.4f} | "
            f"{entry['load_seconds']:.2f} | {spread(latencies[name])} | {ratio:.2f} | {entry['images_per_second']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished run folder (default: train the README's ants/bees run)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shared", default=os.environ.get("TL_SHARED_DIR", str(ROOT.parent / "shared")))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tlcore.runs.exports import export_formats
    from tlcore.runs.store import read_run

    run_dir = Path(args.run) if args.run else train(Path(args.shared), Path(tempfile.mkdtemp()) / "ants-bees")
    run = read_run(run_dir)
    started = time.perf_counter()
    report = export_formats(run)
    print(
        f"run {run.run_id}: val accuracy {run.metrics['val_accuracy']:.3f}; "
        f"all formats exported and checked in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPU cores"
    )
    print(table(report, latency_rounds(run, report, args.rounds)))


if __name__ == "__main__":
    main()
