"""End to end in a real headless Chromium against `streamlit run app.py`."""

import contextlib
import os
import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser import CHROMIUM_ARGS, require_chromium, shot, shot_on_failure, streamlit_server, wait_idle

pytestmark = pytest.mark.browser
expect.set_options(timeout=120_000)  # the first page that loads TensorFlow is slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with streamlit_server(tmp_path_factory.mktemp("studio")) as (url, process):
        yield url, process


@pytest.fixture(scope="module")
def browser():
    executable = require_chromium()
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def open_page(browser, url):
    """A page in a new browser context (its own cookie), or in ``browser`` when it is a context."""
    is_context = not hasattr(browser, "new_context")
    page = browser.new_page() if is_context else browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url)
    expect(page.locator("h1").first).to_be_visible()
    return page


def nav(page, name):
    page.locator('[data-testid="stSidebarNav"]').get_by_text(name, exact=True).click()
    expect(page.locator("h1").first).to_have_text(name if name != "Home" else "Transfer-learning studio")
    wait_idle(page)


def plotly_traces(page):
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => (p._fullData || p.data).map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])})))"
    )


def test_demo_flow_data_model_train_chart_predict(server, browser, tmp_path):
    url, _ = server
    page = open_page(browser, url)
    shot(page, "01-home")

    nav(page, "Data")
    expect(page.get_by_text("Current dataset: 600 images · 3 classes.")).to_be_visible()
    shot(page, "02-data")

    nav(page, "Model")
    page.get_by_text("none (random: trains from scratch)").click()
    wait_idle(page)
    expect(page.get_by_text("Trainable parameters")).to_be_visible()
    metric = page.locator('[data-testid="stMetricValue"]').first
    everything = int(metric.inner_text().replace(",", ""))
    # Random weights: every layer trains. Untick Conv1 (3x3x3x32 = 864 weights) in the layer table.
    grid = page.locator('[data-testid="stDataFrame"]').first
    box = grid.bounding_box()
    row_height = 35
    page.mouse.click(box["x"] + box["width"] - 70, box["y"] + row_height * 2 + row_height / 2)
    wait_idle(page)
    expect(metric).to_have_text(f"{everything - 864:,}")
    page.keyboard.press("Escape")
    page.locator("h1").first.click()  # leave the grid so the next click reaches the button
    page.get_by_role("button", name="Freeze all", exact=True).click()
    head_only = 1280 * 3 + 3  # only the new head trains: 1280 features x 3 classes + biases
    expect(metric).to_have_text(f"{head_only:,}")
    page.get_by_role("button", name="Unfreeze from block_16").click()
    wait_idle(page)
    expect(metric).not_to_have_text(f"{head_only:,}")
    page.get_by_role("button", name="Freeze all", exact=True).click()  # fast training below: features cached
    wait_idle(page)
    expect(metric).to_have_text(f"{head_only:,}")
    shot(page, "03-model")

    nav(page, "Train")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("2")
    epochs.press("Tab")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text(re.compile(r"Finished: validation accuracy"))).to_be_visible(timeout=240_000)
    wait_idle(page)
    traces = [t for chart in plotly_traces(page) for t in chart if t["name"] == "validation accuracy"]
    assert traces and traces[0]["x"] == [1, 2], traces
    shot(page, "04-train")

    nav(page, "Evaluate")
    expect(page.get_by_text("Validation accuracy")).to_be_visible()
    shot(page, "05-evaluate")
    # (2 epochs on random features: near-uniform predictions, so TTA barely moves the numbers here;
    # tests/test_app.py checks the loss changes on a trained model)
    tta = "Average each image with its mirror image (test-time augmentation)"
    page.get_by_text(tta).click()
    wait_idle(page)  # the validation images are predicted again, with their mirrors
    expect(page.get_by_role("switch", name=tta).or_(page.get_by_label(tta, exact=True))).to_be_checked()
    expect(page.locator('[data-testid="stMetric"]').filter(has_text="Validation loss")).to_be_visible()
    no_app_error(page)
    shot(page, "05b-evaluate-tta")

    nav(page, "Predict")
    import random

    from tlcore.data.demo import draw_shape

    image = tmp_path / "my triangle.png"
    draw_shape("triangle", 96, random.Random(7)).save(image)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(image))
    wait_idle(page)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.wait_for_function("() => document.querySelector('.js-plotly-plot')._fullData")
    bars = [t for chart in plotly_traces(page) for t in chart]
    assert bars and set(bars[0]["y"]) <= {"circle", "square", "triangle"} and len(bars[0]["y"]) == 3
    shot(page, "06-predict")
    page.get_by_text("Average with the mirror image (test-time augmentation)").click()
    wait_idle(page)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    no_app_error(page)
    shot(page, "06b-predict-tta")

    nav(page, "Runs")
    expect(page.get_by_text("Compare runs")).to_be_visible()
    shot(page, "07-runs")
    page.close()


def test_leaving_the_train_page_and_coming_back_keeps_the_job_and_chart(server, browser):
    url, _ = server
    page = open_page(browser, url)
    choose_small_cnn(page)
    nav(page, "Train")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("3")
    epochs.press("Tab")
    page.get_by_role("button", name="Start training").click()
    main = page.locator('[data-testid="stMain"]')  # the sidebar's job line shows the same words
    expect(
        main.get_by_text(re.compile(r"head · epoch|computing backbone features|loading data|building model")).first
    ).to_be_visible()
    nav(page, "Data")
    nav(page, "Train")
    expect(page.get_by_text(re.compile(r"Finished: validation accuracy"))).to_be_visible(timeout=240_000)
    wait_idle(page)
    traces = [t for chart in plotly_traces(page) for t in chart if t["name"] == "validation accuracy"]
    assert traces and traces[0]["x"] == [1, 2, 3]
    # A full page refresh finds the job again through the URL.
    page.reload()
    expect(page.get_by_text(re.compile(r"Finished: validation accuracy"))).to_be_visible()
    page.close()


def test_a_job_started_in_one_tab_shows_in_the_other_without_a_click(server, browser):
    """The newcomer's walk: tab 1 kept showing the old result and an enabled Start while tab 2 trained."""
    url, _ = server
    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # one browser: one cookie
    try:
        first = open_page(context, url)
        choose_small_cnn(first)
        nav(first, "Train")
        second = open_page(context, url)
        nav(second, "Train")
        epochs = second.get_by_label("Epochs", exact=True)
        epochs.fill("30")
        epochs.press("Tab")
        wait_idle(second)
        second.get_by_role("button", name="Start training").click()
        # Tab 1 is not touched: its idle job line notices the new job and redraws the page.
        expect(first.locator('[data-testid="stMain"]').get_by_role("button", name="Stop")).to_be_visible(timeout=60_000)
        expect(first.get_by_role("button", name="Start training")).to_be_disabled()
        first.locator('[data-testid="stMain"]').get_by_role("button", name="Stop").click()
        expect(second.get_by_text(re.compile(r"Stopped|Finished")).first).to_be_visible(timeout=120_000)
    finally:
        context.close()


def test_a_deep_link_as_the_first_request_still_goes_through_the_router(tmp_path, browser):
    with streamlit_server(tmp_path) as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/model")
        expect(page.locator("h1").first).to_have_text("Model")
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar.get_by_text("CURRENT SETUP")).to_be_visible()
        navigation = sidebar.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Image classifier" in navigation and "shared" not in navigation
        page.close()


def choose_small_cnn(page):
    """The offline recipe on the Model page: SmallCNN, trained from scratch in seconds."""
    nav(page, "Model")
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="SmallCNN").click()
    expect(page.get_by_text("Trainable parameters")).to_be_visible()
    wait_idle(page)


def start_small_cnn_training(browser, url, epochs, patience=None):
    page = open_page(browser, url)
    choose_small_cnn(page)
    nav(page, "Train")
    field = page.get_by_label("Epochs", exact=True)
    field.fill(str(epochs))
    field.press("Tab")
    if patience is not None:
        set_number(page, "Early stopping patience (0 = off)", patience)
    page.get_by_role("button", name="Start training").click()
    return page


def wait_for_chart_points(page, at_least, name="validation accuracy", timeout=240_000):
    """Wait until a chart's trace `name` has `at_least` points; return how many it had then.

    Read in the same check as the wait: the chart is redrawn every few seconds, so a second
    read may find it between two drawings."""
    handle = page.wait_for_function(
        """([name, count]) => {
            const lengths = Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
                p => (p._fullData || p.data || []).filter(t => t.name === name).map(t => (t.x || []).length));
            const most = Math.max(0, ...lengths);
            return most >= count ? most : false;
        }""",
        arg=[name, at_least],
        timeout=timeout,
    )
    return handle.json_value()


@contextlib.contextmanager
def stopped_at_the_end(page):
    """Stop the page's running job however the test ends: a job left running holds a slot
    of the studio's job limit and makes the next browser test wait for 'busy'."""
    try:
        yield page
    finally:
        stop = page.get_by_role("button", name="Stop")
        if stop.count() and stop.first.is_visible():
            stop.first.click()
            expect(page.get_by_text(re.compile("Stopped: validation accuracy"))).to_be_visible(timeout=120_000)


def test_refreshing_mid_run_brings_back_the_running_job_chart_and_stop(server, browser):
    url, _ = server
    page = start_small_cnn_training(browser, url, 200, patience=0)  # still running when the page reloads
    with stopped_at_the_end(page):
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        wait_for_chart_points(page, 1)
        assert "job=" in page.url
        page.reload()  # the same browser (its cookie) while the job is still running
        expect(page.locator("h1").first).to_have_text("Train")
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        expect(page.get_by_role("button", name="Start training")).to_be_disabled()
        before = wait_for_chart_points(page, 1)  # the chart came back with the epochs so far…
        wait_for_chart_points(page, before + 1)  # …and keeps growing
        expect(page.locator('[data-testid="stSidebar"]')).to_contain_text(re.compile(r"epoch \d+"))
        shot(page, "11-refresh-mid-run")
    page.close()


def test_a_shared_job_link_opened_in_another_browser_shows_no_job_and_no_stop(server, browser):
    url, _ = server
    owner = start_small_cnn_training(browser, url, 200, patience=0)
    with stopped_at_the_end(owner):
        expect(owner.get_by_role("button", name="Stop")).to_be_visible()
        main = owner.locator('[data-testid="stMain"]')  # the sidebar's job line shows the same words
        expect(main.get_by_text(re.compile(r"head · epoch|loading data|building model"))).to_be_visible()
        link = owner.url
        assert "job=" in link
        stranger = browser.new_page(viewport={"width": 1400, "height": 1000})  # a new context: no cookie
        stranger.set_default_timeout(120_000)
        stranger.goto(link)
        expect(stranger.locator("h1").first).to_have_text("Train")
        wait_idle(stranger)
        expect(stranger.get_by_text(re.compile("belongs to another browser"))).to_be_visible()
        expect(stranger.locator('[data-testid="stSidebar"]')).to_contain_text("Job · none yet")
        # Its own Start, for its own setup (disabled here: the default ImageNet weights cannot download offline).
        expect(stranger.get_by_role("button", name="Start training")).to_be_visible()
        assert stranger.get_by_role("button", name="Stop").count() == 0
        assert stranger.locator(".js-plotly-plot").count() == 0  # not the owner's chart either
        shot(stranger, "12-shared-link")
        stranger.close()
    owner.close()


def test_two_sessions_train_at_once_without_cross_talk(server, browser):
    url, _ = server
    # The default cap (2) lets both run. Each page is its own browser context: its own session.
    first = start_small_cnn_training(browser, url, 3)
    second_page = start_small_cnn_training(browser, url, 4)
    finished = re.compile(r"Finished: validation accuracy .* Saved as run (\S+)\.")
    for page in (first, second_page):
        expect(page.get_by_text(re.compile("Finished: validation accuracy"))).to_be_visible(timeout=240_000)
        wait_idle(page)
    epochs = []
    runs = []
    for page in (first, second_page):
        traces = [t for chart in plotly_traces(page) for t in chart if t["name"] == "validation accuracy"]
        epochs.append(traces[0]["x"])
        runs.append(
            finished.search(page.get_by_text(re.compile("Finished: validation accuracy")).inner_text()).group(1)
        )
    assert epochs == [[1, 2, 3], [1, 2, 3, 4]]  # each session sees its own job's chart
    assert runs[0] != runs[1]
    shot(second_page, "08-second-session")
    first.close()
    second_page.close()


def test_the_job_cap_gives_the_extra_session_a_busy_message(tmp_path, browser):
    with streamlit_server(tmp_path, {"TLCORE_MAX_JOBS": "1"}) as (url, _):
        first = start_small_cnn_training(browser, url, 40)
        expect(first.get_by_role("button", name="Stop")).to_be_visible()
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        other = context.new_page()
        other.set_default_timeout(120_000)
        other.goto(url)
        expect(other.locator("h1").first).to_be_visible()
        choose_small_cnn(other)  # a model that loads offline: Start is disabled for one that does not
        nav(other, "Train")
        other.get_by_role("button", name="Start training").click()
        expect(other.get_by_text(re.compile("The studio is busy: 1 job is running"))).to_be_visible()
        shot(other, "09-busy")
        first.get_by_role("button", name="Stop").click()
        expect(first.get_by_text(re.compile("Stopped: validation accuracy"))).to_be_visible(timeout=120_000)
        first.close()
        context.close()


def test_killing_the_server_mid_run_leaves_runs_readable_after_a_restart(tmp_path, browser):
    import signal

    from tlcore.runs.store import RunStore

    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # one browser: its runs are its own
    with streamlit_server(tmp_path) as (url, process):
        page = start_small_cnn_training(context, url, 200)
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        page.wait_for_timeout(1500)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=20)
        page.close()
    runs = RunStore(tmp_path / "runs").list()
    assert [run.status for run in runs] == ["incomplete"]
    with streamlit_server(tmp_path) as (url, _):
        page = open_page(context, url)
        nav(page, "Runs")
        expect(page.get_by_text("'incomplete' runs were interrupted")).to_be_visible()
        assert page.locator('[data-testid="stException"]').count() == 0
        shot(page, "10-runs-after-restart")
        page.close()
    context.close()


# ---------------------------------------------------------------------------
# The newcomer flow on real assets: hymenoptera photos + the shared dog-breed model file.


def sidebar_text(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def select_option(page, label, option):
    """Opens the selectbox labelled ``label`` and picks ``option``."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def set_number(page, label, value):
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Tab")
    wait_idle(page)


def no_app_error(page):
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()
    assert page.get_by_text("This app has encountered an error").count() == 0


def chart_epochs(page, name="validation accuracy"):
    return [t["x"] for chart in plotly_traces(page) for t in chart if t["name"] == name]


def new_context_page(browser, events=None):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(120_000)
    if events is not None:
        page.on("console", lambda message: events.append(f"console {message.type}: {message.text}"))
        page.on("request", lambda request: events.append(f"request {request.url}"))
    return context, page


def hymenoptera_server(tmp_path, hymenoptera):
    roots = os.pathsep.join([str(hymenoptera.parents[1]), str(tmp_path)])  # ../shared and a tmp folder
    return streamlit_server(tmp_path, {"TLCORE_DATA_ROOTS": roots})


def choose_hymenoptera(page, hymenoptera):
    nav(page, "Data")
    page.get_by_text("Folder on this server", exact=True).click()
    wait_idle(page)
    type_path(page, "Folder path", hymenoptera / "train")
    page.get_by_text("I have a separate validation folder", exact=True).click()
    wait_idle(page)
    type_path(page, "Validation folder path", hymenoptera / "val")


def type_path(page, label: str, path) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(path))
    field.press("Enter")
    wait_idle(page)


def choose_dog_model(page, dog_model):
    nav(page, "Model")
    select_option(page, "Backbone", "Your own Keras model file…")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(dog_model))
    wait_idle(page)


@pytest.mark.real_assets
def test_newcomer_flow_end_to_end(browser, hymenoptera, dog_model, tmp_path):
    """Folder + validation folder → own model file → two-phase training with a refresh
    mid-run → Evaluate → Predict → Runs (exports, snippet run outside the studio) → A/B → Text."""
    events = []
    train_dir, val_dir = hymenoptera / "train", hymenoptera / "val"
    with hymenoptera_server(tmp_path, hymenoptera) as (url, _):
        context, page = new_context_page(browser, events)
        with shot_on_failure(page, "e2e"):
            page.goto(url)
            expect(page.locator("h1").first).to_be_visible()
            sidebar = page.locator('[data-testid="stSidebar"]')
            expect(sidebar).to_contain_text("Job · none yet")

            # Data: a folder on this server plus a separate validation folder.
            choose_hymenoptera(page, hymenoptera)
            expect(page.get_by_text("Current dataset: 397 images · 2 classes.")).to_be_visible()
            expect(page.get_by_role("heading", name="Training set")).to_be_visible()
            expect(page.get_by_role("heading", name="Validation set")).to_be_visible()
            metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
            assert metrics[:6] == ["244", "2", "1", "153", "2", "0"], metrics  # images, classes, skipped per set
            expect(page.get_by_text("ants/imageNotFound.gif")).to_be_visible()  # the health report names it
            expect(page.get_by_text(re.compile("looks like a blank or placeholder graphic")).first).to_be_visible()
            # The health report's table, and nothing else: no Streamlit object help printed by "magic".
            assert page.get_by_text("DeltaGenerator").count() == 0, "the Data page prints a DeltaGenerator's help text"
            expect(sidebar).to_contain_text("train (validation folder: val)")
            expect(sidebar).to_contain_text("397 images · 2 classes")  # at once, not one action behind
            shot(page, "e2e-01-data")
            page.reload()
            expect(page.get_by_text("Current dataset: 397 images · 2 classes.")).to_be_visible()
            expect(page.get_by_label("Validation folder path", exact=True)).to_have_value(str(val_dir))
            no_app_error(page)

            # Model: the shared dog-breed MobileNetV2 as a model file.
            choose_dog_model(page, dog_model)
            expect(sidebar).to_contain_text("dog_breed_mobilenetv2_160.h5")  # named at once
            expect(page.get_by_text("Trainable parameters")).to_be_visible()
            expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text("2,562")  # 1280 x 2 + 2: the head
            shot(page, "e2e-02-model")
            page.reload()
            expect(page.locator("h1").first).to_have_text("Model")
            wait_idle(page)
            expect(page.get_by_text(re.compile("Using your model file"))).to_contain_text(
                "dog_breed_mobilenetv2_160.h5"
            )
            expect(sidebar).to_contain_text("397 images · 2 classes")
            no_app_error(page)
            # Another backbone (offline: its download error), then back to the file: the page, the
            # select and the sidebar agree (the select once showed the file over the other's page).
            select_option(page, "Backbone", "EfficientNetB0")
            expect(sidebar).to_contain_text("EfficientNetB0")
            select_option(page, "Backbone", "Your own Keras model file…")
            wait_idle(page)
            expect(page.get_by_text(re.compile("No internet on the server"))).to_have_count(0)
            expect(page.get_by_role("combobox", name="Backbone")).to_have_value("Your own Keras model file…")
            if "EfficientNetB0" in sidebar_text(page):  # the upload is gone: the page asks for it again
                expect(page.get_by_text(re.compile("Upload a model file to use it"))).to_be_visible()
                choose_dog_model(page, dog_model)
            expect(sidebar).to_contain_text("dog_breed_mobilenetv2_160.h5")
            no_app_error(page)

            # Train: 5 head epochs, 2 fine-tune epochs from a chosen block; the phase table says what trains.
            nav(page, "Train")
            set_number(page, "Epochs", 5)
            set_number(page, "Fine-tune epochs (0 = skip)", 2)
            select_option(page, "Unfreeze from block", "block_15")
            table = page.locator('[data-testid="stTable"]').first
            expect(table).to_contain_text("2,562")
            expect(table).to_contain_text(re.compile(r"fine-tune"))
            shot(page, "e2e-03-train-setup")
            # The phase table follows the select at once, not one change behind.
            expect(table).to_contain_text("block_15", timeout=10_000)
            page.reload()
            expect(page.get_by_label("Epochs", exact=True)).to_have_value("5")
            expect(page.get_by_label("Fine-tune epochs (0 = skip)", exact=True)).to_have_value("2")
            expect(page.get_by_role("combobox", name="Unfreeze from block")).to_have_value("block_15")
            expect(sidebar).to_contain_text("dog_breed_mobilenetv2_160.h5")
            wait_idle(page)

            page.get_by_role("button", name="Start training").click()
            stop = page.get_by_role("button", name="Stop")
            expect(stop).to_be_visible()
            expect(sidebar).not_to_contain_text("Job · none yet")
            first_status = sidebar_text(page)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => (p._fullData || p.data || [])"
                ".some(t => t.name === 'validation accuracy' && (t.x || []).length >= 1))",
                timeout=300_000,
            )
            assert sidebar_text(page) != first_status  # the sidebar's job line follows the job live
            shot(page, "e2e-04-train-running")

            # Refresh mid-run: the same browser finds its job, chart and Stop again.
            job_url = page.url
            assert "job=" in job_url
            page.reload()
            expect(page.get_by_role("button", name="Stop")).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            shot(page, "e2e-05-train-after-refresh")

            # The same link in another browser: no job, no Stop.
            other_context, other = new_context_page(browser)
            other.goto(job_url)
            expect(other.locator("h1").first).to_have_text("Train")
            wait_idle(other)
            expect(other.get_by_text(re.compile("belongs to another browser"))).to_be_visible()
            expect(other.locator('[data-testid="stSidebar"]')).to_contain_text("Job · none yet")
            assert other.get_by_role("button", name="Stop").count() == 0
            shot(other, "e2e-06-shared-link")
            other_context.close()

            finished = page.get_by_text(re.compile(r"Finished: validation accuracy"))
            expect(finished).to_be_visible(timeout=600_000)
            wait_idle(page)
            no_app_error(page)
            assert chart_epochs(page) == [[1, 2, 3, 4, 5, 6, 7]]  # 5 head + 2 fine-tune epochs on one axis
            expect(page.get_by_text(re.compile(r"Kept (head|fine-tune) epoch \d+"))).to_be_visible()
            expect(sidebar).to_contain_text("done")
            shot(page, "e2e-07-train-finished")

            # Evaluate: confusion matrix and the mistakes gallery with file names.
            nav(page, "Evaluate")
            expect(page.get_by_text("Validation accuracy")).to_be_visible()
            expect(page.locator('[data-testid="stMetricValue"]').nth(2)).to_have_text("153")
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            gallery = page.get_by_role("heading", name=re.compile(r"Misclassified \(\d+\)"))
            expect(gallery).to_be_visible()
            if not gallery.inner_text().endswith("(0)"):
                expect(page.get_by_text(re.compile(r"\.(jpe?g|png)\s*true")).first).to_be_visible()
            no_app_error(page)
            shot(page, "e2e-08-evaluate")

            # Predict: a real photo, then the placeholder GIF, which must be flagged.
            nav(page, "Predict")
            photo = sorted((val_dir / "bees").glob("*.jpg"))[0]
            uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]').first
            uploader.set_input_files(str(photo))
            wait_idle(page)
            page.wait_for_function(
                "() => document.querySelector('.js-plotly-plot') && document.querySelector('.js-plotly-plot')._fullLayout"
            )
            title = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullLayout.title.text")
            studio_top1 = re.sub(r"<[^>]+>", "", title).split(" (")[0]  # the title is "<b>bees (93%)</b>"
            assert studio_top1 in ("ants", "bees"), title
            uploader.set_input_files(str(train_dir / "ants" / "imageNotFound.gif"))  # added beside the photo
            wait_idle(page)
            expect(
                page.get_by_text(re.compile(r"imageNotFound\.gif looks like a blank or placeholder"))
            ).to_be_visible()
            no_app_error(page)
            shot(page, "e2e-09-predict")

            # Runs: the table, exports, downloads and the snippet run outside the studio.
            nav(page, "Runs")
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
            page.get_by_role("button", name="Export and check every format").click()
            expect(page.get_by_text(re.compile("formats exported and checked against the Keras model"))).to_be_visible(
                timeout=600_000
            )
            wait_idle(page)
            for name in ("SavedModel (.zip)", "ONNX (.zip)", "OpenVINO (.zip)", "LiteRT full int8 (.zip)"):
                expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()  # the exports' downloads
            for tab in ("Keras", "SavedModel", "ONNX", "OpenVINO", "LiteRT full int8"):
                page.get_by_role("tab", name=tab, exact=True).click()
                expect(page.locator('[data-testid="stCode"]').filter(visible=True).first).to_contain_text("load_image")
            shot(page, "e2e-10-runs")
            page.get_by_role("tab", name="Keras", exact=True).click()
            outside = tmp_path / "outside"
            outside.mkdir()
            for button in ("model.keras", "labels.txt"):
                with page.expect_download() as download:
                    page.get_by_role("button", name=button, exact=True).click()
                download.value.save_as(outside / download.value.suggested_filename)
            with page.expect_download() as download:
                page.get_by_role("button", name="predict_keras.py").filter(visible=True).click()
            download.value.save_as(outside / "predict.py")
            env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
            env["TF_CPP_MIN_LOG_LEVEL"] = "3"
            ran = subprocess.run(
                [sys.executable, "predict.py", str(photo)],
                cwd=outside,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert ran.returncode == 0, ran.stderr[-2000:]
            assert ran.stdout.split()[0] == studio_top1, (ran.stdout, title)

            # A/B on a small setup (SmallCNN from scratch), then the Train page shows both halves and a verdict.
            nav(page, "Model")
            select_option(page, "Backbone", "SmallCNN")
            expect(sidebar).to_contain_text("SmallCNN")
            nav(page, "Train")
            set_number(page, "Epochs", 2)
            set_number(page, "Fine-tune epochs (0 = skip)", 1)
            nav(page, "Runs")
            started = time.time()
            page.get_by_role("button", name="Run the A/B pair").click()
            expect(page.get_by_text(re.compile("A/B running"))).to_be_visible()
            nav(page, "Train")
            expect(page.get_by_text(re.compile(r"Finished: A/B pair"))).to_be_visible(timeout=600_000)
            print(f"A/B pair took {time.time() - started:.0f} s")
            wait_idle(page)
            table = page.locator('[data-testid="stTable"]').filter(has_text="A-fixed-features")
            expect(table).to_contain_text("B-fine-tune")
            no_app_error(page)
            shot(page, "e2e-11-ab")
            page.reload()
            expect(page.get_by_text(re.compile(r"Finished: A/B pair"))).to_be_visible()
            wait_idle(page)
            no_app_error(page)

            # Text: offline, the default preset gives a clear message, not raw error text.
            nav(page, "Text (GPT-2)")
            page.get_by_role("button", name="Generate").click()
            wait_idle(page, timeout=300)
            alert = page.locator('[data-testid="stAlert"]').filter(has_text="Could not download")
            expect(alert).to_be_visible()
            expect(alert).to_contain_text("Local preset folder")
            assert "Traceback" not in alert.inner_text()
            no_app_error(page)
            shot(page, "e2e-12-text")

            # Runs: the table shows every column without a horizontal scroll bar.
            nav(page, "Runs")
            grid = page.locator('[data-testid="stDataFrame"]').first
            expect(grid).to_be_visible()
            overflow = grid.evaluate(
                "g => Array.from(g.querySelectorAll('*')).some(e => e.scrollWidth > e.clientWidth + 2"
                " && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))"
            )
            shot(page, "e2e-13-runs-table")
            assert not overflow, "the Runs table is cut off: it scrolls sideways at 1400 px (see e2e-13-runs-table.png)"

            # The same photo uploaded twice on Predict (it happens): two results, not a crash.
            nav(page, "Predict")
            uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]').first
            uploader.set_input_files(str(photo))
            wait_idle(page)
            uploader.set_input_files([str(photo), str(train_dir / "ants" / "imageNotFound.gif")])
            wait_idle(page)
            no_app_error(page)
            expect(page.locator(".js-plotly-plot")).to_have_count(3, timeout=30_000)

            external = [e for e in events if e.startswith("request ") and not e.startswith(f"request {url}")]
            external = [e for e in external if not e.startswith(("request data:", "request blob:"))]
            assert not external, external  # nothing fetched from the internet (favicon included)
            favicon_errors = [e for e in events if e.startswith("console error") and "favicon" in e.lower()]
            assert not favicon_errors, favicon_errors
            context.close()


def test_building_classes_from_photos_empties_the_uploader_after_each_batch(server, browser, tmp_path):
    """Second walk: the uploader kept the last batch, so the next batch re-sent it, and a refused file
    stayed in every later batch."""
    from tests.helpers import make_colour_dataset

    url, _ = server
    photos = make_colour_dataset(tmp_path / "photos", per_class=3, classes=("red",))
    page = open_page(browser, url)
    nav(page, "Data")
    page.get_by_text("Build classes from photos", exact=True).click()
    wait_idle(page)
    page.get_by_label("New class name", exact=True).fill("red")
    page.get_by_label("New class name", exact=True).press("Enter")
    wait_idle(page)
    uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]').first
    uploader.set_input_files([str(p) for p in sorted((photos / "red").iterdir())[:2]])
    wait_idle(page)
    page.get_by_role("button", name="Add to class").click()
    wait_idle(page)
    expect(page.get_by_text("Added 2 photos to 'red'.")).to_be_visible()
    expect(page.locator('[data-testid="stFileChipName"]')).to_have_count(0)  # an empty uploader
    (tmp_path / "notes.png").write_text("not an image")
    uploader.set_input_files([str(sorted((photos / "red").iterdir())[2]), str(tmp_path / "notes.png")])
    wait_idle(page)
    page.get_by_role("button", name="Add to class").click()
    wait_idle(page)
    expect(page.get_by_text(re.compile(r"Not added .* notes\.png: not a readable image"))).to_be_visible()
    no_app_error(page)
