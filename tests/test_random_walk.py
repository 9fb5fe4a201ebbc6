"""A random walk through the dashboard: hypothesis drives real pages, invariants are checked after every step.

The other dashboard tests walk paths that were built to pass. Here a hypothesis
``RuleBasedStateMachine`` clicks through the Data, Model, Train, Runs and Text pages of
the real router (``app.py``, through ``streamlit.testing.v1.AppTest``) in random orders:
it switches backbones, weights and input sizes, uploads model files (a small one at 96 px
and the shared 160 px dog-breed MobileNetV2), changes the freeze plan, starts, stops and
waits for tiny training jobs, starts a GPT-2 fine-tune that fails fast, and works in two
tabs of one browser (two sessions with the same identity cookie). After every step, on
the tab that acted, it checks what a user would trust without thinking about it:

- no exception and no traceback on the page;
- the sidebar names what the page shows (dataset, backbone, the job on the Train page);
- every error that names a setting names a control that exists on this page (or names
  the page that has it): no dead end;
- the saved setup (``workspace/sessions/<owner>/setup.json``) is what the page shows, and
  a step that changes no setting (a page visit, a rerun, another tab opening) changes
  nothing in it: two tabs of one browser are one browser;
- an image page names the browser's latest image job (a job started in one tab is seen in
  the other) and never shows a text job or its error.

Reproducibility: ``derandomize=True`` seeds hypothesis from a hash of its own
state-machine runner, so with the pinned hypothesis and these rules every machine, CI
included, walks the same sequences; ``database=None`` replays no example saved by an
earlier run. On a failure hypothesis shrinks the walk and prints the failing steps as
code (``state = StudioWalk()``, ``state.choose_backbone(...)``, ...); ``replay`` runs such
a list again, as the two tests at the end do with the paths issue 20 reported.
Budget: about 1.5 CPU-minutes for this file (6 walks of up to 10 steps plus the two
replays). TensorFlow work is kept tiny: SmallCNN, random weights, one epoch, training only
from a cheap setup, the 22 MB dog-breed model file only in its replay.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
import streamlit as st
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from streamlit.runtime.context import ContextProxy
from streamlit.testing.v1 import AppTest

from tlcore import sessions

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 180  # the first page that imports TensorFlow takes a while
OWN = "Your own Keras model file…"
PAGES = {
    "Data": "pages/image/data.py",
    "Model": "pages/image/model.py",
    "Train": "pages/image/train.py",
    "Runs": "pages/image/runs.py",
    "Text": "pages/text/generate.py",
}
IMAGE_PAGES = ("Data", "Model", "Train", "Runs")
IMAGE_JOB_KINDS = ("train", "ab")
WIDGETS = (
    "button",
    "checkbox",
    "file_uploader",
    "multiselect",
    "number_input",
    "radio",
    "select_slider",
    "selectbox",
    "slider",
    "text_area",
    "text_input",
    "toggle",
)
TEXTS = ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader", "code", "text")

# A setting an error may name, the pattern of the control that sets it, and the pages that have one.
# An error that names a setting must leave the user a way to change it: the control on the same
# page, or the name of the page that has it.
SETTINGS = {
    "image size": (r"\b(image|input)[ _]size\b", r"^(image|input) size", ("Model",)),
    "preprocessing": (r"\bpreprocess(ing)?\b", r"preprocessing", ("Model",)),
    "cut layer": (r"\bcut[ _]layer\b", r"^cut the model", ("Model",)),
    "unfreeze from": (r"\bunfreeze[ _]from\b", r"^unfreeze from", ("Train", "Model")),
    "batch size": (r"\bbatch[ _]size\b", r"^batch size", ("Train", "Text")),
    "learning rate": (r"\blearning[ _]rate\b", r"learning rate", ("Train", "Text")),
}

# The settings a walk covers. Training is started only from a cheap setup (cheap_to_train).
BACKBONES = ("SmallCNN", "MobileNetV2", "VGG16")
SIZES = (96, 160, 224)
WALK_SETTINGS = settings(
    max_examples=6,
    stateful_step_count=10,
    deadline=None,  # a step loads TensorFlow models: seconds, and uneven on a shared machine
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def plain(markdown: str) -> str:
    """Text as a reader sees it: the pages escape Markdown characters in messages (``\\*`` shows ``*``)."""
    return re.sub(r"\\(.)", r"\1", str(markdown))


def page_texts(at: AppTest) -> list[str]:
    return [plain(element.value) for kind in TEXTS for element in at.get(kind) if isinstance(element.value, str)]


def labels(at: AppTest) -> list[str]:
    """Every widget label on the page (main area and sidebar)."""
    return [plain(widget.label) for kind in WIDGETS for widget in at.get(kind)]


def widget(at: AppTest, kind: str, label: str):
    """The first ``kind`` widget whose label starts with ``label``, else ``None``."""
    return next((w for w in at.get(kind) if plain(w.label).startswith(label)), None)


def offers(choice, value) -> bool:
    """Whether a radio or slider offers ``value`` (its options are the labels its format_func shows)."""
    return str(getattr(choice, "format_func", str)(value)) in choice.options


def sidebar(at: AppTest) -> dict[str, list[str]]:
    """``{"Dataset": [describe, summary], "Model": [...], "Job": [title, state]}`` as the sidebar reads."""
    lines = {}
    for element in at.sidebar.get("markdown"):
        found = re.match(r"\*\*(\w+)\*\* · (.*)", element.value, re.S)
        if found:
            lines[found.group(1)] = [plain(part).strip() for part in found.group(2).split("  \n")]
    return lines


def settings_of(setup: sessions.Setup) -> dict:
    """The setup's settings by name (``"model.image_size"``)."""
    values = setup.config.to_dict()
    return {f"{kind}.{name}": value for kind, fields in values.items() for name, value in fields.items()}


class Tab:
    """One browser tab: an AppTest session of the walk's browser (its cookie) on one page."""

    def __init__(self, name: str):
        self.name = name
        self.page = "Home"
        self.at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        self.at.run()

    def open(self, page: str) -> AppTest:
        if self.page != page:
            self.at.switch_page(PAGES[page])
            self.page = page
        self.at.run()
        return self.at


class StudioWalk(RuleBasedStateMachine):
    """Random sequences of a user's actions in one browser with up to two tabs."""

    env: dict = {}  # set by the test: folders, model files and the cookie switch

    def __init__(self):
        super().__init__()
        self.started = time.time()
        root = self.env["tmp"] / f"walk-{len(list(self.env['tmp'].glob('walk-*')))}"
        os.environ["TLCORE_WORKSPACE"] = str(root / "workspace")
        os.environ["TLCORE_RUNS_DIR"] = str(root / "runs")
        self.secret = sessions.new_secret()  # a new browser for every walk
        self.env["use_cookie"](self.secret)
        self.owner = sessions.owner_id(self.secret)
        self.tabs = [Tab("tab 1"), Tab("tab 2")]  # one browser, two tabs from the start
        self.acting = self.tabs[0]
        self.changes_nothing = True
        self.setup_before = self.saved_setup()

    # ------------------------------------------------------------------ plumbing

    def tab(self, index: int) -> Tab:
        self.acting = self.tabs[index % len(self.tabs)]
        return self.acting

    def saved_setup(self) -> sessions.Setup | None:
        from tlcore.paths import workspace_dir

        return sessions.SetupStore(workspace_dir() / "sessions").load(self.owner)

    def jobs(self) -> list:
        from ui import shared

        return shared.registry().for_owner(self.owner)

    def wait_for_jobs(self, tab: Tab, limit: float = 180) -> None:
        """Reruns ``tab`` (AppTest has no browser timer) until no job of this browser runs."""
        deadline = time.time() + limit
        while any(job.active for job in self.jobs()):
            assert time.time() < deadline, "a job of this walk did not end in time"
            time.sleep(0.5)
            tab.at.run()
            self.check_no_exception(tab)
        tab.at.run()

    def step(self, changes_setting: bool) -> None:
        """Called first by every rule: the invariants compare the setup before and after it."""
        self.changes_nothing = not changes_setting
        self.setup_before = self.saved_setup()

    def cheap_to_train(self, tab: Tab) -> bool:
        """Starts training only where it takes seconds (the tab's own setup is what Start trains)."""
        model = tab.at.session_state["model_config"] if "model_config" in tab.at.session_state else None
        if model is None:
            return False
        if model.is_model_file:
            return Path(model.backbone).name == self.env["small_model"].name
        small = model.backbone == "SmallCNN" and (model.image_size or 64) <= 96
        return small or model.weights == "imagenet"  # offline, ImageNet weights fail at once

    def teardown(self):
        for job in self.jobs():
            job.request_stop()
        for job in self.jobs():
            job.wait(60)
        print(f"walk of {len(self.tabs)} tab(s) took {time.time() - self.started:.1f} s")

    # ------------------------------------------------------------------ actions

    @rule(tab=hs.integers(0, 1), page=hs.sampled_from(list(PAGES)))
    def visit(self, tab, page):
        self.step(changes_setting=False)
        self.tab(tab).open(page)

    @rule(tab=hs.integers(0, 1))
    def rerun(self, tab):
        """Anything that reruns the page without changing a setting (an expander, a timer)."""
        self.step(changes_setting=False)
        self.tab(tab).at.run()

    @rule(tab=hs.integers(0, 1))
    def refresh(self, tab):
        """A reload: a new session of the same browser (its cookie) on the same page."""
        self.step(changes_setting=False)
        old = self.tab(tab)
        new = Tab(old.name)
        if old.page != "Home":
            new.open(old.page)
        self.tabs[self.tabs.index(old)] = self.acting = new

    @rule(tab=hs.integers(0, 1), name=hs.sampled_from(BACKBONES))
    def choose_backbone(self, tab, name):
        self.step(changes_setting=True)
        at = self.tab(tab).open("Model")
        widget(at, "selectbox", "Backbone").set_value(name).run()

    # Both ways: none -> ImageNet (offline: its error) -> none once made the weights radio and
    # the setup swap values on every rerun, a Model page that never finished (found by this walk).
    @rule(tab=hs.integers(0, 1), weights=hs.sampled_from(["none", "imagenet"]))
    def choose_weights(self, tab, weights):
        self.step(changes_setting=True)
        at = self.tab(tab).open("Model")
        radio = widget(at, "radio", "Weights")
        if radio is not None and offers(radio, weights):
            radio.set_value(weights).run()

    @rule(tab=hs.integers(0, 1), size=hs.sampled_from(SIZES))
    def choose_size(self, tab, size):
        self.step(changes_setting=True)
        at = self.tab(tab).open("Model")
        slider = widget(at, "select_slider", "Input size")
        if slider is not None and offers(slider, size):
            slider.set_value(size).run()

    @rule(tab=hs.integers(0, 1), which=hs.just("small_model"))  # the 22 MB dog model: test_the_newcomers_path
    def upload_model_file(self, tab, which):
        self.step(changes_setting=True)
        at = self.tab(tab).open("Model")
        widget(at, "selectbox", "Backbone").set_value(OWN).run()
        path = self.env[which]
        widget(at, "file_uploader", "Keras model file").set_value(
            (path.name, path.read_bytes(), "application/octet-stream")
        ).run()

    @rule(tab=hs.integers(0, 1), plan=hs.sampled_from(["Freeze all", "Unfreeze all", "Unfreeze from"]))
    def change_freeze_plan(self, tab, plan):
        self.step(changes_setting=True)
        at = self.tab(tab).open("Model")
        button = widget(at, "button", plan)
        if button is not None:
            button.click().run()

    @rule(tab=hs.integers(0, 1), dataset=hs.sampled_from(["demo", "colours"]))
    def choose_dataset(self, tab, dataset):
        self.step(changes_setting=True)
        at = self.tab(tab).open("Data")
        source = at.radio(key="source_kind")
        if dataset == "demo":
            source.set_value("Demo: shapes (offline)").run()
        else:
            source.set_value("Folder on this server").run()
            widget(at, "text_input", "Folder path").set_value(str(self.env["colours"])).run()

    @rule(tab=hs.integers(0, 1))
    def start_training(self, tab):
        self.step(changes_setting=True)  # the epochs are set here
        tab = self.tab(tab)
        at = tab.open("Train")
        if not self.cheap_to_train(tab):
            return
        widget(at, "number_input", "Epochs").set_value(1).run()
        widget(at, "number_input", "Fine-tune epochs").set_value(0).run()
        start = widget(at, "button", "Start training")
        if start is not None and not start.disabled:
            start.click().run()

    @rule(tab=hs.integers(0, 1))
    def stop_job(self, tab):
        self.step(changes_setting=False)
        tab = self.tab(tab)
        at = tab.open("Train")
        stop = widget(at, "button", "Stop")
        if stop is not None:
            stop.click().run()
            self.wait_for_jobs(tab)

    @rule(tab=hs.integers(0, 1))
    def wait_for_job(self, tab):
        self.step(changes_setting=False)
        self.wait_for_jobs(self.tab(tab))

    @rule(tab=hs.integers(0, 1))
    def start_text_job(self, tab):
        """A GPT-2 fine-tune from a preset folder that does not exist: the job fails at once."""
        self.step(changes_setting=False)
        tab = self.tab(tab)
        at = tab.open("Text")
        widget(at, "radio", "Model").set_value("Local preset folder").run()
        widget(at, "text_input", "Folder").set_value(str(self.env["missing_preset"])).run()
        widget(at, "text_area", "…or paste text").set_value("The cat sat on the mat. " * 8).run()
        widget(at, "number_input", "Epochs").set_value(1).run()
        start = widget(at, "button", "Start fine-tuning")
        if start is not None and not start.disabled:
            start.click().run()
            self.wait_for_jobs(tab, limit=30)

    # ------------------------------------------------------------------ invariants

    def check_no_exception(self, tab: Tab) -> None:
        at = tab.at
        assert not at.exception, f"{tab.name} on {tab.page}: " + "\n".join(e.value for e in at.exception)
        shown = "\n".join(page_texts(at))
        assert "Traceback (most recent call last)" not in shown, f"{tab.name} on {tab.page} shows a traceback"

    @invariant()
    def no_exception(self):
        self.check_no_exception(self.acting)

    @invariant()
    def sidebar_names_what_the_page_shows(self):
        tab = self.acting
        at, bar = tab.at, sidebar(tab.at)
        assert set(bar) >= {"Dataset", "Model", "Job"}, f"{tab.name} on {tab.page}: sidebar {bar}"
        model_line, data_line = bar["Model"][0], bar["Dataset"][0]
        if tab.page == "Model":
            choice = widget(at, "selectbox", "Backbone").value
            using = [c.value for c in at.caption if c.value.startswith("Using your model file")]
            if choice == OWN and using:
                name = plain(re.search(r"\*\*(.+)\*\*", using[0]).group(1))
                assert model_line.startswith(f"your model file {name}"), (tab.page, choice, name, model_line)
            elif choice != OWN:
                assert model_line.startswith(f"{choice},"), (tab.name, tab.page, choice, model_line)
                weights = widget(at, "radio", "Weights")
                if weights is not None:
                    words = {"imagenet": "ImageNet weights", "none": "random weights"}.get(weights.value)
                    assert words is None or words in model_line, (tab.name, weights.value, model_line)
        if tab.page == "Train":
            caption = next((c.value for c in at.caption if c.value.startswith("Dataset: ")), "")
            found = re.match(r"Dataset: \*\*(.*?)\*\* · backbone: \*\*(.*?)\*\* ·", caption)
            assert found, f"{tab.name}: the Train page no longer says what it trains: {caption!r}"
            assert (plain(found.group(1)), plain(found.group(2))) == (data_line, model_line), (
                tab.name,
                caption,
                bar,
            )
        if tab.page == "Data" and at.success and bar["Dataset"][1:]:  # the sidebar may not know the counts yet
            measured = re.match(r"Current dataset: (.*)\.$", plain(at.success[0].value))
            assert measured and bar["Dataset"][1:] == [measured.group(1)], (tab.name, at.success[0].value, bar)

    @invariant()
    def every_error_names_a_control_that_exists(self):
        tab = self.acting
        present = labels(tab.at)
        for error in (plain(e.value) for e in tab.at.error):
            for setting, (said, control, pages) in SETTINGS.items():
                if not re.search(said, error, re.I):
                    continue
                here = any(re.search(control, label, re.I) for label in present)
                elsewhere = any(f"{page} page" in error for page in pages if page != tab.page)
                assert here or elsewhere, (
                    f"{tab.name} on the {tab.page} page: the error names the {setting} but this page has no "
                    f"control for it and names no page that has one (a dead end).\n  error: {error}\n"
                    f"  controls here: {present}"
                )

    @invariant()
    def saved_setup_is_what_the_page_shows(self):
        from tlcore.model.choices import describe_backbone

        tab, saved = self.acting, self.saved_setup()
        assert saved is not None, "no setup saved for this browser"
        bar = sidebar(tab.at)
        assert bar["Model"][0] == describe_backbone(saved.config.model), (tab.name, tab.page, bar["Model"])
        assert bar["Dataset"][0] == saved.config.data.describe(), (tab.name, tab.page, bar["Dataset"])
        at = tab.at
        if tab.page == "Model":
            size = widget(at, "select_slider", "Input size")
            if size is not None and saved.config.model.image_size is not None:  # None: the model's own
                assert int(size.value) == saved.config.model.image_size, (tab.name, size.value, saved.config.model)
        if tab.page == "Train":
            epochs = widget(at, "number_input", "Epochs")
            assert epochs.value == saved.config.train.epochs, (tab.name, epochs.value, saved.config.train)
        if self.changes_nothing and self.setup_before is not None:
            before, after = settings_of(self.setup_before), settings_of(saved)
            # A setting left empty (None: "the default") that a page fills in with that default is no change.
            changed = {key: (before[key], after[key]) for key in before if before[key] not in (None, after[key])}
            assert not changed, (
                f"{tab.name} changed no setting ({tab.page} page) yet the saved setup changed "
                f"(before, after): {json.dumps(changed, default=str)}"
            )

    @invariant()
    def image_pages_show_the_latest_image_job(self):
        tab = self.acting
        if tab.page not in IMAGE_PAGES:
            return
        jobs = self.jobs()
        image_jobs = [job for job in jobs if job.kind in IMAGE_JOB_KINDS]
        line = sidebar(tab.at)["Job"]
        latest = image_jobs[-1] if image_jobs else None
        expected = latest.title if latest else "none yet"
        assert line[0] == expected, (
            f"{tab.name} on the {tab.page} page: the sidebar's job is {line}; this browser's latest image "
            f"job is {expected!r} (jobs, oldest first: {[(job.kind, job.title, job.status) for job in jobs]})"
        )
        linked = tab.at.query_params.get("job")
        if latest is not None and linked:
            assert linked == latest.job_id, (
                f"{tab.name} on the {tab.page} page shows job {linked}, not the latest ({latest.job_id})"
            )
        shown = "\n".join(page_texts(tab.at))
        for job in jobs:
            if job.kind not in IMAGE_JOB_KINDS and job.error:
                assert plain(job.error) not in shown, f"{tab.name} on the {tab.page} page shows a text job's error"


@pytest.fixture(scope="module")
def walk_cache(tmp_path_factory):
    """One feature cache for this module's tests: the demo dataset is generated once, not per test."""
    return tmp_path_factory.mktemp("walk-cache")


@pytest.fixture
def walk_env(tmp_path, monkeypatch, colour_dataset, dog_model, walk_cache):
    """Folders, model files and an offline network for the walk; the cookie is set per walk."""
    from tlcore.model.backbones import build_small_cnn

    monkeypatch.setenv("TLCORE_CACHE_DIR", str(walk_cache))
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(Path(colour_dataset).parent))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))  # no ImageNet weights cached
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TLCORE_RUNS_DIR", str(tmp_path / "runs"))
    # Offline, and fast about it: ImageNet downloads fail at once with the studio's offline message.
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-3, "offline")))
    monkeypatch.chdir(ROOT)
    small_model = tmp_path / "small_net_96.keras"
    build_small_cnn(input_shape=(96, 96, 3)).save(small_model)
    cookie = {}
    monkeypatch.setattr(ContextProxy, "cookies", property(lambda self: {sessions.COOKIE_NAME: cookie["secret"]}))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield {
        "tmp": tmp_path,
        "colours": Path(colour_dataset),
        "small_model": small_model,
        "dog_model": Path(dog_model),
        "missing_preset": tmp_path / "no-such-gpt2-preset",
        "use_cookie": lambda secret: cookie.__setitem__("secret", secret),
    }
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.mark.real_assets
def test_random_walks_through_the_studio_keep_its_invariants(walk_env):
    StudioWalk.env = walk_env
    started = time.time()
    try:
        run_state_machine_as_test(StudioWalk, settings=WALK_SETTINGS)
    finally:
        StudioWalk.env = {}
        print(f"random walk: {time.time() - started:.0f} s")


INVARIANTS = [name for name, value in vars(StudioWalk).items() if hasattr(value, "hypothesis_stateful_invariant")]


def replay(env: dict, steps: list[tuple[str, dict]]) -> None:
    """Runs ``steps`` (rule name, arguments) as hypothesis would, every invariant after each, in ``env``."""
    StudioWalk.env = env
    try:
        walk = StudioWalk()
        try:
            for name, arguments in steps:
                getattr(walk, name)(**arguments)
                for check in INVARIANTS:
                    getattr(walk, check)()
        finally:
            walk.teardown()
    finally:
        StudioWalk.env = {}


@pytest.mark.real_assets
def test_the_newcomers_path_vgg16_then_the_dog_model_file(walk_env):
    """Issue 20's walk: VGG16 (224 px) with random weights, then the shared 160 px dog-breed model file."""
    replay(
        walk_env,
        [
            ("choose_backbone", {"tab": 0, "name": "VGG16"}),
            ("choose_weights", {"tab": 0, "weights": "none"}),
            ("upload_model_file", {"tab": 0, "which": "dog_model"}),
            ("change_freeze_plan", {"tab": 0, "plan": "Unfreeze all"}),
            ("visit", {"tab": 1, "page": "Train"}),
        ],
    )


@pytest.mark.real_assets
def test_two_tabs_of_one_browser_see_one_setup_and_one_latest_job(walk_env):
    """Issue 20's two tabs: a run started in one tab shows in the other; a stale tab overwrites nothing."""
    replay(
        walk_env,
        [
            ("choose_backbone", {"tab": 0, "name": "SmallCNN"}),
            ("choose_size", {"tab": 0, "size": 96}),
            ("refresh", {"tab": 1}),  # tab 2 now shows what tab 1 chose
            ("start_training", {"tab": 0}),
            ("wait_for_job", {"tab": 0}),
            ("start_training", {"tab": 1}),
            ("wait_for_job", {"tab": 1}),
            ("visit", {"tab": 0, "page": "Train"}),  # tab 1 must show tab 2's run
            ("choose_weights", {"tab": 1, "weights": "none"}),
            ("choose_backbone", {"tab": 1, "name": "MobileNetV2"}),
            ("visit", {"tab": 0, "page": "Runs"}),  # tab 1 must not write SmallCNN back
        ],
    )
