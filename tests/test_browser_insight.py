"""Suspect labels in a real browser: find planted flips → exclude / relabel → refresh → retrain.

A copy of the real ants/bees training photos gets 6 ants moved into bees/ and 6 bees
moved into ants/ (flipped labels). A newcomer finds them on the Data page, excludes one,
relabels another, refreshes the page, trains the head again and sees one training image
fewer, while the photo folders stay byte for byte what they were.
"""

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import shot, shot_on_failure, wait_idle
from tests.test_browser import (
    browser,  # noqa: F401  (the suite's Chromium, a fixture)
    choose_dog_model,
    hymenoptera_server,
    nav,
    new_context_page,
    no_app_error,
    set_number,
    type_path,
)

pytestmark = [pytest.mark.browser, pytest.mark.real_assets]

FLIPS_PER_CLASS = 6
CARD = re.compile(r"^(\S+) \((train|val)\)\s*\n\s*given (\S+) · suggested (\S+) · suspicion ([\d.]+)", re.M)


def plant_flips(source: Path, target: Path, seed: int = 0) -> dict[str, tuple[str, str]]:
    """Copies ``source`` (ants/, bees/) to ``target`` and moves photos into the other class.

    Returns:
        file name → (the class it is in now, the class it really shows).
    """
    shutil.copytree(source, target)
    rng = random.Random(seed)
    photos = {label: sorted(p for p in (target / label).iterdir() if p.suffix == ".jpg") for label in ("ants", "bees")}
    picks = {label: rng.sample(paths, FLIPS_PER_CLASS) for label, paths in photos.items()}  # before any move
    flipped = {}
    for truth, wrong in (("ants", "bees"), ("bees", "ants")):
        for path in picks[truth]:
            moved = target / wrong / path.name
            assert not moved.exists(), moved  # no name is in both classes: nothing is overwritten
            shutil.move(path, moved)
            flipped[path.name] = (wrong, truth)
    return flipped


def digests(*folders: Path) -> dict[str, str]:
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc; psutil is not a dependency)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def kill_leftovers(pids: list[int]) -> list[int]:
    """SIGKILLs those of ``pids`` still running the studio (a worker forked by the server, stuck); returns them."""
    killed = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"streamlit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def choose_folders(page, train_dir: Path, val_dir: Path) -> None:
    """Data page: "Folder on this server" with a separate validation folder (choose_hymenoptera, any folders)."""
    nav(page, "Data")
    page.get_by_text("Folder on this server", exact=True).click()
    wait_idle(page)
    type_path(page, "Folder path", train_dir)
    page.get_by_text("I have a separate validation folder", exact=True).click()
    wait_idle(page)
    type_path(page, "Validation folder path", val_dir)


def open_label_check(page):
    """Opens the Data page's "Check the labels" expander and returns it."""
    section = page.locator('[data-testid="stExpander"]').filter(has_text="Check the labels")
    if not section.locator('[data-testid="stExpanderDetails"]').is_visible():
        section.locator("summary").click()
    expect(section.get_by_role("button", name="Find suspect labels")).to_be_visible()
    return section


def suspect_cards(section) -> list[tuple[str, str, str, str]]:
    """(file name, split, given, suggested) of every suspect card, in page order."""
    return [match[:4] for match in CARD.findall(section.inner_text())]


def decisions_line(section, count: int):
    """The "Your label decisions (count) · images left: …" line above the suspects."""
    return section.locator('[data-testid="stMarkdownContainer"]').filter(has_text=f"Your label decisions ({count})")


def card_caption(section, name: str):
    return section.get_by_text(f"{name} (train)")


def card_button(section, name: str, kind: str):
    """The ``kind`` button ("exclude", "relabel", "undo") on the card of ``name``: the first one after its caption."""
    after = card_caption(section, name).locator(f"xpath=following::div[contains(@class, 'st-key-{kind}_')][1]")
    return after.get_by_role("button")


def card_state(section, name: str):
    """The caption under the card's own caption: "✓ excluded" / "✓ relabelled → …" once decided."""
    return card_caption(section, name).locator("xpath=following::*[@data-testid='stCaptionContainer'][1]")


def test_suspect_labels_exclude_relabel_survive_a_refresh_and_the_next_training_uses_them(
    browser,  # noqa: F811  (the fixture imported above)
    hymenoptera,
    dog_model,
    tmp_path,
):
    started = time.time()
    train_dir, val_dir = tmp_path / "photos" / "train", hymenoptera / "val"
    flipped = plant_flips(hymenoptera / "train", train_dir)
    before = digests(train_dir, val_dir)
    assert len(flipped) == 2 * FLIPS_PER_CLASS

    children = []
    try:
        with hymenoptera_server(tmp_path, hymenoptera) as (url, server):  # data roots: ../shared and tmp_path
            context, page = new_context_page(browser)
            try:
                with shot_on_failure(page, "insight"):
                    page.goto(url)
                    expect(page.locator("h1").first).to_be_visible()
                    set_up(page, train_dir, val_dir, dog_model)
                    decisions = find_and_decide(page, flipped)
                    refresh_keeps_the_decisions(page, decisions)
                    retrain_on_one_image_fewer(page, tmp_path / "runs")
            finally:
                children = child_pids(server.pid)
                context.close()
    finally:
        stuck = kill_leftovers(children)  # the server has stopped: whatever it forked should have too
    assert not stuck, f"processes forked by the server outlived it (killed): {stuck}"
    assert digests(train_dir, val_dir) == before  # nothing moved, renamed or rewritten
    print(f"walk took {time.time() - started:.0f} s")


def set_up(page, train_dir: Path, val_dir: Path, dog_model: Path) -> None:
    """Data: the planted copy + the shared validation folder; Model: the shared dog-breed model file."""
    choose_folders(page, train_dir, val_dir)
    expect(page.get_by_text("Current dataset: 397 images · 2 classes.")).to_be_visible()
    metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert metrics[:6] == ["244", "2", "1", "153", "2", "0"], metrics  # the flips only moved photos
    choose_dog_model(page, dog_model)
    expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("dog_breed_mobilenetv2_160.h5")
    no_app_error(page)


def find_and_decide(page, flipped: dict) -> list[str]:
    """Data → "Check the labels" → Find suspect labels; excludes one planted flip, relabels another.

    Returns:
        The two decisions as the list above the suspects words them.
    """
    nav(page, "Data")
    section = open_label_check(page)
    section.get_by_role("button", name="Find suspect labels").click()
    result = section.get_by_text(re.compile(r"\d+ suspect labels among 397 images"))
    hung = "no suspects after 5 min (features + 5-fold heads take ~15 s): is 'Cross-validating heads…' stuck?"
    expect(result, hung).to_be_visible(timeout=300_000)
    wait_idle(page, timeout=300)
    no_app_error(page)
    shot(page, "insight-01-suspects")
    cards = suspect_cards(section)
    found = [card for card in cards if card[0] in flipped and card[1] == "train"]
    missed = sorted(set(flipped) - {card[0] for card in found})
    total = section.get_by_text(re.compile(r"suspect labels among")).inner_text()
    print(f"{total} {len(cards)} shown; planted flips among them: {len(found)}/{len(flipped)}, missed {missed}")
    # Measured: 12/12 planted flips among the 24 cards shown (27 flagged) in 7 runs; 11/12 once (31 flagged).
    assert len(found) >= 10, (found, cards)
    for name, _, given, suggested in found:
        assert (given, suggested) == flipped[name], name  # given the planted label, suggested the true one

    excluded, relabelled = found[0][0], found[1][0]
    true_class = flipped[relabelled][1]
    decisions = [f"{excluded}: excluded", f"{relabelled}: relabelled → {true_class}"]
    card_button(section, excluded, "exclude").click()
    wait_idle(page)
    expect(card_state(section, excluded)).to_contain_text("excluded")
    expect(decisions_line(section, 1)).to_contain_text("243 of 244 in train")  # at once, not one click behind
    relabel = card_button(section, relabelled, "relabel")
    expect(relabel).to_have_text(f"Relabel as {true_class}")  # the card offers the true class
    relabel.click()
    wait_idle(page)
    expect(card_state(section, relabelled)).to_contain_text(f"relabelled → {true_class}")
    expect(card_state(section, excluded)).to_contain_text("excluded")
    expect(decisions_line(section, 2)).to_contain_text("243 of 244 in train · 153 of 153 in val")
    for decision in decisions:
        expect(section.get_by_text(decision, exact=True)).to_be_visible()
    no_app_error(page)
    shot(page, "insight-02-decided")
    return decisions


def refresh_keeps_the_decisions(page, decisions: list[str]) -> None:
    """A refresh starts a new browser session: the decisions live in the workspace and are still listed."""
    page.reload()
    expect(page.locator("h1").first).to_have_text("Data")
    wait_idle(page)
    section = open_label_check(page)
    expect(decisions_line(section, 2)).to_contain_text("243 of 244 in train · 153 of 153 in val")
    for decision in decisions:
        expect(section.get_by_text(decision, exact=True)).to_be_visible()
    # what training will use, said at once (the files on disk are still 397)
    expect(
        page.get_by_text("Current dataset: 396 images · 2 classes (1 excluded by your label decisions).")
    ).to_be_visible()
    metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert metrics[:6] == ["243", "2", "1", "153", "2", "0"], metrics  # the set metrics agree with that line
    no_app_error(page)
    shot(page, "insight-03-after-refresh")


def retrain_on_one_image_fewer(page, runs: Path) -> None:
    """Train: the head only, 3 epochs on cached features; the run says 243 training images, not 244."""
    nav(page, "Train")
    set_number(page, "Epochs", 3)
    set_number(page, "Fine-tune epochs (0 = skip)", 0)
    expect(page.locator('[data-testid="stTable"]').first).to_contain_text("2,562")  # only the head trains
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text(re.compile(r"Finished: validation accuracy"))).to_be_visible(timeout=600_000)
    wait_idle(page)
    no_app_error(page)
    shot(page, "insight-04-trained")
    (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert (saved["num_train"], saved["num_val"]) == (243, 153), saved  # 244 before the exclusion
    nav(page, "Runs")
    compared = page.locator('[data-testid="stDataFrame"]').nth(1)
    expect(compared).to_be_visible()
    no_app_error(page)
    shot(page, "insight-05-runs")
    # The grid draws on a canvas; its hidden accessibility table holds the same cells.
    row = compared.locator('tr[role="row"]').filter(has=page.get_by_text("num_train", exact=True))
    expect(row.locator('td[aria-colindex="2"]')).to_have_text("243")
