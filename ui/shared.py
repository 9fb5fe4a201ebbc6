"""What every page shares: who the browser is, its setup, its job, errors, the sidebar.

Heavy modules (TensorFlow through tlcore.model.classifier, training, predict) are imported inside
the functions that need them, so pages that don't need them render without loading it.
Cached tlcore calls live in ui/cache.py, identity in ui/identity.py: import them from there.
"""

from __future__ import annotations

import copy
from pathlib import Path

import streamlit as st

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.data.demo import DEMO_DATASET
from tlcore.data.sources import save_upload
from tlcore.errors import StudioError
from tlcore.jobs import TASK_KINDS, JobRegistry, max_jobs_from_env
from tlcore.paths import sessions_dir
from ui.cache import scan
from ui.identity import facts, identify
from ui.messages import show_error

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
            found = scan(data.data_dir, data.skip_placeholders)
        except StudioError:
            return 2
        facts()["num_classes"] = max(2, sum(1 for count in found.counts.values() if count))
    return facts()["num_classes"]


def session_id() -> str:
    identify()
    return st.session_state.session_id


def session_dir() -> Path:
    """This browser's own folder for uploads and built datasets."""
    path = sessions_dir() / session_id()
    path.mkdir(parents=True, exist_ok=True)
    return path


def saved_upload(kind: str, upload) -> str:
    """Where an uploaded file is kept in this browser's folder (``kind``: "models", "uploads"…).

    Written once per upload (``tlcore.data.sources.save_upload`` is content-addressed); later reruns
    find the path by the upload's id without reading or hashing its bytes again.
    """
    saved = st.session_state.setdefault("saved_uploads", {})
    key = f"{kind}:{upload.file_id}"
    if key not in saved or not Path(saved[key]).is_file():
        saved[key] = str(save_upload(session_dir() / kind, upload.name, upload.getvalue()))
    return saved[key]


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


def change_backbone(settings: dict) -> None:
    """Makes ``settings`` (:func:`tlcore.model.choices.backbone_settings`) the setup's model.

    The fine-tune "Unfreeze from" block named a block of the previous model: it is reset to
    the new model's last block, so Train never offers a stale name as free text.
    """
    if settings["backbone"] != config("model").backbone:
        config("train").unfreeze_from = None
    update("model", **settings)


def run_config() -> RunConfig:
    return RunConfig(config("data"), config("model"), config("train"))


def current_job(area: str = "image"):
    """This browser's latest job of ``area`` ("image" pages or the "text" page), from the registry.

    The registry, not this tab's session state, says which job is the latest: a job started
    in another tab of the same browser shows here too. A job in the URL that another
    browser started is not shown (a shared link must not hand over someone's job and its
    Stop button).
    """
    owner = session_id()
    jobs = registry()
    linked = jobs.get(st.query_params.get("job"))
    if linked is not None and linked.owner != owner:
        st.session_state.foreign_job = True
    # Short jobs (analyses, exports…) are followed by the section that started them.
    mine = [job for job in jobs.for_owner(owner, area) if job.kind not in TASK_KINDS]
    job = mine[-1] if mine else None
    if job is not None:
        st.session_state.job_id = job.job_id
    return job


def remember_job(job) -> None:
    st.session_state.job_id = job.job_id
    st.query_params["job"] = job.job_id
