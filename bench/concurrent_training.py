"""Trainings started from the dashboard vs the same trainings in a plain Python process.

Run: `.venv/bin/python bench/concurrent_training.py [--jobs 2] [--epochs 6] [--recipe smallcnn]`.

Served: a real `streamlit run app.py` with TLCORE_MAX_JOBS=jobs; that many headless Chromium
sessions each start a training on the demo set and watch its live chart (the fragment reruns
every second) until it finishes. Baseline: the very same run configs (read back from the
served runs' config.json) trained at the same time by tlcore's JobRegistry in a fresh plain
Python process, nothing watching. Both use the same feature/dataset cache folder, warmed first.

Prints, per repeat (served, then plain, alternating), the epoch seconds summed from
history.csv over all jobs (all epochs, and epochs >= 2, i.e. without tracing), and the median
ratio served / plain (target: <= 1.3; the dashboard should cost little on top of the training). Before the Keras clean-up fix (see
ui/shared.py keep_keras_state) two served SmallCNN jobs took 100-117 s for epoch 1
and ~19 s per later epoch, against ~1-2 s.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server, wait_idle  # noqa: E402

PLAIN = """
import json, sys
from tlcore.config import RunConfig
from tlcore.jobs import JobRegistry
from tlcore.runs.store import RunStore
from tlcore.training.launch import start_training
configs = [RunConfig.from_json(open(p).read()) for p in sys.argv[2:]]
store = RunStore(sys.argv[1])
registry = JobRegistry(max_concurrent=len(configs))
jobs = [start_training(registry, f"owner{i}", c, store) for i, c in enumerate(configs)]
for job in jobs:
    job.thread.join()
print(json.dumps([job.status + ":" + job.error for job in jobs]))
"""


def ready_in_browser(browser, url: str, recipe: str, epochs: int):
    """A new session with the recipe set up on the Train page, one click from starting."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(180_000)
    page.goto(url)
    expect(page.locator("h1").first).to_be_visible()

    def nav(name):
        page.locator('[data-testid="stSidebarNav"]').get_by_text(name, exact=True).click()
        expect(page.locator("h1").first).to_have_text(name)
        wait_idle(page)

    nav("Model")
    if recipe == "smallcnn":
        page.locator('[data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name="SmallCNN").click()
    else:  # a frozen MobileNetV2 (random weights offline): the cached-features path
        page.get_by_text("none (random: trains from scratch)").click()
        wait_idle(page)
        page.get_by_role("button", name="Freeze all", exact=True).click()
    expect(page.get_by_text("Trainable parameters")).to_be_visible()
    wait_idle(page)
    nav("Train")
    field = page.get_by_label("Epochs", exact=True)
    field.fill(str(epochs))
    field.press("Tab")
    wait_idle(page)
    return page


def start(page) -> None:
    page.get_by_role("button", name="Start training").click()


def epoch_seconds(run_dir: Path) -> tuple[float, float]:
    history = pd.read_csv(run_dir / "history.csv")
    return float(history["seconds"].sum()), float(history["seconds"].iloc[1:].sum())


def train_plain(configs: list[Path], root: Path, cache: Path) -> list[Path]:
    completed = subprocess.run(
        [sys.executable, "-c", PLAIN, str(root), *[str(c) for c in configs]],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TLCORE_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
    )
    if completed.returncode:
        raise SystemExit(completed.stderr[-3000:])
    return sorted(root.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--recipe", choices=["smallcnn", "frozen-mobilenet"], default="smallcnn")
    parser.add_argument("--repeats", type=int, default=3, help="served/plain pairs, alternating; medians reported")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-concurrent-"))
    cache = work / "cache"
    runs = work / "served" / "runs"
    env = {"TLCORE_MAX_JOBS": str(args.jobs), "TLCORE_CACHE_DIR": str(cache)}
    (work / "served").mkdir()
    print(f"{args.jobs} concurrent '{args.recipe}' trainings of {args.epochs} epochs on the demo set")
    print(f"{'repeat':>6} {'served all':>11} {'plain all':>10} {'served 2+':>10} {'plain 2+':>9}  (both jobs summed)")
    ratios_all, ratios_steady = [], []
    with streamlit_server(work / "served", env) as (url, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Warm the shared caches (demo images, features) with one run nobody measures.
        warm = ready_in_browser(browser, url, args.recipe, 1)
        start(warm)
        expect(warm.get_by_text(re.compile("Finished: validation accuracy"))).to_be_visible(timeout=600_000)
        warm.close()
        for repeat in range(args.repeats):
            before = set(runs.iterdir())
            # Every session is set up first, then all start together, as the baseline's jobs do.
            pages = [ready_in_browser(browser, url, args.recipe, args.epochs) for _ in range(args.jobs)]
            for page in pages:
                start(page)
            for page in pages:
                expect(page.get_by_text(re.compile("Finished: validation accuracy"))).to_be_visible(timeout=1_800_000)
            for page in pages:
                page.close()
            served = sorted(set(runs.iterdir()) - before)
            plain = train_plain([run / "config.json" for run in served], work / f"plain{repeat}", cache)
            s_all, s_steady = (sum(epoch_seconds(run)[i] for run in served) for i in (0, 1))
            p_all, p_steady = (sum(epoch_seconds(run)[i] for run in plain) for i in (0, 1))
            ratios_all.append(s_all / p_all)
            ratios_steady.append(s_steady / p_steady)
            print(f"{repeat + 1:>6} {s_all:>10.1f}s {p_all:>9.1f}s {s_steady:>9.1f}s {p_steady:>8.1f}s")
        browser.close()
    print(
        json.dumps(
            {
                "served/plain (all epochs), median": round(statistics.median(ratios_all), 2),
                "served/plain (epochs >= 2), median": round(statistics.median(ratios_steady), 2),
                "all ratios": [round(r, 2) for r in ratios_all],
                "target": "<= 1.3",
            }
        )
    )


if __name__ == "__main__":
    main()
