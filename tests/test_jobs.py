import threading
import time

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
    with pytest.raises(JobBusyError, match=r"busy: 1 training job is running \(the limit is 1\)"):
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
    crashed = wait(registry.start("a", "train", "t", bug))
    assert crashed.status == "failed" and "Unexpected KeyError" in crashed.error
    assert crashed.log.last("traceback") is not None  # kept for the logs, never shown as the message
    assert wait(registry.start("a", "train", "t", lambda job: 42)).result == 42


def test_wait_returns_when_the_job_ends_or_the_time_is_up():
    registry = JobRegistry()
    release = threading.Event()
    slow = registry.start("alice", "train", "slow", blocking_target(release))
    assert slow.wait(0.05) is False and slow.active
    release.set()
    assert slow.wait(10) is True and slow.status == "done"
    quick = registry.start("alice", "train", "quick", lambda job: "ok")
    assert quick.wait(10) is True and quick.result == "ok"
