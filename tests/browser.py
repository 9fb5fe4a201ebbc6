"""Helpers for the browser suite: a real Streamlit server and Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(workdir: Path, extra_env: dict | None = None, launcher=("-m", "streamlit", "run", "app.py")):
    """``streamlit run app.py`` on a free localhost port, with its own runs/workspace/cache.

    ``launcher``: what follows ``python`` (``("serve.py",)`` starts it as ``make run`` does).
    """
    port = free_port()
    env = {
        **os.environ,
        "TLCORE_RUNS_DIR": str(workdir / "runs"),
        "TLCORE_WORKSPACE": str(workdir / "workspace"),
        "TLCORE_CACHE_DIR": str(workdir / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **(extra_env or {}),
    }
    log = open(workdir / "streamlit.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            *launcher,
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"streamlit did not start: {(workdir / 'streamlit.log').read_text()[-2000:]}")
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def require_chromium() -> str:
    if shutil.which(CHROMIUM) or Path(CHROMIUM).is_file():
        return CHROMIUM
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium; `make test` does it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def shot(page, name: str) -> Path:
    """A screenshot of the whole page, below the fold too.

    Streamlit scrolls inside its main container, so ``full_page`` alone shows only the
    viewport: the viewport grows to the content's height for the shot, then shrinks back.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    viewport = page.viewport_size
    height = page.evaluate(
        '() => Math.max(...Array.from(document.querySelectorAll(\'[data-testid="stMain"], '
        '[data-testid="stSidebarContent"]\')).map(e => e.scrollHeight), 0)'
    )
    if viewport and height > viewport["height"]:
        page.set_viewport_size({"width": viewport["width"], "height": min(int(height) + 40, 8000)})
        page.wait_for_timeout(300)
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        if viewport and height > viewport["height"]:
            page.set_viewport_size(viewport)
    return path


def wait_idle(page, timeout: float = 120) -> None:
    """Waits until Streamlit has finished running the script: no 'Running…' status and no spinner.

    Streamlit shows its status widget only some time after a run starts, so the page
    must stay idle for half a second before this returns.
    """
    idle = (
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')"
    )
    deadline = time.time() + timeout
    page.wait_for_timeout(300)
    while True:
        page.wait_for_function(idle, timeout=max(1.0, deadline - time.time()) * 1000)
        page.wait_for_timeout(500)
        if page.evaluate(idle) or time.time() > deadline:
            return


@contextlib.contextmanager
def shot_on_failure(page, name: str):
    """Takes ``<name>-FAILED.png`` when the block fails, so the report shows what the user saw."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            shot(page, f"{name}-FAILED")
        raise
