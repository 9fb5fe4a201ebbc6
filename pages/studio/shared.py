"""What every page shares: who the browser is, its setup, its job, errors, the sidebar.

Heavy modules (TensorFlow through tlcore.model, training, predict) are imported inside
the functions that need them, so pages that don't need them render without loading it.
Cached tlcore calls live in pages/studio/cache.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import streamlit as st

from pages.studio.cache import (
    backbone,
    finished_runs,
    folder_stamp,
    load_run_model,
    pick_run,
    scan,
    store,
    tta_probabilities,
)
from pages.studio.identity import facts, identify, persist_setup, setup_in_use, setups
from pages.studio.keras_state import keep_keras_state
from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.data import DEMO_DATASET, workspace_dir
from tlcore.errors import StudioError
from tlcore.jobs import TASK_KINDS, JobRegistry, max_jobs_from_env

__all__ = [
    "backbone",
    "finished_runs",
    "folder_stamp",
    "keep_keras_state",
    "load_run_model",
    "pick_run",
    "scan",
    "tta_probabilities",
]
__all__ += ["store", "facts", "identify", "persist_setup", "setup_in_use", "setups"]
DEFAULTS = {
    "data": DataConfig(DEMO_DATASET),
    "model": ModelConfig("MobileNetV2", weights="imagenet", image_size=160),
    "train": TrainConfig(),  # the measured defaults (bench/accuracy_study.py)
}


def class_count() -> int:
    """Classes of the current dataset: as the Data page measured, else scanned now (cached)."""
    if "num_classes" not in facts():
        data = config("data")
        try:
            found = scan(data.data_dir, data.skip_placeholders, folder_stamp(data.data_dir))
        except StudioError:
            return 2
        facts()["num_classes"] = max(2, sum(1 for count in found.counts.values() if count))
    return facts()["num_classes"]


def session_id() -> str:
    identify()
    return st.session_state.session_id


def session_dir() -> Path:
    """This browser's own folder for uploads and built datasets."""
    path = workspace_dir() / "sessions" / session_id()
    path.mkdir(parents=True, exist_ok=True)
    return path


@st.cache_resource
def _registry(cap: int) -> JobRegistry:
    from tlcore.runners import registry_from_env

    return registry_from_env(cap)  # threads in this server, or Ray with TLCORE_JOB_RUNNER=ray


def registry() -> JobRegistry:
    """One job registry for the whole server process (at most ``TLCORE_MAX_JOBS`` jobs at once)."""
    try:
        cap = max_jobs_from_env()
    except StudioError as error:
        show_error(error)
        st.stop()
    return _registry(cap)


def config(kind: str):
    """The browser's current data/model/train settings (defaults on first use)."""
    key = f"{kind}_config"
    if key not in st.session_state:
        st.session_state[key] = copy.deepcopy(DEFAULTS[kind])
    return st.session_state[key]


def update(kind: str, **fields) -> None:
    """Changes setup fields; when something changed, reruns so the sidebar shows it now."""
    target = config(kind)
    changed = {name: value for name, value in fields.items() if getattr(target, name) != value}
    for name, value in changed.items():
        setattr(target, name, value)
    if changed:
        st.rerun()


def run_config() -> RunConfig:
    return RunConfig(config("data"), config("model"), config("train"))


def current_job():
    """This browser's job: the one in the URL if it is theirs, else their latest.

    A job in the URL that another browser started is not shown (a shared link must not
    hand over someone's job and its Stop button).
    """
    owner = session_id()
    jobs = registry()
    job = jobs.get(st.session_state.get("job_id") or st.query_params.get("job"))
    if job is not None and job.owner != owner:
        st.session_state.foreign_job, job = True, None
    if job is None:  # short jobs (analyses, exports…) are followed by the section that started them
        mine = [mine for mine in jobs.for_owner(owner) if mine.kind not in TASK_KINDS]
        job = mine[-1] if mine else None
    if job is not None:
        st.session_state.job_id = job.job_id
    return job


def remember_job(job) -> None:
    st.session_state.job_id = job.job_id
    st.query_params["job"] = job.job_id


def escape_markdown(text: str) -> str:
    """Shows ``text`` literally where Streamlit renders Markdown (``cats/*.jpg`` keeps its stars)."""
    return re.sub(r"([\\`*_\[\]<>~$|])", r"\\\1", str(text))


def show_error(error: Exception, hint: str = "") -> None:
    st.error(escape_markdown(error) + (f"\n\n{hint}" if hint else ""), icon=":material/error:")
