"""Keeps Streamlit's post-run clean-up away from TensorFlow state that running jobs use."""

from __future__ import annotations

import sys

from streamlit.runtime.scriptrunner import script_runner


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
