"""What every page shares: session identity, the job registry, cached tlcore calls, the sidebar.

Heavy modules (TensorFlow through tlcore.model, training, predict) are imported inside
the functions that need them, so pages that don't need them render without loading it.
"""

from __future__ import annotations

import copy
import json
import sys
import uuid
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import script_runner

from tlcore.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tlcore.data import DEMO_DATASET, workspace_dir
from tlcore.errors import StudioError
from tlcore.jobs import JobRegistry, max_jobs_from_env
from tlcore.runs import RunStore, runs_root

DEFAULT_DATA = DataConfig(DEMO_DATASET)
DEFAULT_MODEL = ModelConfig("MobileNetV2", weights="imagenet", image_size=160)
DEFAULT_TRAIN = TrainConfig(epochs=10)


def keep_keras_state() -> None:
    """Stops Streamlit from calling ``keras.backend.clear_session()`` after every script run.

    Streamlit's script runner "cleans" Keras after each run (``_clean_problem_modules``):
    a full ``gc.collect()`` and ``clear_kernel_cache()`` of TensorFlow's process-wide
    eager context. Training runs in background threads of this same process, and the
    live chart reruns a fragment every second, so every second each watching session
    threw away the running fit's compiled kernels: one training ran 3x slower, two at
    once 10x slower per job (measured; this was the "two fits stall" of issue 5). Our
    models live in job threads and caches, never in Keras' global session, so there is
    nothing for that clean-up to do; matplotlib's clean-up is kept.
    """
    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None or getattr(current, "keeps_keras_state", False):
        return  # already done, or a Streamlit without this hook (the AppTest then checks the behaviour)

    def clean_problem_modules() -> None:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")

    clean_problem_modules.keeps_keras_state = True
    script_runner._clean_problem_modules = clean_problem_modules


def session_id() -> str:
    if "session_id" not in st.session_state:
        st.session_state.session_id = uuid.uuid4().hex[:12]
    return st.session_state.session_id


def session_dir() -> Path:
    """This browser session's own folder for uploads and built datasets."""
    path = workspace_dir() / "sessions" / session_id()
    path.mkdir(parents=True, exist_ok=True)
    return path


@st.cache_resource
def _registry(cap: int) -> JobRegistry:
    return JobRegistry(max_concurrent=cap)


def registry() -> JobRegistry:
    """One job registry for the whole server process, shared by every session.

    At most ``TLCORE_MAX_JOBS`` (default 2) jobs run at once; one more gets "busy, try again".
    """
    try:
        cap = max_jobs_from_env()
    except StudioError as error:
        show_error(error)
        st.stop()
    return _registry(cap)


def store() -> RunStore:
    return RunStore(runs_root())


def config(kind: str):
    """The session's current data/model/train settings (defaults on first use)."""
    defaults = {"data": DEFAULT_DATA, "model": DEFAULT_MODEL, "train": DEFAULT_TRAIN}
    key = f"{kind}_config"
    if key not in st.session_state:
        st.session_state[key] = copy.deepcopy(defaults[kind])
    return st.session_state[key]


def run_config() -> RunConfig:
    return RunConfig(config("data"), config("model"), config("train"))


def current_job():
    """This session's job: from session state, or from the URL after a page refresh.

    A refresh starts a new Streamlit session; the job id in the URL lets it pick up
    its job (and so its chart) again.
    """
    if "job_id" not in st.session_state and st.query_params.get("job"):
        job = registry().get(st.query_params.get("job"))
        if job is not None:
            st.session_state.session_id = job.owner
            st.session_state.job_id = job.job_id
    job = registry().get(st.session_state.get("job_id"))
    return job if job is not None and job.owner == session_id() else None


def remember_job(job) -> None:
    st.session_state.job_id = job.job_id
    st.query_params["job"] = job.job_id


@st.cache_data(show_spinner="Scanning images…", max_entries=32)
def scan(source: str, skip_placeholders: bool, _stamp: float):
    """Cached scan of a dataset folder/zip/demo (``_stamp`` changes when the folder does)."""
    from tlcore.data import resolve_source, scan_folder

    return scan_folder(resolve_source(source), skip_placeholders=skip_placeholders)


def folder_stamp(source: str) -> float:
    path = Path(source)
    try:
        return (
            max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
            if path.is_dir()
            else path.stat().st_mtime
        )
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading the backbone…", max_entries=4)
def backbone(model_json: str):
    from tlcore.backbones import load_backbone

    return load_backbone(ModelConfig(**{k: v for k, v in json.loads(model_json).items() if k != "freeze"}))


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def run_model(run_path: str, _mtime: float):
    from tlcore.runs import read_run

    return read_run(Path(run_path)).load_model()


def load_run_model(run):
    path = run.path / "model.keras"
    return run_model(str(run.path), path.stat().st_mtime)


def sidebar() -> None:
    """Current dataset, model and job, on every page."""
    data = config("data")
    model = config("model")
    with st.sidebar:
        st.caption("CURRENT SETUP")
        name = "demo: shapes" if data.data_dir == DEMO_DATASET else Path(data.data_dir).name
        summary = st.session_state.get("data_summary")
        st.markdown(f"**Dataset** · {name}" + (f"  \n{summary}" if summary else ""))
        weights = (
            "your model file" if model.backbone.endswith((".keras", ".h5", ".hdf5")) else f"weights: {model.weights}"
        )
        st.markdown(f"**Model** · {Path(model.backbone).name}  \n{weights}")
        job = current_job()
        if job is None:
            st.markdown("**Job** · none running")
        else:
            if st.query_params.get("job") != job.job_id:
                st.query_params["job"] = job.job_id  # page changes drop it; a refresh needs it
            st.markdown(f"**Job** · {job.title}  \nstatus: `{job.status}`")


def show_error(error: Exception, hint: str = "") -> None:
    st.error(f"{error}" + (f"\n\n{hint}" if hint else ""), icon=":material/error:")


def finished_runs():
    return [run for run in store().list() if run.status in ("done", "stopped") and run.has_model]


def pick_run(label: str = "Run", key: str = "run_pick"):
    """A select box of finished runs (the session's last run first); ``None`` if there are none."""
    runs = finished_runs()
    if not runs:
        return None
    ids = [run.run_id for run in runs]
    preferred = st.session_state.get("run_id")
    index = ids.index(preferred) if preferred in ids else 0
    chosen = st.selectbox(label, ids, index=index, key=key)
    st.session_state.run_id = chosen
    return runs[ids.index(chosen)]
