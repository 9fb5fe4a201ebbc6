"""What checking a visitor's model file costs: inspection, child trial, and the load itself.

Run: `.venv/bin/python bench/model_file_check.py [--model ../shared/pretrained/dog_breed_mobilenetv2_160.h5]
[--runs 3]`. Each run, in one process and alternating: the inspection alone
(`inspect_model_file`, in this process), the full first-time check (`check_model_file`:
inspection + trial load and one batch in a child process, with an empty verdict cache),
the cached check (same content again), and the plain Keras load the server does anyway.
Prints each step's median and spread over the runs. The child's time is mostly
TensorFlow's import: it depends heavily on how loaded the machine is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=str(Path(__file__).resolve().parents[2] / "shared/pretrained/dog_breed_mobilenetv2_160.h5")
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import keras

    from tlcore.model import file_trial as model_trial
    from tlcore.model import files as model_files

    times: dict[str, list[float]] = {"inspection": [], "first check (inspection + child trial)": [], "cached check": [],
                                     "plain keras load": []}  # fmt: skip
    for _ in range(args.runs):
        os.environ["TLCORE_CACHE_DIR"] = tempfile.mkdtemp()
        model_trial._VERDICTS.clear()
        times["inspection"].append(timed(lambda: model_files.inspect_model_file(args.model)))
        times["first check (inspection + child trial)"].append(timed(lambda: model_trial.check_model_file(args.model)))
        times["cached check"].append(timed(lambda: model_trial.check_model_file(args.model)))
        times["plain keras load"].append(timed(lambda: keras.models.load_model(args.model, compile=False)))
    print(f"{Path(args.model).name}, {args.runs} runs:")
    for name, values in times.items():
        print(f"  {name:42s} median {statistics.median(values):7.2f} s  (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
