"""Audience load: N simulated phones against one server while the Present page stays open (issue 22).

Run: `.venv/bin/python bench/audience.py [--phones 10,20,30] [--spread 60] [--shared ../shared]`.

One `serve.py` server (TLCORE_SHARED=1, as `make serve`), one presenter (a browser context with
the owner's cookie) on the Present page with its audience link open, and for each N: N phones
(each its own Playwright context with a phone viewport), starting at random moments spread over
``--spread`` seconds, each opening the link and uploading one real photo of the shared
hymenoptera set. Each phone stays connected until the round ends, as phones in a room do.

Measured per round: upload→answer (file chosen until the answer's bars are drawn) p50/p95/max,
link→page shown, errors (a warning, or no answer in 60 s), the server's RSS (start, after the
first ten answers, end, peak) and CPU (share of one core, averaged over the round), the driver's
own CPU (this process plus Chromium, as a share of the machine's cores), and the presenter's own
prediction on the Present page during the load (a photo every few seconds: upload→bars).

The presented run: SmallCNN (random frozen weights, 96 px) trained with the CLI on the shared
hymenoptera photos in a few seconds: the point is the server's per-phone cost, not accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM_ARGS, streamlit_server  # noqa: E402
from tlcore import sessions  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process from /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and all its living descendants."""
    stats = {int(p): _stat(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        if stat:
            children.setdefault(stat[0], []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if stats.get(pid):
            total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def make_run(work: Path, shared: Path, owner: str) -> str:
    """A SmallCNN run on the shared ants/bees photos, made with the CLI, owned by the presenter."""
    run = work / "runs" / "20260101-000000-audience-bench"
    data = shared / "data" / "hymenoptera"
    command = [sys.executable, "-m", "tlcore", "train", "--data", str(data / "train"), "--val-data", str(data / "val")]
    command += ["--backbone", "SmallCNN", "--weights", "none", "--image-size", "96", "--epochs", "3", "--out", str(run)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    (run / "access.json").write_text(json.dumps({"owner": owner}))
    return run.name


async def wait_answer(page, timeout: float) -> None:
    await page.wait_for_function(
        "() => document.querySelector('.tl-bars') || document.querySelector('[data-testid=stAlert]')",
        timeout=timeout * 1000,
    )
    if await page.locator("[data-testid=stAlert]").count():
        raise RuntimeError((await page.locator("[data-testid=stAlert]").first.inner_text())[:200])


async def one_phone(browsers, link: str, photo: Path, delay: float, done: asyncio.Event, results: list) -> None:
    await asyncio.sleep(delay)
    # Phones are separate browsers: one Chromium's per-host connection pool must not queue them all.
    browser = min(browsers, key=lambda b: len(b.contexts))
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    record = {"photo": photo.name}
    try:
        start = time.perf_counter()
        await page.goto(link, wait_until="commit", timeout=60_000)
        await page.get_by_text("Is it").first.wait_for(timeout=60_000)
        record["page_s"] = time.perf_counter() - start
        start = time.perf_counter()
        await page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(photo))
        await wait_answer(page, 60)
        record["answer_s"] = time.perf_counter() - start
        record["at"] = time.time()
    except Exception as error:  # noqa: BLE001  - an error is a result of the bench
        record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    results.append(record)
    await done.wait()  # a phone in a room stays connected
    await context.close()


async def presenter_loop(page, photos: list[Path], done: asyncio.Event, timings: list) -> None:
    """The presenter's own prediction every 2 s: a new photo replaces the last (one-file uploader);
    timed from the file chosen until the page shows the new photo and its bars."""
    uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]').nth(0)
    # The last image on the page: the QR code of the audience link is one too, above the prediction.
    image = "[...document.querySelectorAll('[data-testid=stImage] img')].pop()"
    index = 0
    while not done.is_set():
        before = await page.evaluate(f"() => {image} ? {image}.src : ''")
        start = time.perf_counter()
        try:
            await uploader.set_input_files(str(photos[index % len(photos)]))
            # Until the presenter sees the answer: the new photo and the prediction's bars (the room's
            # tally is the page's other bar chart; the rest of the run redraws the room below).
            await page.wait_for_function(
                f"(before) => {image} && {image}.src !== before && document.querySelectorAll('.tl-bars').length > 1",
                arg=before,
                timeout=60_000,
            )
            timings.append(time.perf_counter() - start)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001  - a failed presenter prediction counts as missing
            timings.append(float("nan"))
        index += 7  # another photo each time
        await asyncio.sleep(2)


def health_seconds(url: str) -> float:
    """Seconds the server takes to answer its health check (its event loop's responsiveness)."""
    start = time.perf_counter()
    try:
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=30).read()
    except OSError:
        return float("nan")
    return time.perf_counter() - start


async def sampler(pid: int, url: str, done: asyncio.Event, samples: list) -> None:
    while not done.is_set():
        health = await asyncio.to_thread(health_seconds, url)
        samples.append((time.time(), rss_mb(pid), tree_cpu(pid), health))
        await asyncio.sleep(1)


async def room_line(presenter) -> str:
    line = presenter.get_by_text("The room ·").first
    return (await line.inner_text()).strip() if await line.count() else ""


async def round_of(browsers, presenter, url, link, server_pid, photos, count, spread, seed) -> dict:
    rng = random.Random(seed)
    done, results, timings, samples = asyncio.Event(), [], [], []
    # The server is this process's child: the driver is this process's tree without the server's.
    driver_start, wall_start = tree_cpu(os.getpid()) - tree_cpu(server_pid), time.time()
    tasks = [asyncio.create_task(sampler(server_pid, url, done, samples))]
    presenting = asyncio.create_task(presenter_loop(presenter, photos, done, timings))
    phones = [
        asyncio.create_task(one_phone(browsers, link, rng.choice(photos), rng.uniform(0, spread), done, results))
        for _ in range(count)
    ]
    while len(results) < count:
        await asyncio.sleep(0.5)
    done.set()
    presenting.cancel()
    await asyncio.gather(*phones, *tasks)
    await asyncio.gather(presenting, return_exceptions=True)
    wall = time.time() - wall_start
    answers = [r["answer_s"] for r in results if "answer_s" in r]
    tenth = sorted(r["at"] for r in results if "at" in r)[min(9, max(0, len(answers) - 1))] if answers else None
    after_ten = [rss for at, rss, _, _ in samples if tenth and at >= tenth] or [samples[-1][1]]
    health = [h for *_, h in samples if h == h]
    return {
        "phones": count,
        "answers": len(answers),
        "errors": [r["error"] for r in results if "error" in r],
        "answer_p50_s": percentile(answers, 0.5),
        "answer_p95_s": percentile(answers, 0.95),
        "answer_max_s": max(answers, default=float("nan")),
        "page_p50_s": percentile([r["page_s"] for r in results if "page_s" in r], 0.5),
        "presenter_p50_s": percentile([t for t in timings if t == t], 0.5),
        "presenter_p95_s": percentile([t for t in timings if t == t], 0.95),
        "presenter_n": len(timings),
        "presenter_missing": sum(1 for t in timings if t != t),
        "server_rss_mb": {
            "start": samples[0][1],
            "after_ten": after_ten[0] if after_ten else None,
            "end": samples[-1][1],
            "peak": max(s[1] for s in samples),
        },
        "server_health_p95_s": percentile(health, 0.95),
        "room_line": await room_line(presenter),
        "server_cpu_cores": (samples[-1][2] - samples[0][2]) / max(1e-9, samples[-1][0] - samples[0][0]),
        "driver_cpu_cores": (tree_cpu(os.getpid()) - tree_cpu(server_pid) - driver_start) / wall,
        "wall_s": wall,
        "load_average": os.getloadavg()[0],
    }


async def main_async(args) -> None:
    from playwright.async_api import async_playwright

    shared = Path(args.shared).resolve()
    secret = sessions.new_secret()
    owner = sessions.owner_id(secret)
    photos = sorted((shared / "data" / "hymenoptera" / "val").glob("*/*.jpg"))
    with tempfile.TemporaryDirectory(prefix="audience-bench-") as folder:
        work = Path(folder)
        (work / "runs").mkdir()
        make_run(work, shared, owner)
        env = {"TLCORE_SHARED": "1", "TLCORE_DATA_ROOTS": str(shared / "data"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        with streamlit_server(work, env, launcher=("serve.py",)) as (url, server):
            async with async_playwright() as playwright:
                launch = playwright.chromium.launch
                if args.pin:  # the server's threads (all of them, already started) on CPU 0
                    for task in os.listdir(f"/proc/{server.pid}/task"):
                        os.sched_setaffinity(int(task), {0})
                    os.sched_setaffinity(0, {1})  # this driver (and the Playwright driver it starts) on CPU 1
                presenter_chromium = _launcher(work, "presenter", "0", 0) if args.pin else "/usr/bin/chromium"
                browser = await launch(executable_path=presenter_chromium, args=CHROMIUM_ARGS)
                phones = max(int(n) for n in args.phones.split(","))
                # --nice-phones: the phones' browsers at the lowest CPU priority, as when they run on the
                # phones of a room, not on the server's two cores (the presenter's browser stays as it is).
                # --pin: the phones' browsers on CPU 1 only, the server and the presenter on CPU 0.
                cpus = "1" if args.pin else ""
                phone_chromium = _launcher(work, "phones", cpus, 19 if args.nice_phones else 0)
                browsers = [
                    await launch(executable_path=phone_chromium, args=CHROMIUM_ARGS)
                    for _ in range(-(-phones // args.per_browser))
                ]
                context = await browser.new_context(viewport={"width": 1600, "height": 1000})
                await context.add_cookies([{"name": sessions.COOKIE_NAME, "value": secret, "url": url}])
                presenter = await context.new_page()
                presenter.set_default_timeout(120_000)
                await presenter.goto(f"{url}/present")
                await presenter.get_by_role("button", name="Open an audience link").click()
                link = await audience_link(presenter)
                # Warm-up: the model is loaded and its predict function traced once, as before a talk.
                await one_phone(browsers, link, photos[0], 0, _set_event(), [])
                for index, count in enumerate(int(n) for n in args.phones.split(",")):
                    if index:  # a fresh room per round: the last round's phones still count for 2 minutes
                        await presenter.get_by_role("button", name="Revoke the link").click()
                        await presenter.get_by_role("button", name="Open an audience link").click()
                        link = await audience_link(presenter, old=link)
                    result = await round_of(
                        browsers, presenter, url, link, server.pid, photos, count, args.spread, index
                    )
                    print(json.dumps(result), flush=True)
                for each in [browser, *browsers]:
                    await each.close()


async def audience_link(presenter, old: str = "") -> str:
    """The audience link the Present page shows (a new one when ``old`` is given)."""
    code = presenter.locator('[data-testid="stCode"]').filter(has_text="?present=").first
    while True:
        link = (await code.inner_text()).strip()
        if link != old:
            return link
        await asyncio.sleep(0.2)


def _launcher(work: Path, name: str, cpus: str, niceness: int) -> str:
    """A Chromium launcher on the given CPUs (``taskset``) at the given niceness; exec keeps the pid."""
    command = (f"taskset -c {cpus} " if cpus else "") + (f"nice -n {niceness} " if niceness else "")
    launcher = work / f"chromium-{name}"
    launcher.write_text(f'#!/bin/sh\nexec {command}/usr/bin/chromium "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", default="10,20,30", help="phones per round, comma separated")
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which a round's phones arrive")
    parser.add_argument("--per-browser", type=int, default=5, help="phones per Chromium instance")
    parser.add_argument(
        "--pin", action="store_true", help="server + presenter on CPU 0, the phones' browsers + this driver on CPU 1"
    )
    parser.add_argument("--nice-phones", action="store_true", help="run the phones' Chromium at nice 19")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the shared assets folder")
    args = parser.parse_args()
    print(f"# machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
