"""Job runners: the thread default stays as it was; the Ray runner on a real local Ray (2 CPUs).

A Ray job trains in a worker process and mirrors its progress into the server's job,
queues beyond the cluster's capacity with its position, stops on Stop (also while
queued), and a worker killed mid-job fails the job and its run folder with a message.
"""

import os
import signal
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.test_app import APP, TIMEOUT, studio_env, texts  # noqa: F401  (autouse fixture for the AppTest)
from tests.test_ray import ray_cluster  # noqa: F401  (module fixture: a real local Ray)
from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tlcore.errors import JobBusyError, StudioError
from tlcore.jobs import JobRegistry, ProgressLog, history_frame
from tlcore.runners import registry_from_env, runner_from_env
from tlcore.runners.cluster import JobResources
from tlcore.runners.host import JobHost
from tlcore.runners.ray_registry import RayJobRegistry


def test_the_thread_runner_stays_the_default():
    assert runner_from_env({}) == "thread"
    registry = registry_from_env(2, {})
    assert type(registry) is JobRegistry and registry.max_concurrent == 2
    ray = registry_from_env(2, {"TLCORE_JOB_RUNNER": "Ray", "TLCORE_RAY_ADDRESS": "auto"})
    assert isinstance(ray, RayJobRegistry) and ray.address == "auto"
    with pytest.raises(StudioError, match=r"one of \['thread', 'ray'\]. Received: 'celery'"):
        runner_from_env({"TLCORE_JOB_RUNNER": "celery"})
    with pytest.raises(StudioError, match="TLCORE_RAY_CPUS_PER_JOB"):
        JobResources.from_env({"TLCORE_RAY_CPUS_PER_JOB": "lots"})


def test_jobs_take_a_gpu_when_the_cluster_has_them_and_the_capacity_follows():
    cpus_only, with_gpus = {"CPU": 2.0}, {"CPU": 16.0, "GPU": 2.0}
    assert JobResources().options(cpus_only) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert JobResources().options(with_gpus) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert JobResources().capacity(cpus_only) == 2
    assert JobResources().capacity(with_gpus) == 2  # one job per GPU
    assert JobResources(num_cpus=4).capacity(with_gpus) == 2
    assert JobResources(num_cpus=4, num_gpus=0).capacity(with_gpus) == 4


def test_the_job_host_mirrors_a_new_log_and_returns_no_model():
    from dataclasses import dataclass

    @dataclass
    class Result:
        model: object
        metrics: dict

    host = JobHost({"job_id": "j", "owner": "o", "kind": "ab", "title": "t"}, {}, os.getcwd())

    def target(job):
        job.log.append("epoch", epoch=1)
        job.log = ProgressLog()  # an A/B job's second half
        job.log.append("epoch", epoch=1)
        job.run_dir = "somewhere"
        return Result(model=object(), metrics={"val_accuracy": 1.0})

    outcome = host.run(target)
    assert outcome["ok"] and outcome["result"] == Result(None, {"val_accuracy": 1.0})
    state = host.poll(1, 0)
    assert state["generation"] == 1 and len(state["records"]) == 1 and state["run_dir"] == "somewhere"
    failed = host.run(lambda job: 1 / 0)
    assert not failed["ok"] and failed["message"].startswith("Unexpected ZeroDivisionError")
    assert host.run(lambda job: (_ for _ in ()).throw(StudioError("bad data")))["message"] == "bad data"


# ----------------------------------------------------------------------------- on a real Ray cluster


def colour_config(folder, epochs: int = 400) -> RunConfig:
    return RunConfig(
        DataConfig(str(folder), val_split=0.25),
        ModelConfig("SmallCNN", weights="none", image_size=32, freeze=FreezePlan("none")),
        TrainConfig(epochs=epochs, batch_size=8, learning_rate=1e-2, early_stopping_patience=0, seed=1),
    )


def wait_until(condition, limit: float = 120.0, what: str = ""):
    deadline = time.time() + limit
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def statuses(job) -> list[str]:
    return [record["status"] for record in job.log.records(kind="status")]


def test_ray_jobs_run_in_workers_queue_stop_and_fail_when_killed(ray_cluster, colour_dataset, tmp_path):  # noqa: F811
    from tlcore.runs.store import RunStore, read_run
    from tlcore.training.launch import start_training

    registry, store = RayJobRegistry(poll_seconds=0.2), RunStore(tmp_path / "runs")
    config = colour_config(colour_dataset)
    first, second, third, fourth = (start_training(registry, owner, config, store) for owner in "abcd")
    with pytest.raises(JobBusyError):
        start_training(registry, "a", config, store)  # one job per session, as with threads

    # Two workers on 2 CPUs: the others wait, and say where they are in the queue.
    wait_until(lambda: "queued (position 1)" in statuses(third) and "queued (position 2)" in statuses(fourth))
    wait_until(lambda: len(first.log.records(kind="epoch")) >= 2 and second.log.records(kind="epoch"), what="epochs")
    assert first.worker_pid != os.getpid() and first.worker_pid != second.worker_pid
    assert third.log.records(kind="epoch") == [] and third.active

    third.request_stop()  # stopped while queued: cancelled, nothing ran, the next one moves up
    wait_until(lambda: third.status == "stopped", what="the queued job to stop")
    assert third.run_dir is None
    wait_until(lambda: "queued (position 1)" in statuses(fourth), what="the queue to move")

    epochs_seen = len(first.log.records(kind="epoch"))
    wait_until(lambda: len(first.log.records(kind="epoch")) > epochs_seen, what="live progress")  # still live
    os.kill(first.worker_pid, signal.SIGKILL)  # the machine under a job goes away
    wait_until(lambda: first.status == "failed", what="the killed job to fail")
    assert "Ray worker running this job died" in first.error
    killed = read_run(first.run_dir)
    assert killed.status == "failed" and "died" in killed.error

    wait_until(lambda: fourth.log.records(kind="epoch"), what="the queued job to start in the freed worker")
    assert any(status.startswith("running on Ray worker") for status in statuses(fourth))
    for job in (second, fourth):
        job.request_stop()
    wait_until(lambda: second.status == fourth.status == "stopped", what="Stop")
    for job in (second, fourth):
        run = read_run(job.run_dir)
        assert run.status == "stopped" and run.has_model
        assert len(history_frame(job.log)) == run.metrics["epochs_run"] == len(run.history)
        assert job.result.model is None and job.result.metrics["stopped_early_by_user"] is True


def test_a_ray_job_from_the_train_page_shows_its_live_chart_and_stops(ray_cluster, colour_dataset, monkeypatch):  # noqa: F811
    """The Train page, unchanged, on the Ray runner (TLCORE_JOB_RUNNER=ray)."""
    from ui import shared

    monkeypatch.setenv("TLCORE_JOB_RUNNER", "ray")
    ray_registry = RayJobRegistry(poll_seconds=0.2)
    if not isinstance(shared.registry(), RayJobRegistry):  # until the page layer reads TLCORE_JOB_RUNNER itself
        monkeypatch.setattr(shared, "registry", lambda: ray_registry)
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/image/train.py")
    at.session_state["data_config"] = DataConfig(str(colour_dataset), val_split=0.25)
    at.session_state["model_config"] = colour_config(colour_dataset).model
    at.session_state["train_config"] = colour_config(colour_dataset).train
    at.run()
    next(b for b in at.button if b.label == "Start training").click().run()
    job = shared.registry().get(at.session_state["job_id"])
    assert isinstance(shared.registry(), RayJobRegistry)

    def chart_points() -> int:
        at.run()  # AppTest has no browser timer: each run advances the run_every fragment
        assert not at.exception, [e.stack_trace for e in at.exception]
        charts = at.get("plotly_chart")
        if not charts:
            return 0
        import json

        figure = json.loads(charts[0].proto.spec)
        return max((len(trace.get("x") or []) for trace in figure.get("data", [])), default=0)

    wait_until(lambda: chart_points() >= 2, limit=180, what="the live chart")
    assert job.worker_pid != os.getpid()
    next(b for b in at.button if b.label == "Stop").click().run()
    wait_until(lambda: at.run() and at.success and "Stopped" in at.success[0].value, limit=120, what="Stopped")
    assert "Stopped" in texts(at)
