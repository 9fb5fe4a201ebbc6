"""Live demo mode (issue 22) in real browsers: a presenter's context and phones' contexts against one
shared server. The presenter's run is a real tiny SmallCNN run (the colour classes)."""

import json
import random
import re

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.browser import CHROMIUM_ARGS, require_chromium, shot, shot_on_failure, streamlit_server, wait_idle
from tests.helpers import COLOURS, colour_image
from tests.test_browser_visitors import place_run
from tlcore import sessions

pytestmark = pytest.mark.browser
expect.set_options(timeout=90_000)
SECRET, VISITOR_SECRET = sessions.new_secret(), sessions.new_secret()
PRESENTER = sessions.owner_id(SECRET)
RUN, OTHER_RUN = "20260101-000002-present-aaaa", "20260101-000001-private-bbbb"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
# What only the presenter's page shows: the link's controls, the room and the inbox under review.
PRESENTER_ONLY = (
    "Open an audience link",
    "Revoke the link",
    "Collect audience photos",
    "The room",
    "The inbox",
    "Discard",
)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, trained_run, colour_dataset):
    work = tmp_path_factory.mktemp("present")
    (work / "runs").mkdir()
    place_run(trained_run, work / "runs", RUN, PRESENTER)
    place_run(trained_run, work / "runs", OTHER_RUN, PRESENTER)
    rng = random.Random(3)
    for colour in ("red", "blue"):
        colour_image(COLOURS[colour], 64, rng).save(work / f"{colour}.png")
    Image.new("RGB", (64, 64), COLOURS["red"]).save(work / "blank.png")  # a placeholder: one solid colour
    env = {
        "TLCORE_SHARED": "1",
        "TLCORE_DATA_ROOTS": str(colour_dataset.parent),
        "TLCORE_WORKSPACE": str(work / "workspace"),
        "TLCORE_RUNS_DIR": str(work / "runs"),
    }
    with streamlit_server(work, env, launcher=("serve.py",)) as (url, _):
        yield url, work


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def presenter(browser, url, secret=SECRET):
    """A browser context of its own carrying the presenter's cookie (``secret``: another visitor's)."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.add_cookies([{"name": sessions.COOKIE_NAME, "value": secret, "url": url}])
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(f"{url}/present")
    wait_idle(page)
    return page


def phone(browser, link):
    page = browser.new_context(**PHONE).new_page()
    page.set_default_timeout(90_000)
    page.goto(link)
    wait_idle(page)
    return page


def upload(page, path):
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(path))
    wait_idle(page)


def text(page) -> str:
    return page.locator("body").inner_text()


def open_link(page) -> str:
    page.get_by_role("button", name="Open an audience link").click()
    wait_idle(page)
    qr = page.locator('[data-testid="stImage"] img').first  # the QR code: an image that loaded
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.naturalWidth") >= 200
    link = page.locator('[data-testid="stCode"]').filter(has_text="?present=").first.inner_text().strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?present=[A-Za-z0-9_-]{40,}", link), link
    return link


def the_link(page) -> str:
    """The presenter's open link, opened first when the run shown has none (an earlier test may have left one)."""
    opener = page.get_by_role("button", name="Open an audience link")
    expect(opener.or_(page.get_by_text("Revoke the link"))).to_be_visible()
    if opener.count():
        return open_link(page)
    return page.locator('[data-testid="stCode"]').filter(has_text="?present=").first.inner_text().strip()


def nothing_else(page, url, link, work):
    """Every way out of the audience page tried on a phone: each lands on the audience page again."""
    token = link.split("present=")[1]
    assert page.locator('[data-testid="stSidebar"]:visible, [data-testid="stSidebarNav"]').count() == 0
    assert page.locator('[data-testid="stMainMenu"]:visible, [data-testid="stToolbar"]:visible').count() == 0
    links = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    here = page.url.split("#")[0]
    # No link into the studio; a fragment of this page ("skip to content") stays on it.
    assert [href for href in links if href.startswith(url) and href.split("#")[0] != here] == [], links
    assert page.locator('[data-testid="stDownloadButton"], a[download], .modebar').count() == 0  # no download
    for path in (
        f"runs?present={token}",  # another page, with the token
        f"model?present={token}",
        f"present?present={token}",  # the presenter's own page: its link, room and inbox
        f"nowhere?present={token}",  # a page that does not exist
        f"?present={token}&page=runs",
        f"evaluate?present={token}&run={OTHER_RUN}",  # another run of the presenter
        f"predict?present={token}&run=../../etc",
        f"?present={token}&job=x",
    ):
        page.goto(f"{url}/{path}")
        wait_idle(page)
        body = text(page)
        assert "Is it" in body, (path, body)
        assert page.get_by_text("Page not found").count() == 0, (path, body)  # the audience page, at every path
        assert page.locator('[data-testid="stImage"], [data-testid="stDownloadButton"]').count() == 0, path
        for secret in (OTHER_RUN, RUN, str(work), "Run to download", "Folder on this server", "Home", *PRESENTER_ONLY):
            assert secret not in body, (path, secret)
    # (A rerun that drops the token in the same session — only a hand-made client can send one — is
    # tested with AppTest in test_present.py.)


def test_presenter_and_phone_a_revoked_link_stops_working(studio, browser):
    url, work = studio
    page = presenter(browser, url)
    with shot_on_failure(page, "present-presenter"):
        expect(page.get_by_text(re.compile(r"Validation accuracy \d+% on \d+ images"))).to_be_visible()
        expect(page.locator('[data-testid="stSidebar"]')).to_be_hidden()  # a projector shows no sidebar
        assert page.locator('[data-testid="stDataFrame"], [data-testid="stForm"]').count() == 0
        upload(page, work / "red.png")
        expect(page.locator(".tl-bars").first).to_contain_text(re.compile(r"(red|green|blue)\s*\d+%"))
        page.get_by_text("Grad-CAM: where the model looks").click()
        wait_idle(page)
        expect(page.locator('[data-testid="stImage"]').first).to_be_visible()
        link = open_link(page)

    mobile = phone(browser, link)
    with shot_on_failure(mobile, "present-phone"):
        expect(
            mobile.get_by_text(re.compile(r"Is it red or green or blue\?|Is it blue or green or red\?"))
        ).to_be_visible()
        upload(mobile, work / "blank.png")  # a placeholder: Predict's warning instead of a bar chart
        expect(mobile.get_by_text(re.compile("This picture looks like a blank or placeholder graphic"))).to_be_visible()
        assert mobile.locator(".tl-bars").count() == 0
        shot(mobile, "present-phone-blank")
        upload(mobile, work / "blue.png")
        expect(mobile.locator(".tl-bars")).to_contain_text("%")
        expect(mobile.get_by_text("Your photo is used for the answer only: it is not kept.")).to_be_visible()
        nothing_else(mobile, url, link, work)
        assert not (work / "workspace" / "sessions" / PRESENTER / "present").exists()  # nothing kept

    with shot_on_failure(page, "present-presenter-room"):
        # One answer: the blank picture is not in the room's count nor its tally.
        expect(page.get_by_text(re.compile("The room · phones 1 · answers 1"))).to_be_visible(timeout=20_000)
        page.get_by_role("button", name="Revoke the link").click()
        wait_idle(page)
        expect(page.get_by_role("button", name="Open an audience link")).to_be_visible()
        page.get_by_role("link", name="Back to the studio").click()  # the projector hides the sidebar
        expect(page.get_by_role("heading", name="Runs")).to_be_visible()

    with shot_on_failure(mobile, "present-phone-revoked"):
        upload(mobile, work / "red.png")  # the phone's next request, in its open session
        expect(mobile.get_by_text(re.compile("This link is not open"))).to_be_visible()
        assert mobile.locator(".tl-bars").count() == 0
        again = phone(browser, link)  # a phone opening the revoked link
        expect(again.get_by_text(re.compile("This link is not open"))).to_be_visible()
        assert "Is it" not in text(again)
        stranger = phone(browser, f"{url}/?present={'x' * 43}")
        expect(stranger.get_by_text(re.compile("This link is not open"))).to_be_visible()


def test_the_room_teaches_the_model_photos_into_the_dataset_and_a_retrain_counts_them(studio, browser):
    url, work = studio
    page = presenter(browser, url)
    with shot_on_failure(page, "present-collect"):
        link = the_link(page)
        page.get_by_text("Collect audience photos").click()
        wait_idle(page)
    mobile = phone(browser, link)
    with shot_on_failure(mobile, "present-collect-phone"):
        upload(mobile, work / "red.png")  # the answer first, then the class (asked again for every photo)
        expect(mobile.locator(".tl-bars").first).to_be_visible()
        mobile.get_by_test_id("stRadioGroup").get_by_text("red", exact=True).click()
        expect(mobile.get_by_text("Thank you: your photo went to the presenter as 'red'.")).to_be_visible()
        upload(mobile, work / "blue.png")  # the next photo: its class is asked again, not carried over
        expect(mobile.get_by_text(re.compile("Choose its class and your photo is kept"))).to_be_visible()
        expect(mobile.get_by_text("Thank you: your photo went to the presenter as 'red'.")).to_have_count(0)
        mobile.get_by_test_id("stRadioGroup").get_by_text("green", exact=True).click()  # a blue photo, said green
        expect(mobile.get_by_text("Thank you: your photo went to the presenter as 'green'.")).to_be_visible()
    with shot_on_failure(page, "present-collect-retrain"):
        expect(page.get_by_text(re.compile(r"The inbox: 2 photos \(all shown\)"))).to_be_visible(timeout=20_000)
        shot(page, "present-inbox-discard")
        wrong = page.locator('[data-testid="stColumn"]').filter(has=page.get_by_text("green", exact=True)).first
        wrong.get_by_role("button", name="Discard").click()  # the presenter's review: a wrong class
        wait_idle(page)
        expect(page.get_by_text(re.compile(r"The inbox: 1 photo \(all shown\)"))).to_be_visible()
        add = page.get_by_role("button", name="Add 1 photo to the dataset and retrain")
        expect(add).to_be_visible(timeout=20_000)
        add.click()
        # What was added, per class, and the dataset after.
        added = re.compile(
            r"\+1 audience photo: red \+1; the dataset now has \d+ images \(blue \d+, green \d+, red \d+\)\."
        )
        expect(page.get_by_text(added)).to_be_visible(timeout=30_000)
        present_new = page.get_by_role(
            "button", name=re.compile(r"Present the retrained run: \d+ training images \(\+1\), validation accuracy")
        )
        expect(present_new).to_be_visible(timeout=240_000)
        dataset = work / "workspace" / "sessions" / PRESENTER / "present" / RUN / "dataset"
        assert [p.parent.name for p in dataset.glob("*/audience-*.jpg")] == ["red"]  # the discarded one is not there
        old = json.loads((work / "runs" / RUN / "metrics.json").read_text())
        new_runs = [p for p in (work / "runs").iterdir() if p.name not in (RUN, OTHER_RUN)]
        new = json.loads((new_runs[0] / "metrics.json").read_text())
        assert new["num_train"] + new["num_val"] == old["num_train"] + old["num_val"] + 1
        present_new.click()
        wait_idle(page)
        rooms = [json.loads(p.read_text()) for p in (work / "workspace" / "present").glob("*.json")]
        assert [room["run_id"] for room in rooms if link.endswith(room["token"])] == [new_runs[0].name]


def test_another_visitor_gets_nothing_of_the_presenters_room_and_a_phone_no_inbox(studio, browser):
    """Two browsers at once (each its own cookie) on a shared server: presenter A with a room open
    and a photo in its inbox; visitor B sees neither A's run, room, link nor inbox, and cannot
    revoke it; a phone with A's link reaches neither A's inbox, runs nor downloads."""
    url, work = studio
    page = presenter(browser, url)
    with shot_on_failure(page, "present-two-presenter"):
        link = the_link(page)
        token = link.split("present=")[1]
        collect = page.locator('[data-testid="stCheckbox"]').filter(has_text="Collect audience photos").locator("input")
        if not collect.is_checked():  # the room of an earlier test may be collecting already
            page.get_by_text("Collect audience photos").click()
            wait_idle(page)
    mobile = phone(browser, link)
    with shot_on_failure(mobile, "present-two-phone"):
        upload(mobile, work / "red.png")
        mobile.get_by_test_id("stRadioGroup").get_by_text("red", exact=True).click()
        expect(mobile.get_by_text("Thank you: your photo went to the presenter as 'red'.")).to_be_visible()
    with shot_on_failure(page, "present-two-inbox"):  # A's page shows what B must not see: the guards are not vacuous
        expect(page.get_by_text(re.compile(r"The inbox: \d+ photos?"))).to_be_visible(timeout=20_000)
        expect(page.get_by_role("button", name="Discard").first).to_be_visible()

    other = presenter(browser, url, VISITOR_SECRET)  # B: an ordinary visitor of the same server, at the same time
    with shot_on_failure(other, "present-two-visitor"):
        expect(other.get_by_text("Train a run first")).to_be_visible()
        body = text(other)
        for secret in (token, RUN, OTHER_RUN, "?present=", *PRESENTER_ONLY):
            assert secret not in body, secret
        assert other.locator('[data-testid="stImage"]').count() == 0  # no QR code, no inbox photo
        other.goto(f"{url}/runs")
        wait_idle(other)
        assert RUN not in text(other) and OTHER_RUN not in text(other)
    with shot_on_failure(mobile, "present-two-phone-reach"):  # the phone, by the presenter's own page address
        mobile.goto(f"{url}/present?present={token}")
        wait_idle(mobile)
        body = text(mobile)
        assert "Is it" in body and mobile.get_by_text("Page not found").count() == 0
        for secret in (RUN, "Run to download", *PRESENTER_ONLY):
            assert secret not in body, secret
        assert mobile.locator('[data-testid="stImage"], [data-testid="stDownloadButton"]').count() == 0
    # B's visit changed nothing: A's link still works and A still sees it and its inbox.
    page.reload()
    wait_idle(page)
    expect(page.locator('[data-testid="stCode"]').filter(has_text=token)).to_be_visible()
    expect(page.get_by_text(re.compile(r"The inbox: \d+ photos?"))).to_be_visible(timeout=20_000)
    again = phone(browser, link)
    expect(again.get_by_text(re.compile(r"Is it (red|blue)"))).to_be_visible()
    for context in {p.context for p in (page, mobile, other, again)}:
        context.close()
