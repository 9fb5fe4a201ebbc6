"""Export bench: every format of one ants/bees run, checked against Keras and timed, as a Markdown table.

Run: `.venv/bin/python bench/exports.py [--run RUN_DIR] [--rounds 5] [--shared ../shared]`.
Without --run it trains the README's run first (the shared MobileNetV2 at 160 px, frozen,
on the shared ants/bees photos, seed 1) into a temporary folder.

The export itself (files, agreement on all 153 validation images, one profile) is the
studio's own `tlcore.runs.exports.export_formats`. Then, because the machine is shared,
single-image latency is measured again in `--rounds` rounds that alternate the formats
(each round: every format's median of 20 warm calls), and printed as mean ± sd over the
rounds, with each format's ratio to the Keras compiled forward measured in the same round.
Last, where the bytes of each LiteRT file go (constant data by type, quantization
parameters, tensor names, metadata, the rest of the flatbuffer), read from the file itself.
"""

from __future__ import annotations

import argparse
import collections
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


def litert_bytes(path: Path) -> dict[str, int]:
    """Where the bytes of a ``.tflite`` file go, read with TensorFlow's flatbuffer schema.

    A vector that several tables share (see ``tlcore.runs.formats.share_repeated_vectors``) is counted once.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools.flatbuffer_utils import type_to_name

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    parts: collections.Counter = collections.Counter()
    seen: set[int] = set()

    def add(part: str, table, slot: int, item_size: int, length: int) -> None:
        offset = table._tab.Offset(slot)
        if offset and length and table._tab.Vector(offset) not in seen:
            seen.add(table._tab.Vector(offset))
            parts[part] += item_size * length

    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        buffer = model.Buffers(entry.Buffer())
        add(f"metadata {entry.Name().decode()}", buffer, 4, 1, buffer.DataLength())
    for subgraph in (model.Subgraphs(index) for index in range(model.SubgraphsLength())):
        parts["count: operators"] += subgraph.OperatorsLength()
        for tensor in (subgraph.Tensors(index) for index in range(subgraph.TensorsLength())):
            parts["count: tensors"] += 1
            parts["tensor names"] += len(tensor.Name() or b"")
            buffer = model.Buffers(tensor.Buffer())
            add(f"constant {type_to_name(tensor.Type())} data", buffer, 4, 1, buffer.DataLength())
            quantization = tensor.Quantization()
            if quantization is not None and quantization.ScaleLength():
                parts["count: quantized tensors"] += 1
                add("quantization scales (float32)", quantization, 8, 4, quantization.ScaleLength())
                add("quantization zero points (int64)", quantization, 10, 8, quantization.ZeroPointLength())
                add("quantization min/max (float32)", quantization, 4, 4, quantization.MinLength())
                add("quantization min/max (float32)", quantization, 6, 4, quantization.MaxLength())
    for signature in (model.SignatureDefs(index) for index in range(model.SignatureDefsLength())):
        maps = [signature.Inputs(i) for i in range(signature.InputsLength())]
        maps += [signature.Outputs(i) for i in range(signature.OutputsLength())]
        parts["signature names"] += len(signature.SignatureKey() or b"") + sum(len(m.Name() or b"") for m in maps)
    return dict(parts)


def bytes_table(run, report: dict) -> str:
    """The byte accounting of every LiteRT file exported, as a Markdown table (counts are not bytes)."""
    from tlcore.runs.formats import FORMATS

    names = [name for name, entry in report.items() if "error" not in entry and entry["file"].endswith(".tflite")]
    files = {name: run.path / report[name]["file"] for name in names}
    accounts = {name: litert_bytes(path) for name, path in files.items()}
    counted = ("count: tensors", "count: operators", "count: quantized tensors")
    for name, account in accounts.items():
        account["rest: flatbuffer tables, shapes, options, padding"] = files[name].stat().st_size - sum(
            value for key, value in account.items() if key not in counted
        )
        account["file"] = files[name].stat().st_size
    keys = sorted({key for account in accounts.values() for key in account}, key=lambda key: (key in counted, key))
    lines = ["| bytes | " + " | ".join(FORMATS[name].label for name in names) + " |"]
    lines.append("| --- |" + " --- |" * len(names))
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{accounts[name].get(key, 0):,}" for name in names) + " |")
    return "\n".join(lines)


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0:.1f}"


def table(report: dict, latencies: dict[str, list[float]]) -> str:
    from tlcore.runs.formats import FORMATS

    lines = [
        "| format | runtime | size (MB) | % of LiteRT float32 | top-1 agreement | max prob. diff | load (s) "
        "| latency ms (mean ± sd of round medians) | × Keras | images/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keras = latencies.get("keras")
    float_size = report.get("litert", {}).get("size_mb")
    for name, entry in report.items():
        if "error" in entry:
            lines.append(f"| {FORMATS[name].label} | {entry['runtime']} | failed: {entry['error']} | | | | | | | |")
            continue
        ratio = statistics.mean(a / b for a, b in zip(latencies[name], keras)) if keras else float("nan")
        share = f"{entry['size_mb'] / float_size:.1%}" if float_size else ""
        lines.append(
            f"| {FORMATS[name].label} | {entry['runtime']} | {entry['size_mb']:.2f} | {share} | "
            f"{entry['top1_agreement']:.1%} of {entry['checked_images']} | {entry['max_prob_diff']:.4f} | "
            f"{entry['load_seconds']:.2f} | {spread(latencies[name])} | {ratio:.2f} | {entry['images_per_second']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished run folder (default: train the README's ants/bees run)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", action="append", default=[], help="only these formats (default: all)")
    parser.add_argument("--shared", default=os.environ.get("TL_SHARED_DIR", str(ROOT.parent / "shared")))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tlcore.runs.exports import export_formats
    from tlcore.runs.store import read_run

    run_dir = Path(args.run) if args.run else train(Path(args.shared), Path(tempfile.mkdtemp()) / "ants-bees")
    run = read_run(run_dir)
    started = time.perf_counter()
    report = export_formats(run, args.format or None)
    print(
        f"run {run_dir}: val accuracy {run.metrics['val_accuracy']:.3f}; "
        f"all formats exported and checked in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPU cores"
    )
    print(table(report, latency_rounds(run, report, args.rounds)))
    print(bytes_table(run, report))


if __name__ == "__main__":
    main()
