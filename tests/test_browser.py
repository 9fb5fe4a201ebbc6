"""End to end in a real headless Chromium against `streamlit run app.py`."""

import re

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser import CHROMIUM_ARGS, require_chromium, shot, streamlit_server, wait_idle

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
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
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
    expect(page.get_by_text("Current dataset: 600 images in 3 classes")).to_be_visible()
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

    nav(page, "Predict")
    import random

    from tlcore.data import draw_shape

    image = tmp_path / "my triangle.png"
    draw_shape("triangle", 96, random.Random(7)).save(image)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(image))
    wait_idle(page)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.wait_for_function("() => document.querySelector('.js-plotly-plot')._fullData")
    bars = [t for chart in plotly_traces(page) for t in chart]
    assert bars and set(bars[0]["y"]) <= {"circle", "square", "triangle"} and len(bars[0]["y"]) == 3
    shot(page, "06-predict")

    nav(page, "Runs")
    expect(page.get_by_text("Compare runs")).to_be_visible()
    shot(page, "07-runs")
    page.close()


def test_leaving_the_train_page_and_coming_back_keeps_the_job_and_chart(server, browser):
    url, _ = server
    page = open_page(browser, url)
    nav(page, "Model")
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="SmallCNN").click()  # the offline recipe: trains from scratch in seconds
    expect(page.get_by_text("Trainable parameters")).to_be_visible()
    wait_idle(page)
    nav(page, "Train")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("3")
    epochs.press("Tab")
    page.get_by_role("button", name="Start training").click()
    expect(
        page.get_by_text(re.compile(r"head · epoch|Computing backbone features|loading data|building model"))
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


def start_small_cnn_training(browser, url, epochs):
    page = open_page(browser, url)
    nav(page, "Model")
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="SmallCNN").click()
    expect(page.get_by_text("Trainable parameters")).to_be_visible()
    wait_idle(page)
    nav(page, "Train")
    field = page.get_by_label("Epochs", exact=True)
    field.fill(str(epochs))
    field.press("Tab")
    page.get_by_role("button", name="Start training").click()
    return page


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
        nav(other, "Train")
        other.get_by_role("button", name="Start training").click()
        expect(other.get_by_text(re.compile("The studio is busy: 1 training job is running"))).to_be_visible()
        shot(other, "09-busy")
        first.get_by_role("button", name="Stop").click()
        expect(first.get_by_text(re.compile("Stopped: validation accuracy"))).to_be_visible(timeout=120_000)
        first.close()
        context.close()


def test_killing_the_server_mid_run_leaves_runs_readable_after_a_restart(tmp_path, browser):
    import signal

    from tlcore.runs import RunStore

    with streamlit_server(tmp_path) as (url, process):
        page = start_small_cnn_training(browser, url, 200)
        expect(page.get_by_role("button", name="Stop")).to_be_visible()
        page.wait_for_timeout(1500)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=20)
        page.close()
    runs = RunStore(tmp_path / "runs").list()
    assert [run.status for run in runs] == ["incomplete"]
    with streamlit_server(tmp_path) as (url, _):
        page = open_page(browser, url)
        nav(page, "Runs")
        expect(page.get_by_text("'incomplete' runs were interrupted")).to_be_visible()
        assert page.locator('[data-testid="stException"]').count() == 0
        shot(page, "10-runs-after-restart")
        page.close()
