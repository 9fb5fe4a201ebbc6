"""Train-page sections: the learning-rate finder and "how many more images"."""

from __future__ import annotations

import streamlit as st

from tlcore.config import RunConfig
from tlcore.insight import figures as charts
from ui.insight import common

PHASES = {
    "head": "Head (on cached features, about a second)",
    "fine-tune": "Fine-tune (on images, 75 steps: a minute or two)",
}


def lr_finder_section(config: RunConfig, on_use=None) -> None:
    """fastai's learning-rate finder: a sweep, its plot and a "use this" button.

    Args:
        config: the current setup (``shared.run_config()``: its objects are the live ones).
        on_use: called as ``on_use(field, value)`` with ``field`` ``"learning_rate"`` or
            ``"fine_tune_learning_rate"``; by default the value is set on
            ``config.train`` and the page reruns.
    """
    from tlcore.insight import lr_finder

    st.markdown("**Learning-rate finder**")
    st.caption(
        "Trains for a moment with a learning rate growing exponentially until the loss blows up, then restores the "
        "weights. The suggestion is fastai's 'valley': well down the longest fall of the loss; none when the sweep "
        "is too short or its loss does not clearly fall."
    )
    phase = st.radio("Sweep", list(PHASES), format_func=PHASES.get, horizontal=True, key="lr_phase")
    result = common.analysis(
        "lr_finder",
        config,
        "Find a learning rate",
        "Sweeping the learning rate…",
        (lambda found: lr_finder.find_head_lr(found, config))
        if phase == "head"
        else (lambda _: lr_finder.find_fine_tune_lr(config)),
        key="lr_find",
        uses_features=phase == "head",
    )
    if result is None:
        return
    st.plotly_chart(charts.lr_finder_figure(result), width="stretch", key="lr_finder_chart")
    steps = f"{len(result.points)} steps in {result.seconds:.1f} s" + (
        ", stopped when the loss diverged." if result.diverged else "."
    )
    if result.suggested_lr is None:
        st.warning(f"No suggestion: {result.reason} ({steps})", icon=":material/help:")
        return
    field, value = result.setting()
    st.caption(f"Suggested ({result.method}): **{result.suggested_lr:.2g}**; the nearest setting is {value:g}. {steps}")
    if st.button(f"Use {value:g} for the {result.phase} phase", key="lr_use"):
        if on_use is not None:
            on_use(field, value)
        else:
            setattr(config.train, field, value)
            st.rerun()


def learning_curve_section(config: RunConfig) -> None:
    """Accuracy against training-set size on cached features, the fitted curve and a projection."""
    from tlcore.insight.learning_curve import learning_curve

    st.markdown("**How many more images?**")
    st.caption(
        "Heads trained on 10 %–100 % of each class (5 draws each, mean ± spread), scored on the validation "
        "images. A fitted learning curve projects the accuracy with more images like these, with the range of "
        "40 refits on resampled measurements; when that range cannot be told from no gain, it says so instead."
    )
    curve = common.analysis(
        "learning_curve",
        config,
        "Measure the learning curve",
        "Training heads on subsets…",
        lambda found: learning_curve(found, seed=config.train.seed),
    )
    if curve is not None:
        st.plotly_chart(charts.learning_curve_figure(curve), width="stretch", key="learning_curve_chart")
        if curve.reliable:
            st.info(curve.describe(), icon=":material/trending_up:")
        else:
            st.info(curve.describe(), icon=":material/trending_flat:")
