import streamlit as st

from tlcore.config import (
    AUGMENT_CHOICES,
    BATCH_SIZE_CHOICES,
    FINE_TUNE_LEARNING_RATE_CHOICES,
    FINE_TUNE_RATE_DECAY_CHOICES,
    FINE_TUNE_SCHEDULES,
    LEARNING_RATE_CHOICES,
    OPTIMIZER_CHOICES,
    nearest_choice,
)
from tlcore.data.summary import run_image_counts
from tlcore.errors import StudioError
from tlcore.jobs import QUICK_JOB_SECONDS
from tlcore.model.choices import (
    AUGMENT_LABELS,
    TRAIN_HELP,
    describe_backbone,
    describe_freeze_plan,
    full_augment_note,
    phase_one_title,
    rate_decay_label,
    schedule_index,
)
from tlcore.progress import training_figure
from ui import cache, messages, shared
from ui.job_panel import job_panel
from ui.offline import retry_button

st.title("Train")
data, model, train = shared.config("data"), shared.config("model"), shared.config("train")
st.caption(
    f"Dataset: **{messages.escape_markdown(data.describe())}** · backbone: "
    f"**{messages.escape_markdown(describe_backbone(model))}** · phase 1: {describe_freeze_plan(model.freeze)}"
)
job = shared.current_job()
running = job is not None and job.active
blocks, backbone = [], None
try:
    from tlcore.model.backbones import block_names

    backbone = cache.backbone(model)
    blocks = block_names(backbone)
except StudioError as error:
    st.caption(f"(Parameter counts need the backbone: {messages.escape_markdown(error)} See the Model page.)")
    retry_button(error, "train")

with st.container(border=True):  # no form: every change is kept at once (and survives a refresh)
    st.markdown(phase_one_title(model.freeze))
    cols = st.columns(4)
    train.epochs = cols[0].number_input("Epochs", 0, 500, train.epochs)
    batch = train.batch_size if train.batch_size in BATCH_SIZE_CHOICES else 32
    train.batch_size = cols[1].select_slider("Batch size", BATCH_SIZE_CHOICES, value=batch)
    rate = nearest_choice(train.learning_rate, LEARNING_RATE_CHOICES)
    train.learning_rate = cols[2].select_slider(
        "Learning rate", LEARNING_RATE_CHOICES, value=rate, format_func="{:g}".format
    )
    train.optimizer = cols[3].selectbox("Optimizer", OPTIMIZER_CHOICES, index=OPTIMIZER_CHOICES.index(train.optimizer))
    cols = st.columns(4)
    train.augment = cols[0].selectbox("Augmentation", AUGMENT_CHOICES, index=AUGMENT_CHOICES.index(train.augment),
                                      format_func=AUGMENT_LABELS.get, help=TRAIN_HELP["augment"])  # fmt: skip
    patience = "Early stopping patience (0 = off)"
    train.early_stopping_patience = cols[1].number_input(patience, 0, 100, train.early_stopping_patience)
    train.seed = cols[2].number_input("Seed", 0, 2**31 - 1, train.seed)
    st.markdown("**Phase 2 · fine-tune** (optional: unfreeze the top of the backbone at a lower learning rate)")
    cols = st.columns(3)
    train.fine_tune_epochs = cols[0].number_input("Fine-tune epochs (0 = skip)", 0, 500, train.fine_tune_epochs)
    rate = nearest_choice(train.effective_fine_tune_learning_rate, FINE_TUNE_LEARNING_RATE_CHOICES)
    train.fine_tune_learning_rate = cols[1].select_slider(
        "Fine-tune learning rate", FINE_TUNE_LEARNING_RATE_CHOICES, value=rate, format_func="{:g}".format
    )
    if blocks:
        start = train.unfreeze_from if train.unfreeze_from in blocks else blocks[-1]
        train.unfreeze_from = cols[2].selectbox("Unfreeze from block", blocks, index=blocks.index(start))
    else:
        unfreeze = cols[2].text_input("Unfreeze from (layer name; empty = last block)", train.unfreeze_from or "")
        train.unfreeze_from = unfreeze.strip() or None
    cols = st.columns(3)
    schedule = schedule_index(train.fine_tune_schedule)
    train.fine_tune_schedule = cols[0].selectbox(
        "Fine-tune schedule", FINE_TUNE_SCHEDULES, index=schedule, help=TRAIN_HELP["schedule"]
    )
    train.fine_tune_rate_decay = cols[1].select_slider(
        "Rate for each lower block", FINE_TUNE_RATE_DECAY_CHOICES,
        value=nearest_choice(train.fine_tune_rate_decay, FINE_TUNE_RATE_DECAY_CHOICES),
        format_func=rate_decay_label, help=TRAIN_HELP["decay"],
    )  # fmt: skip
    # A backbone that does not load here fails the job at once: Start waits for a model that loads.
    unusable = "Set a model that loads on the Model page first." if backbone is None else None
    start = st.button("Start training", type="primary", disabled=running or backbone is None, help=unusable)


if start:  # before the table and the tools below: the click reruns the page at once
    from tlcore.training.launch import start_training

    try:
        started = start_training(shared.registry(), shared.session_id(), shared.run_config(), cache.store())
        shared.remember_job(started)
        # A retrain on cached features ends in well under a second: its result then shows in
        # this click's rerun instead of at the live panel's next poll (one second later).
        started.wait(QUICK_JOB_SECONDS)
        st.rerun()  # the sidebar and the panel below show the new job from this click on
    except StudioError as error:
        messages.show_error(error)
    except ValueError as error:
        messages.show_error(error, "Fix the setting above and start again.")


if backbone is not None:  # after the widgets, so the table shows this run's choices
    from tlcore.model.classifier import phase_table

    timing = None
    try:
        if train.fine_tune_epochs:
            timing = cache.fine_tune_epoch_seconds(model, train, *run_image_counts(data, cache.scan))
    except (StudioError, ValueError) as error:
        st.caption(f"(No time estimate: {messages.escape_markdown(error)})")
    try:
        runs = cache.finished_runs(shared=False)
        st.table(phase_table(backbone, shared.run_config(), shared.class_count(), timing, runs))
    except StudioError as error:
        messages.show_error(error, "Pick a block from the list above.")
        st.stop()
    if note := full_augment_note(timing, train.augment):
        st.caption(note)

with st.expander("Find settings: learning-rate finder, sweep of head settings, how many more images"):
    from ui.insight.train_sections import learning_curve_section, lr_finder_section
    from ui.sweep_section import sweep_section

    lr_finder_section(shared.run_config())
    sweep_section(data, model, train)
    learning_curve_section(shared.run_config())
    from ui.compare_sections import depth_section

    depth_section(data, model, train)

if job is None:
    st.info(TRAIN_HELP["start"])
    st.stop()


def finished(current) -> None:
    from ui.train_result import show_result

    show_result(current)


job_panel(job, training_figure, finished)
