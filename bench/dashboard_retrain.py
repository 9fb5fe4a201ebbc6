"""Train page in a real browser: click "Start training" → the result box, cold and warm.

Run: `.venv/bin/python bench/dashboard_retrain.py [--shared ../shared] [--warm N] [--screenshot PATH]`.
Prints one table; every number comes from this one run on this machine.

A fresh `streamlit run app.py` (tests/browser.py's server, with its own runs, workspace and
feature cache) and Debian's headless Chromium. The page is set up the way the browser tests
do it (tests/test_browser.py's helpers): hymenoptera train + separate val folder, the shared
dog-breed MobileNetV2 .h5 as "Your own Keras model file…" cut at "mobilenetv2_1.00_160" with
"mobilenet_v2" preprocessing and the whole backbone frozen, 20 head epochs, no fine-tuning.

- cold: the first click on "Start training" (empty feature cache in the server process) until
  the page shows the `st.success` box "... Saved as run `<id>`." of that run.
- warm: the same click again with the same settings (features cached in the server process),
  until the box names the NEW run's id; N times (default 3), best and median. The median is
  split, from the Streamlit messages the page receives, into: the click's script run up to the
  job's start, the job (the script waits up to 1 s for it), and the `st.rerun()` that shows it.
- in-process: `tlcore.training.launch.train_run(config, run_dir)` on the same RunConfig in this
  process (own temp feature cache), after one warm-up call, best of 3: the floor the page
  could reach. The server's run config.json is compared with it (model file path aside).

The clock is time.perf_counter around Playwright's click and the wait for the new box (the
page is polled on every animation frame). A screenshot of the page after the last warm
retrain goes to /tmp/dashboard_retrain.png (not to the repo).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import expect, sync_playwright  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

from tests.browser import CHROMIUM, CHROMIUM_ARGS, wait_idle  # noqa: E402
from tests.test_browser import (  # noqa: E402
    choose_dog_model,
    choose_hymenoptera,
    hymenoptera_server,
    nav,
    no_app_error,
    select_option,
    set_number,
)

EPOCHS = 20
CUT_LAYER = "mobilenetv2_1.00_160"
PREPROCESS = "mobilenet_v2"
# The text of a "Saved as run" box that does not name `previous` (the last run's id), or null.
NEW_RESULT = """previous => {
  for (const box of document.querySelectorAll('[data-testid="stAlert"]')) {
    const text = box.innerText;
    if (text.includes('Saved as run') && !(previous && text.includes(previous))) return text;
  }
  return null;
}"""
RUN_ID = re.compile(r"Saved as run\s+`?([^\s`]+?)`?\.\s*$", re.MULTILINE)


def set_up_page(page, shared: Path) -> None:
    """Data, model file (cut layer, preprocessing, frozen) and 20 head epochs, as a user would."""
    choose_hymenoptera(page, shared / "data/hymenoptera")
    expect(page.get_by_text("Current dataset: 397 images · 2 classes.")).to_be_visible()
    choose_dog_model(page, shared / "pretrained/dog_breed_mobilenetv2_160.h5")
    select_option(page, "Preprocessing the model expects", PREPROCESS)
    select_option(page, "Cut the model at", CUT_LAYER)
    expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text("2,562")  # only the head trains
    no_app_error(page)
    nav(page, "Train")
    set_number(page, "Epochs", EPOCHS)
    set_number(page, "Fine-tune epochs (0 = skip)", 0)
    no_app_error(page)


def click_to_result(page, previous: str | None, frames: list) -> tuple[float, str, dict]:
    """Seconds from the click on "Start training" to a result box naming a run other than ``previous``.

    Also returns where the time went, from the Streamlit messages the page received (``frames``):
    ``start``: click → the job is started (the script sets ``?job=``: a page_info_changed message);
    ``job``: from there to the end of the click's script run (it waits up to 1 s for the job);
    ``rerun``: from there to the result box (the script's ``st.rerun()`` runs the page again).
    """
    button = page.get_by_role("button", name="Start training")
    expect(button).to_be_enabled()
    frames.clear()
    start = time.perf_counter()
    button.click()
    handle = page.wait_for_function(NEW_RESULT, arg=previous, polling="raf", timeout=600_000)
    seconds = time.perf_counter() - start
    text = handle.json_value()
    match = RUN_ID.search(text)
    if match is None:
        raise RuntimeError(f"no run id in the result box: {text!r}")
    started = next((t - start for t, kind in frames if kind == "page_info_changed"), math.nan)
    ended = next((t - start for t, kind in frames if kind == "script_finished" and t - start > started), math.nan)
    wait_idle(page)
    no_app_error(page)
    return seconds, match.group(1), {"start": started, "job": ended - started, "rerun": seconds - ended}


def record_frames(page) -> list:
    """(perf_counter, ForwardMsg type) of every Streamlit message the page receives."""
    frames = []

    def on_socket(socket):
        def received(payload):
            if isinstance(payload, bytes):
                with contextlib.suppress(Exception):  # not a ForwardMsg: not ours to time
                    frames.append((time.perf_counter(), ForwardMsg.FromString(payload).WhichOneof("type")))

        socket.on("framereceived", received)

    page.on("websocket", on_socket)
    return frames


def browser_timings(shared: Path, warm: int, screenshot: Path, workdir: Path) -> dict:
    results = {"warm": [], "phases": []}
    with hymenoptera_server(workdir, shared / "data/hymenoptera") as (url, _), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            frames = record_frames(page)
            page.goto(url)
            expect(page.locator("h1").first).to_be_visible(timeout=120_000)
            set_up_page(page, shared)
            results["cold"], run_id, _ = click_to_result(page, None, frames)
            run_ids = [run_id]
            for _ in range(warm):
                seconds, run_id, phases = click_to_result(page, run_ids[-1], frames)
                results["warm"].append(seconds)
                results["phases"].append(phases)
                run_ids.append(run_id)
            page.screenshot(path=str(screenshot))
            results["result_text"] = page.evaluate(NEW_RESULT, run_ids[-2])
        finally:
            browser.close()
    results["run_ids"] = run_ids
    results["config"] = (workdir / "runs" / run_ids[-1] / "config.json").read_text()
    return results


def in_process_timings(shared: Path, repeats: int = 3):
    """``train_run`` on the same settings in this process: the first call, then the best of ``repeats``."""
    import keras

    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlcore.training.launch import train_run

    keras.config.disable_interactive_logging()
    hymenoptera = shared / "data/hymenoptera"
    config = RunConfig(
        DataConfig(str(hymenoptera / "train"), val_dir=str(hymenoptera / "val")),
        ModelConfig(
            str(shared / "pretrained/dog_breed_mobilenetv2_160.h5"), cut_layer=CUT_LAYER, preprocess=PREPROCESS
        ),
        TrainConfig(epochs=EPOCHS),
    )
    with tempfile.TemporaryDirectory(prefix="bench-runs-") as runs:
        first_seconds = time.perf_counter()
        first = train_run(config, Path(runs) / "first")
        first_seconds = time.perf_counter() - first_seconds
        assert first.metrics["features_from_cache"] is False, first.metrics
        timings = []
        for index in range(repeats):
            start = time.perf_counter()
            result = train_run(config, Path(runs) / f"warm-{index}")
            timings.append(time.perf_counter() - start)
            assert result.metrics["features_from_cache"] is True, result.metrics
    return config, first_seconds, timings


def config_differences(ours, page_json: str) -> list[str]:
    """Settings where the page's last run differs from the in-process config (the model file's path aside).

    Expected, and none of them changes this training: the page leaves ``cut_layer`` at None when
    the chosen layer is the default (the last 4-D one) and records the model's own ``image_size``;
    ``weights`` is ignored for a model file; the fine-tune settings are unused with 0 fine-tune epochs.
    """
    from tlcore.config import RunConfig

    theirs, mine = RunConfig.from_json(page_json).to_dict(), ours.to_dict()
    for config in (theirs, mine):
        config["model"]["backbone"] = Path(config["model"]["backbone"]).name
    return [
        f"{section}.{key} page {theirs[section].get(key)!r} / here {mine[section].get(key)!r}"
        for section in mine
        for key in sorted(set(mine[section]) | set(theirs[section]))
        if mine[section].get(key) != theirs[section].get(key)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", default=os.environ.get("TL_SHARED_DIR", str(Path(__file__).resolve().parents[2] / "shared"))
    )
    parser.add_argument("--warm", type=int, default=3, help="warm retrains in the browser")
    parser.add_argument("--screenshot", default="/tmp/dashboard_retrain.png")
    args = parser.parse_args()
    shared = Path(args.shared).resolve()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as workdir:
        page = browser_timings(shared, args.warm, Path(args.screenshot), Path(workdir))
    load_browser = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        os.environ["TLCORE_CACHE_DIR"] = cache  # the server had its own; this process starts empty too
        config, first, in_process = in_process_timings(shared)
    differences = config_differences(config, page["config"])
    warm, floor = page["warm"], min(in_process)
    best, median = min(warm), statistics.median(warm)
    phases = {key: statistics.median(p[key] for p in page["phases"]) for key in ("start", "job", "rerun")}
    print(
        f"\nhymenoptera train + val, dog-breed MobileNetV2 file cut at {CUT_LAYER}, whole backbone frozen, "
        f"{EPOCHS} head epochs, no fine-tuning; {os.cpu_count()} CPU cores; load average (1/5/15 min): "
        f"{fmt(load_before)} before, {fmt(load_browser)} after the browser part, {fmt(os.getloadavg())} at the end"
    )
    print(f"runs the page saved: {', '.join(page['run_ids'])}")
    print(f"last result box: {page['result_text']!r}")
    print("page config vs in-process config: " + ("same" if not differences else "; ".join(differences)))
    print(f"screenshot after the last warm retrain: {args.screenshot}\n")
    rows = [
        ("cold: click → result box, empty feature cache (s)", page["cold"], ""),
        (f"warm retrain: click → result box, best of {len(warm)} (s)", best, "< 1 (well under a second)"),
        (f"warm retrain: click → result box, median of {len(warm)} (s)", median, "< 1 (well under a second)"),
        ("  median: click → job started (script above the job)", phases["start"], ""),
        ("  median: job started → click's script run ends", phases["job"], ""),
        ("  median: st.rerun → result box", phases["rerun"], ""),
        ("in-process train_run, first call, empty cache (s)", first, ""),
        (f"in-process train_run, warm, best of {len(in_process)} (s)", floor, ""),
        ("warm click → result (best) / in-process train_run (best)", best / floor, ""),
    ]
    print(f"{'measurement':58s} {'value':>8s}  target")
    for name, value, target in rows:
        print(f"{name:58s} {value:8.3f}  {target}")
    print(f"\nwarm retrains in the browser (s): {', '.join(f'{s:.3f}' for s in warm)}")
    print(f"in-process warm train_run (s): {', '.join(f'{s:.3f}' for s in in_process)}")


def fmt(load: tuple) -> str:
    return "/".join(f"{value:.2f}" for value in load)


if __name__ == "__main__":
    main()
