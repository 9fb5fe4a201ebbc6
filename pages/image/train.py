import streamlit as st

from pages.studio import shared
from tlcore import charts
from tlcore.errors import StudioError

st.title("Train")
data, model, train = shared.config("data"), shared.config("model"), shared.config("train")
st.caption(
    f"Dataset: **{data.data_dir}** · backbone: **{model.backbone}** ({model.weights}) · freeze plan: **{model.freeze.mode}**"
)

job = shared.current_job()
running = job is not None and job.active

with st.form("settings"):
    st.markdown("**Phase 1 · train the new head** (with the Model page's freeze plan)")
    cols = st.columns(4)
    train.epochs = cols[0].number_input("Epochs", 0, 500, train.epochs)
    train.batch_size = cols[1].select_slider(
        "Batch size",
        [4, 8, 16, 32, 64, 128],
        value=train.batch_size if train.batch_size in (4, 8, 16, 32, 64, 128) else 32,
    )
    rates = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    train.learning_rate = cols[2].select_slider(
        "Learning rate",
        rates,
        value=min(rates, key=lambda r: abs(r - train.learning_rate)),
        format_func=lambda r: f"{r:g}",
    )
    train.optimizer = cols[3].selectbox(
        "Optimizer",
        ["adam", "adamw", "sgd", "rmsprop"],
        index=["adam", "adamw", "sgd", "rmsprop"].index(train.optimizer),
    )
    cols = st.columns(4)
    train.augment = cols[0].checkbox(
        "Augmentation", train.augment, help="Random flip, rotation, zoom and contrast (slower: no feature cache)."
    )
    train.early_stopping_patience = cols[1].number_input(
        "Early stopping patience (0 = off)", 0, 100, train.early_stopping_patience
    )
    train.seed = cols[2].number_input("Seed", 0, 2**31 - 1, train.seed)
    st.markdown("**Phase 2 · fine-tune** (optional: unfreeze the top of the backbone at a lower learning rate)")
    cols = st.columns(3)
    train.fine_tune_epochs = cols[0].number_input("Fine-tune epochs (0 = skip)", 0, 500, train.fine_tune_epochs)
    ft_rates = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
    default_ft = train.effective_fine_tune_learning_rate
    train.fine_tune_learning_rate = cols[1].select_slider(
        "Fine-tune learning rate",
        ft_rates,
        value=min(ft_rates, key=lambda r: abs(r - default_ft)),
        format_func=lambda r: f"{r:g}",
    )
    unfreeze = cols[2].text_input("Unfreeze from (layer or block; empty = last block)", train.unfreeze_from or "")
    train.unfreeze_from = unfreeze.strip() or None
    start = st.form_submit_button("Start training", type="primary", disabled=running)

if start:
    from tlcore.runs import start_training

    try:
        job = start_training(shared.registry(), shared.session_id(), shared.run_config(), shared.store())
        shared.remember_job(job)
        running = True
    except StudioError as error:
        shared.show_error(error)
    except ValueError as error:
        shared.show_error(error, "Fix the setting above and start again.")

if job is None:
    st.info(
        "Set the options and press **Start training**. The chart below updates live, and you can leave this page and come back."
    )
    st.stop()

total_epochs = train.epochs + train.fine_tune_epochs


@st.fragment(run_every=1.0 if running else None)
def progress_panel():
    from tlcore.training import history_frame, progress_summary

    current = shared.current_job()
    if current is None:
        return
    summary = progress_summary(current.log, total_epochs)
    if current.active:
        eta = summary["eta_seconds"]
        st.progress(
            summary["fraction"], text=summary["text"] + (f" · about {eta:.0f} s left" if eta is not None else "")
        )
        if st.button("Stop", help="Stops after the current batch and keeps the best weights so far."):
            current.request_stop()
            st.toast("Stopping after this batch…")
    elif current.status in ("done", "stopped"):
        result = current.result
        metrics = result.metrics if result is not None else {}
        st.session_state.run_id = current.run_dir and current.run_dir.rstrip("/").split("/")[-1]
        verb = "Finished" if current.status == "done" else "Stopped"
        st.success(
            f"{verb}: validation accuracy **{metrics.get('val_accuracy', 0):.1%}** "
            f"(loss {metrics.get('val_loss', 0):.3f}) after {metrics.get('epochs_run', 0)} epochs, "
            f"{metrics.get('train_seconds', 0):.1f} s. Saved as run `{st.session_state.run_id}`.",
            icon=":material/check_circle:",
        )
        cols = st.columns(2)
        cols[0].page_link("pages/image/evaluate.py", label="Evaluate this run", icon=":material/fact_check:")
        cols[1].page_link("pages/image/predict.py", label="Try predictions", icon=":material/image_search:")
    else:
        shared.show_error(StudioError(current.error), "Your settings are kept: change them and start again.")
    st.plotly_chart(
        charts.history_figure(history_frame(current.log), title=current.title), width="stretch", key="live_chart"
    )
    if running and not current.active:
        st.rerun()  # the job ended: redraw the whole page (re-enables Start, stops polling)


progress_panel()
