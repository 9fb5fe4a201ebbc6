"""Dashboard start-up: `streamlit run app.py` until the home page is interactive, vs hello world.

Run: `.venv/bin/python bench/app_startup.py [--runs 5]`. Both apps are measured in the same
run, alternating, in Debian's headless Chromium: the clock starts when the server process
is launched and stops when the page's first heading is visible (the script has run).
Prints the median of each and the ratio (target: ours <= 1.5x hello world).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

HELLO = 'import streamlit as st\nst.title("Hello world")\n'


def measure(browser, script: Path, workdir: Path) -> float:
    port = free_port()
    start = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(script),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=script.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TLCORE_RUNS_DIR": str(workdir / "runs"),
            "TLCORE_WORKSPACE": str(workdir / "ws"),
        },
    )
    page = browser.new_page()
    try:
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}", timeout=2000)
                break
            except Exception:  # noqa: BLE001  - the server is not listening yet
                if time.perf_counter() - start > 120:
                    raise RuntimeError(f"{script} did not start") from None
                time.sleep(0.05)
        page.locator("h1").first.wait_for(timeout=120_000)
        return time.perf_counter() - start
    finally:
        page.close()
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="startup-"))
    hello = workdir / "hello.py"
    hello.write_text(HELLO)
    ours, baseline = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(args.runs):
            baseline.append(measure(browser, hello, workdir))
            ours.append(measure(browser, ROOT / "app.py", workdir))
        browser.close()
    print(f"runs: {args.runs} each, alternating")
    print(f"hello world   median {statistics.median(baseline):.2f} s   all {[round(t, 2) for t in baseline]}")
    print(f"studio home   median {statistics.median(ours):.2f} s   all {[round(t, 2) for t in ours]}")
    print(f"ratio studio / hello world: {statistics.median(ours) / statistics.median(baseline):.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
