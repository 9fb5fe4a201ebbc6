"""Three visitors of one shared server, each its own browser context (its own cookie): nothing of
one visitor reaches another, except one run through its share link, read-only.

Alice's things are put on disk the way the dashboard leaves them (a run folder owned by her
identity, photos in her workspace folder, label decisions, a calibration), so the test spends
its time on what the other visitors can do, not on training.
"""

import re
import shutil

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from tests.browser import CHROMIUM_ARGS, require_chromium, shot_on_failure, streamlit_server, wait_idle
from tests.helpers import make_colour_dataset
from tlcore import sessions

pytestmark = pytest.mark.browser
expect.set_options(timeout=90_000)  # a loaded machine renders a first page slowly
SECRETS = {name: sessions.new_secret() for name in ("alice", "bob", "carol")}
OWNERS = {name: sessions.owner_id(secret) for name, secret in SECRETS.items()}
SHARED_RUN, OTHER_RUN, CLI_RUN = (
    "20260101-000003-alice-shared-aaaa",
    "20260101-000002-alice-other-bbbb",
    ("20260101-000001-cli-published-cccc"),
)


def place_run(source, runs_root, run_id, owner):
    """A copy of a finished run as the dashboard's training leaves it for ``owner`` (``None``: the CLI)."""
    from tlcore.runs.access import ACCESS_FILE

    target = runs_root / run_id
    shutil.copytree(source.path, target, ignore=shutil.ignore_patterns(ACCESS_FILE, "calibration.json"))
    if owner:
        (target / ACCESS_FILE).write_text(f'{{"owner": "{owner}"}}')
    return target


@pytest.fixture(scope="module")
def studio(tmp_path_factory, trained_run):
    from tlcore.data.scan import scan_folder
    from tlcore.insight import calibration, overlay
    from tlcore.runs.store import read_run

    work = tmp_path_factory.mktemp("visitors")
    data_root = work / "photos"
    shared_photos = make_colour_dataset(data_root / "colours", per_class=6, classes=("red", "blue"))
    alice_dir = work / "workspace" / "sessions" / OWNERS["alice"]
    built = make_colour_dataset(alice_dir / "built", per_class=5, classes=("green", "blue"))
    for colour, name in (("green", "ripe"), ("blue", "raw")):  # class names only Alice's photos have
        (built / colour).rename(built / name)
    (work / "runs").mkdir()
    for run_id, owner in ((SHARED_RUN, OWNERS["alice"]), (OTHER_RUN, OWNERS["alice"]), (CLI_RUN, None)):
        place_run(trained_run, work / "runs", run_id, owner)
    calibrated = read_run(work / "runs" / SHARED_RUN)
    calibration.save_temperature(
        calibrated.path, calibration.calibration_report(*calibrated.val_probabilities()[:0:-1])
    )
    env = {
        "TLCORE_SHARED": "1",
        "TLCORE_DATA_ROOTS": str(data_root),
        "TLCORE_WORKSPACE": str(work / "workspace"),
        "TLCORE_RUNS_DIR": str(work / "runs"),
    }
    with pytest.MonkeyPatch.context() as patch:  # Alice's label decision, kept in her own workspace folder
        for key, value in env.items():
            patch.setenv(key, value)
        first = scan_folder(shared_photos, min_images_per_class=1).items[0]
        overlay.record([str(shared_photos)], first.path, first.digest, "exclude", owner=OWNERS["alice"])
    with streamlit_server(work, env, launcher=("serve.py",)) as (url, _):  # as `make serve` starts it
        yield url, work, shared_photos, built


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def visitor(browser, url, name, path=""):
    """A page in a browser context of its own that carries ``name``'s cookie."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_cookies([{"name": sessions.COOKIE_NAME, "value": SECRETS[name], "url": url}])
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(f"{url}/{path}")
    expect(page.locator("h1").first).to_be_visible()
    wait_idle(page)
    return page


def options(page, label):
    """The choices of the select box labelled ``label`` (opened, read, closed)."""
    for _ in range(5):  # a rerun that redraws the box closes its list: read it again
        open_select(page, label)
        found = page.get_by_role("option").all_inner_texts()
        page.keyboard.press("Escape")
        if found:
            return found
        page.wait_for_timeout(1000)
    return []


def open_select(page, label):
    # The keyboard opens the list (a click on the box did not); a page still settling may
    # swallow the first key, so it is tried again.
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.get_by_role("combobox")
    for _ in range(10):
        box.focus()
        page.keyboard.press("ArrowDown")
        try:
            page.get_by_role("option").first.wait_for(timeout=3000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"the select box {label!r} did not open")


def data_folder(page, path):
    page.get_by_text("Folder on this server", exact=True).click()
    wait_idle(page)
    field = page.get_by_label("Folder path", exact=True)
    field.fill(str(path))
    field.press("Enter")
    wait_idle(page)


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def test_visitors_see_read_and_change_only_their_own_and_a_share_link_opens_one_run(studio, browser):
    url, work, shared_photos, built = studio
    calibration_file = work / "runs" / SHARED_RUN / "calibration.json"
    decisions_before = sorted(p.read_text() for p in (work / "workspace").rglob("overlays/*.json"))

    # Alice (first context) sees her runs and may change them: the guards below are not vacuous.
    alice = visitor(browser, url, "alice", "runs")  # the server's first run: as a tab reconnecting after a restart
    with shot_on_failure(alice, "visitors-alice"):
        assert alice.get_by_text("Page not found").count() == 0
        assert set(options(alice, "Run to download")) >= {SHARED_RUN, OTHER_RUN}
        open_select(alice, "Run to download")
        alice.get_by_role("option", name=SHARED_RUN, exact=True).click()
        wait_idle(alice)
        alice.get_by_text("Share this run read-only").click()
        alice.get_by_role("button", name="Make a share link").click()
        wait_idle(alice)
        link = alice.locator('[data-testid="stCode"]').filter(has_text="?run=").first.inner_text().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/evaluate\?run=[A-Za-z0-9_-]{20,}", link), link

    # Bob (second context): none of Alice's runs, folders or decisions.
    bob = visitor(browser, url, "bob", "runs")
    with shot_on_failure(bob, "visitors-bob"):
        assert options(bob, "Run to download") == [f"{CLI_RUN} (published, read-only)"]  # no download of hers
        assert SHARED_RUN not in main_text(bob) and OTHER_RUN not in main_text(bob)
        bob.goto(f"{url}/evaluate")
        wait_idle(bob)
        assert options(bob, "Run") == [f"{CLI_RUN} (published, read-only)"]  # nothing of hers to evaluate
        bob.goto(f"{url}/predict")
        wait_idle(bob)
        assert options(bob, "Trained run") == [f"{CLI_RUN} (published, read-only)"]
        bob.goto(f"{url}/data")
        wait_idle(bob)
        for typed in (work / "workspace" / "sessions", built, work / "runs" / SHARED_RUN):
            data_folder(bob, typed)
            expect(bob.get_by_text(re.compile("other visitors' uploads, datasets and runs are theirs"))).to_be_visible()
            assert bob.locator('[data-testid="stMetric"]').count() == 0 and "raw" not in main_text(bob)
        data_folder(bob, shared_photos)  # the folder Alice made a decision about: Bob has none, and no Undo
        expect(bob.get_by_text(re.compile(r"Current dataset: 12 images"))).to_be_visible()
        bob.get_by_text("Check the labels").click()
        wait_idle(bob)
        assert "Your label decisions" not in main_text(bob) and bob.get_by_role("button", name="Undo").count() == 0

        # Through Alice's link: that run only, read-only; its calibration stays.
        bob.goto(link)
        wait_idle(bob)
        assert options(bob, "Run") == [
            f"{SHARED_RUN} (shared with you, read-only)",
            f"{CLI_RUN} (published, read-only)",
        ]
        bob.get_by_text("Why: calibration").click()
        wait_idle(bob)
        apply = bob.get_by_role("checkbox", name="Apply temperature scaling to this run's predictions")
        expect(apply).to_be_checked()
        expect(apply).to_be_disabled()
        apply.click(force=True)  # a click on the disabled box changes nothing
        wait_idle(bob)
        assert calibration_file.is_file()
        bob.goto(f"{url}/runs")
        wait_idle(bob)
        assert options(bob, "Run to download") == [f"{CLI_RUN} (published, read-only)"]  # no download through it

    # Carol (third context) opens the link too: exactly that run, not Alice's other one, on Predict as well.
    carol = visitor(browser, url, "carol", link.split("/", 3)[3])
    with shot_on_failure(carol, "visitors-carol"):
        assert options(carol, "Run")[0] == f"{SHARED_RUN} (shared with you, read-only)"
        carol.locator('[data-testid="stSidebarNav"]').get_by_text("Predict", exact=True).click()
        wait_idle(carol)
        assert OTHER_RUN not in " ".join(options(carol, "Trained run"))
        assert f"{SHARED_RUN} (shared with you, read-only)" in options(carol, "Trained run")

    # Alice stops sharing: a fresh visit through the old link shows the run no more.
    alice.get_by_role("button", name="Stop sharing").click()
    wait_idle(alice)
    stranger = visitor(browser, url, "carol", link.split("/", 3)[3])
    assert SHARED_RUN not in " ".join(options(stranger, "Run"))
    assert calibration_file.is_file()
    assert sorted(p.read_text() for p in (work / "workspace").rglob("overlays/*.json")) == decisions_before
    for page in (alice, bob, carol, stranger):
        page.context.close()
