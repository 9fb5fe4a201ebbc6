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
    before = metric.inner_text()
    page.get_by_role("button", name="Unfreeze from block_16").click()
    wait_idle(page)
    expect(metric).not_to_have_text(before)
    page.get_by_role("button", name="Freeze all", exact=True).click()
    wait_idle(page)
    expect(metric).to_have_text(before)
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
    from tlcore.data import draw_shape

    import random

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
    page.get_by_text("none (random: trains from scratch)").click()
    wait_idle(page)
    nav(page, "Train")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("3")
    epochs.press("Tab")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text(re.compile(r"head · epoch|Computing backbone features|loading data|building model"))).to_be_visible()
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
