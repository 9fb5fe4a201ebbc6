"""What every page shares: who the browser is, its setup, its job, errors, the sidebar.

Heavy modules (TensorFlow through tlcore.model.classifier, training, predict) are imported inside
the functions that need them, so pages that don't need them render without loading it.
Cached tlcore calls live in ui/cache.py, identity in ui/identity.py: import them from there.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import streamlit as st

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.data.demo import DEMO_DATASET
from tlcore.data.sources import save_upload
from tlcore.errors import StudioError, unexpected
from tlcore.jobs import TASK_KINDS, JobRegistry, max_jobs_from_env
from tlcore.paths import workspace_dir
from ui.cache import model_file_info, scan
from ui.identity import facts, identify
from ui.offline import retry_button

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
    path = workspace_dir() / "sessions" / session_id()
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


def accepted_model_file(path: str, name: str, current: str) -> bool:
    """Whether the uploaded model file at ``path`` can become the setup's model; shows why not.

    The file is read (in safe mode, see :func:`ui.cache.model_file_info`) before it replaces
    the current model, so a refused file never becomes the model that Train would start with.
    A refusal is remembered per file, so reruns do not load it again.

    Args:
        path: where the upload was saved.
        name: the uploaded file's name, as the visitor knows it.
        current: the current model in words (it stays the setup's model when the file is refused).
    """
    refused = st.session_state.setdefault("refused_model_files", {})
    if path not in refused:
        try:
            model_file_info(path)
            return True
        except (StudioError, OSError) as error:
            refused[path] = str(error)
    st.error(
        escape_markdown(refused[path])
        + f"\n\n{escape_markdown(name)} is refused. Your model is still **{escape_markdown(current)}**. "
        "Upload another model file above, or choose a **Backbone** from the list.",
        icon=":material/error:",
    )
    return False


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


# A web address in a message: shown as a Markdown autolink, whose text and target are taken
# literally. Escaping its characters instead would leave the backslashes in the link (GFM's
# bare-URL links keep them: ``vgg16\\_notop.h5``, ``%5C_`` in the address).
_URL = re.compile(r"https?://[^\s<>]*[^\s<>.,;:!?)\]'\"]")


def escape_markdown(text: str) -> str:
    """Shows ``text`` literally where Streamlit renders Markdown (``cats/*.jpg`` keeps its stars).

    Web addresses in it become working links, shown as written.
    """
    text, parts, start = str(text), [], 0
    for match in _URL.finditer(text):
        parts += [_escape(text[start : match.start()]), f"<{match.group()}>"]
        start = match.end()
    return "".join(parts + [_escape(text[start:])])


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>~$|])", r"\\\1", text)


def show_error(error: Exception, hint: str = "") -> None:
    st.error(escape_markdown(error) + (f"\n\n{hint}" if hint else ""), icon=":material/error:")
    retry_button(error, hint or "error")  # a failed download: tried again when the visitor asks


def run_page(navigation) -> None:
    """Runs the chosen page; an unexpected exception becomes a message, never a traceback.

    ``st.stop()`` and ``st.rerun()`` are ``BaseException``s and pass through. The full
    traceback goes to the server log for a bug report; the page says what happened.
    """
    try:
        navigation.run()
    except Exception as error:  # noqa: BLE001  - shown to the user, logged for the report
        logging.getLogger("tlcore.dashboard").exception("uncaught error on page %s", navigation.title)
        st.error(
            escape_markdown(unexpected(error))
            + "\n\nYour settings are kept. Change the last setting or reload the page; "
            "the server log has the details for a report.",
            icon=":material/error:",
        )
