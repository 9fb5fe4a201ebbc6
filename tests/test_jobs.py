import gc
import os
import threading
import time
import weakref

import pytest

from tlcore.errors import JobBusyError, StudioError
from tlcore.jobs import JobRegistry, max_jobs_from_env


def wait(job, timeout=10):
    deadline = time.time() + timeout
    while job.active and time.time() < deadline:
        time.sleep(0.01)
    return job


def blocking_target(release):
    def target(job):
        job.log.append("batch", step=1)
        while not release.is_set() and not job.stop.is_set():
            time.sleep(0.01)
        return "finished"

    return target


def test_sessions_are_independent_and_the_process_cap_says_busy():
    registry = JobRegistry(max_concurrent=2)
    release = threading.Event()
    first = registry.start("alice", "train", "a", blocking_target(release))
    second = registry.start("bob", "train", "b", blocking_target(release))
    with pytest.raises(JobBusyError, match="busy.*Try again"):
        registry.start("carol", "train", "c", blocking_target(release))
    with pytest.raises(JobBusyError, match="already have a job running"):
        registry.start("alice", "train", "again", blocking_target(release))
    assert [j.job_id for j in registry.for_owner("alice")] == [first.job_id]
    assert first.log is not second.log
    release.set()
    assert wait(first).status == "done" and first.result == "finished"
    wait(second)
    third = registry.start("carol", "train", "c", blocking_target(threading.Event()))
    third.request_stop()
    assert wait(third).status == "stopped"


def test_the_busy_message_counts_in_plain_english():
    registry = JobRegistry(max_concurrent=1)
    release = threading.Event()
    registry.start("alice", "train", "a", blocking_target(release))
    with pytest.raises(JobBusyError, match=r"busy: 1 job is running \(trainings, analyses, exports; the limit is 1\)"):
        registry.start("bob", "train", "b", blocking_target(release))
    release.set()


@pytest.mark.parametrize(
    "value, expected",
    [(None, 2), ("", 2), ("1", 1), (" 4 ", 4), ("0", None), ("-3", None), ("two", None), ("1.5", None)],
)
def test_the_job_cap_comes_from_the_environment_or_says_what_is_wrong(value, expected):
    environ = {} if value is None else {"TLCORE_MAX_JOBS": value}
    if expected is None:
        with pytest.raises(StudioError, match=f"TLCORE_MAX_JOBS should be a whole number.*received {value!r}"):
            max_jobs_from_env(environ)
    else:
        assert max_jobs_from_env(environ) == expected


def test_a_failing_job_keeps_its_message_and_the_registry_keeps_working():
    registry = JobRegistry()

    def bad_input(job):
        raise StudioError("Dataset not found: /x. Expected a folder.")

    def bug(job):
        raise KeyError("oops")

    failed = wait(registry.start("a", "train", "t", bad_input))
    assert failed.status == "failed" and failed.error.startswith("Dataset not found")
    assert failed.log.last("traceback") is None  # the user's to fix: no traceback
    crashed = wait(registry.start("a", "train", "t", bug))
    assert crashed.status == "failed" and "Unexpected KeyError" in crashed.error
    assert crashed.log.last("traceback") is not None  # kept for the logs, never shown as the message
    assert wait(registry.start("a", "train", "t", lambda job: 42)).result == 42


def test_a_bug_is_worded_one_way_by_both_runners_and_the_cli(monkeypatch, capsys, tmp_path):
    """One owner for the failure path: the thread runner, the Ray worker's host and the CLI say the same."""
    from tlcore.cli import main as cli
    from tlcore.runners.host import JobHost

    def bug(*args):
        raise KeyError("oops")

    worded = "Unexpected KeyError: 'oops'. Please report this."
    assert wait(JobRegistry().start("a", "train", "t", bug)).error == worded
    hosted = JobHost({"job_id": "j", "owner": "a", "kind": "train", "title": "t"}, {}, os.getcwd()).run(bug)
    assert hosted["message"] == worded and "KeyError" in hosted["traceback"]
    monkeypatch.setitem(cli.COMMANDS, "inspect", bug)
    assert cli.main(["inspect", "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {worded}"


def test_wait_returns_when_the_job_ends_or_the_time_is_up():
    registry = JobRegistry()
    release = threading.Event()
    slow = registry.start("alice", "train", "slow", blocking_target(release))
    assert slow.wait(0.05) is False and slow.active
    release.set()
    assert slow.wait(10) is True and slow.status == "done"
    quick = registry.start("alice", "train", "quick", lambda job: "ok")
    assert quick.wait(10) is True and quick.result == "ok"


# ----------------------------------------------------------------------------- memory (issue 21)


def test_a_finished_training_job_keeps_its_summary_not_its_model(colour_dataset, tmp_path, monkeypatch):
    """A server that kept every trained model grew ~34 MB per training, for good."""
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlcore.runs.store import RunStore, read_run
    from tlcore.training import launch

    trained = []
    real_train_run = launch.train_run

    def watched_train_run(*args, **kwargs):
        result = real_train_run(*args, **kwargs)
        trained.append(weakref.ref(result.model))
        return result

    monkeypatch.setattr(launch, "train_run", watched_train_run)
    config = RunConfig(
        DataConfig(str(colour_dataset), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(epochs=1, batch_size=8),
    )
    job = launch.start_training(JobRegistry(), "alice", config, RunStore(tmp_path / "runs"))
    assert job.wait(300) and job.status == "done", job.error
    gc.collect()
    assert trained and trained[0]() is None, "the finished job still holds the trained model"
    assert "val_accuracy" in job.result.metrics  # what the Train page shows is still there
    assert read_run(job.run_dir).has_model  # and the model is in the run folder


def test_finished_jobs_are_bounded_but_each_visitors_latest_is_kept():
    registry = JobRegistry(keep_per_owner=2, keep_finished=3)
    bobs = wait(registry.start("bob", "train", "bob's only training", lambda job: "bob"))
    for index in range(8):
        wait(registry.start("alice", "analysis", f"analysis {index}", lambda job: "x" * 1000))
    alices = registry.for_owner("alice")
    assert [job.title for job in alices] == ["analysis 6", "analysis 7"]  # her last two
    assert registry.get(bobs.job_id) is bobs  # bob's refresh still finds his job
    for owner in "cdefgh":
        wait(registry.start(owner, "train", "t", lambda job: 1))
    assert len(registry._jobs) <= 3 + 8  # the overall bound, plus each visitor's latest
    assert registry.get(bobs.job_id) is bobs


def test_for_owner_can_leave_out_background_kinds():
    registry = JobRegistry()
    training = wait(registry.start("alice", "train", "t", lambda job: 1))
    wait(registry.start("alice", "analysis", "a", lambda job: 2))
    assert registry.for_owner("alice", kinds=("train",)) == [training]


# ----------------------------------------------------------------------------- every heavy piece of work is a job

RELEASE = threading.Event()  # the probe analysis below runs until the test sets it


def analysis_script(data_dir: str, owner: str):
    import threading

    import streamlit as st

    from tests.test_jobs import RELEASE
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from ui.insight import common as insight_common

    st.session_state.setdefault("session_id", owner)  # two browser tabs of one visitor share their identity
    config = RunConfig(
        DataConfig(data_dir, val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(epochs=1, batch_size=8),
    )

    def compute(found):
        RELEASE.wait(120)
        return f"{len(found.train_x)} images analysed in {threading.current_thread().name}"

    result = insight_common.analysis("probe", config, "Analyse", "Analysing the probe…", compute, key="probe")
    if result is not None:
        st.write(result)


def _studio(monkeypatch, tmp_path, cap: int):
    import streamlit as st

    monkeypatch.setenv("TLCORE_MAX_JOBS", str(cap))
    monkeypatch.setenv("TLCORE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TLCORE_DATA_ROOTS", str(tmp_path.parent))
    st.cache_resource.clear()  # a fresh job registry for this test
    RELEASE.clear()


def _session(colour_dataset, owner: str):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_function(analysis_script, args=(str(colour_dataset), owner), default_timeout=180).run()


def _wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline:
        time.sleep(0.1)
    return predicate()


def test_an_analysis_is_a_job_one_at_a_time_per_visitor(colour_dataset, tmp_path, monkeypatch):
    from ui import shared

    _studio(monkeypatch, tmp_path, cap=2)
    first_tab, second_tab = _session(colour_dataset, "alice"), _session(colour_dataset, "alice")
    clicking = threading.Thread(target=lambda: first_tab.button(key="probe").click().run())
    clicking.start()
    registry = shared.registry()
    assert _wait_for(lambda: any(job.active for job in registry.for_owner("alice")))
    (job,) = registry.for_owner("alice")
    assert job.kind == "analysis" and job.thread.name.startswith("job-")  # in the registry, not the page's thread
    second_tab.button(key="probe").click().run()
    assert not second_tab.exception
    assert "You already have a job running (Analysing the probe)" in " ".join(e.value for e in second_tab.error)
    RELEASE.set()
    clicking.join(120)
    assert job.status == "done"
    assert any("27 images analysed in job-" in m.value for m in first_tab.markdown)  # the tab that started it


def test_an_analysis_finished_after_a_reload_shows_its_result_there(colour_dataset, tmp_path, monkeypatch):
    """The newcomer's walk: the page was reloaded while "Find duplicates" ran, and its result was lost.

    The job is started as the section starts it (slot and all) and ends with no page
    following it, as after a reload; a new session of the same browser must show it, once.
    """
    from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tlcore.insight.feature_set import features_key
    from ui import shared

    _studio(monkeypatch, tmp_path, cap=2)
    config = RunConfig(
        DataConfig(str(colour_dataset), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32),
        TrainConfig(epochs=1, batch_size=8),
    )
    registry = shared.registry()
    job = registry.start(
        "alice", "analysis", "Analysing the probe", lambda job: (features_key(config), "done while away")
    )
    job.slot = "analysis_probe"
    assert _wait_for(lambda: job.status == "done")
    assert not any("done while away" in m.value for m in _session(colour_dataset, "bob").markdown)
    reloaded = _session(colour_dataset, "alice")  # a new session of the same browser
    assert any("done while away" in m.value for m in reloaded.markdown)
    again = _session(colour_dataset, "alice")  # shown once: the next new session starts clean
    assert not any("done while away" in m.value for m in again.markdown)


def test_an_analysis_counts_against_the_studio_cap(colour_dataset, tmp_path, monkeypatch):
    from ui import shared

    _studio(monkeypatch, tmp_path, cap=1)
    registry = shared.registry()
    held = threading.Event()
    bobs = registry.start("bob", "train", "bob's training", blocking_target(held))
    tab = _session(colour_dataset, "alice")
    tab.button(key="probe").click().run()
    assert "The studio is busy: 1 job is running" in " ".join(e.value for e in tab.error)
    assert registry.for_owner("alice") == []
    held.set()
    assert wait(bobs).status == "done"
    RELEASE.set()
    tab.button(key="probe").click().run()  # the cap is free again: alice's analysis runs
    assert not tab.error and any("images analysed" in m.value for m in tab.markdown)
    with pytest.raises(JobBusyError, match="busy"):  # and while one runs, it holds the cap like a training
        RELEASE.clear()
        second = threading.Thread(target=lambda: tab.button(key="probe").click().run())
        second.start()
        assert _wait_for(lambda: any(job.active for job in registry.for_owner("alice")))
        try:
            registry.start("bob", "train", "again", blocking_target(held))
        finally:
            RELEASE.set()
            second.join(120)


def test_the_busy_message_is_the_one_docs_limits_shows():
    from tests.test_data import documented_message

    registry = JobRegistry(max_concurrent=2)
    release = threading.Event()
    for owner in ("alice", "bob"):
        registry.start(owner, "analysis", "a", blocking_target(release))
    with pytest.raises(JobBusyError) as caught:
        registry.start("carol", "export", "e", blocking_target(release))
    release.set()
    limit = (
        "concurrent jobs (whole server): trainings, sweeps, learning-rate finders, analyses (suspect labels, "
        "learning curve, feature map), exports, GPT-2 generation and fine-tuning"
    )
    assert str(caught.value) == documented_message(limit)


def sweep_script(data_dir: str):
    import streamlit as st

    from tlcore.config import DataConfig, FreezePlan, ModelConfig, TrainConfig
    from ui.sweep_section import sweep_section

    st.session_state.setdefault("session_id", "sweeper")
    model = ModelConfig("SmallCNN", weights="none", image_size=32, freeze=FreezePlan("all"))
    sweep_section(DataConfig(data_dir, val_split=0.25), model, TrainConfig(epochs=2, batch_size=8))


def test_a_sweep_is_a_job_of_the_registry(colour_dataset, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui import shared

    _studio(monkeypatch, tmp_path, cap=2)
    tab = AppTest.from_function(sweep_script, args=(str(colour_dataset),), default_timeout=300).run()
    next(button for button in tab.button if button.label == "Run sweep").click().run()
    assert not tab.exception and not tab.error, [e.value for e in tab.error]
    (job,) = shared.registry().for_owner("sweeper")
    assert job.kind == "sweep" and job.status == "done"
    assert len(tab.dataframe) == 1 and len(tab.dataframe[0].value) == 3 * 3 * 2  # the default grid, ranked


def test_a_job_saving_its_run_says_so_not_done_with_zero_seconds_left():
    """The newcomer's walk: after a refresh the page said "done · about 0 s left" beside a Stop button."""
    from tlcore.jobs import Job
    from tlcore.progress import job_progress

    job = Job("j", "alice", "train", "a training", epochs=3)
    job.log.append("batch", phase="head", epoch=3, step=4, steps=4)
    job.log.append("status", status="done")  # training ended; the job is still saving the run
    saving = job_progress(job)
    assert saving["phase"] == "save" and "saving the run" in saving["text"] and saving["eta_seconds"] is None
    job.status = "done"
    assert job_progress(job)["text"] == "done"


def test_a_job_asked_to_stop_says_so_until_it_has_stopped():
    """The newcomer's walk: Stop took 40 s to act during a fine-tune's first batch and nothing said it was heard."""
    from tlcore.jobs import Job
    from tlcore.progress import job_progress

    job = Job("j", "alice", "train", "a training", epochs=3)
    job.log.append("batch", phase="head", epoch=1, step=2, steps=4)
    assert not job_progress(job)["text"].startswith("Stopping")
    job.request_stop()
    stopping = job_progress(job)
    assert stopping["text"].startswith("Stopping — after the current batch") and stopping["phase"] == "stopping"
    job.status = "stopped"
    assert not job_progress(job)["text"].startswith("Stopping")  # it has stopped: the page shows its result


def test_a_phase_whose_first_batch_is_running_says_it_is_preparing():
    """A fine-tune's first batch compiles the model (tens of seconds): the line says so instead of the last head batch."""
    from tlcore.jobs import ProgressLog
    from tlcore.progress import progress_summary

    log = ProgressLog()
    log.append("phase", phase="head", epochs=2)
    for epoch in (1, 2):
        log.append("batch", phase="head", epoch=epoch, step=4, steps=4)
        log.append("epoch", phase="head", epoch=epoch, partial=False, seconds=0.1)
    log.append("phase", phase="fine-tune", epochs=2)
    progress = progress_summary(log, 4)
    assert progress["text"].startswith("fine-tune · preparing") and progress["fraction"] == 0.5
    log.append("batch", phase="fine-tune", epoch=3, step=1, steps=4)
    assert progress_summary(log, 4)["text"].startswith("fine-tune · epoch 3/4 · batch 1/4")
