import streamlit as st

from tlcore import charts
from tlcore.charts import short_run_names
from tlcore.runs.card import run_card
from tlcore.runs.exports import export_downloads
from tlcore.runs.formats import FORMATS
from tlcore.runs.snippets import snippet
from tlcore.runs.store import kept_epochs
from ui import cache
from ui.job_panel import start_task
from ui.run_sections import ab_section, exports_section

st.title("Runs")
store = cache.store()
table = store.table()
if table.empty:
    st.info("No runs yet. Every training run is saved here with its settings, curves and model.")
else:
    st.dataframe(
        table,
        column_config={
            # Widths in pixels that add up to less than the page (about 900 px): nothing scrolls sideways.
            "run_id": st.column_config.TextColumn("run", width=250),
            "status": st.column_config.TextColumn(width=60),
            "backbone": st.column_config.TextColumn(width=210),
            "classes": None,
            "val_accuracy": st.column_config.NumberColumn("val acc", format="%.3f", width=65),
            "val_loss": st.column_config.NumberColumn("val loss", format="%.3f", width=65),
            "kept_epoch": st.column_config.NumberColumn("kept", help="the epoch whose weights the run kept", width=50),
            "epochs_run": st.column_config.NumberColumn("epochs", width=55),
            "train_seconds": st.column_config.NumberColumn("seconds", format="%.1f", width=65),
        },
        hide_index=True,
        width="stretch",
    )
    if (table["status"] == "incomplete").any():
        st.caption(
            "'incomplete' runs were interrupted (the server stopped mid-run): their settings are kept, they have no model."
        )
    with_curves = table.loc[table["epochs_run"].fillna(0) > 0, "run_id"].tolist()
    chosen = st.multiselect("Compare runs", table["run_id"].tolist(), default=with_curves[:2])
    if chosen:
        names = short_run_names(chosen)  # legends name runs in a few words, not 50-character ids
        figure = charts.history_figure(
            store.histories(chosen).replace({"run_id": names}),
            title="Curves (★ = the epoch each run kept)",
            group="run_id",
            kept_epochs={names[run_id]: epoch for run_id, epoch in kept_epochs(store, chosen).items()},
        )
        st.plotly_chart(figure, width="stretch")
        # One column per run mixes numbers and words (backbone, kept reason): shown as text, a
        # mixed column cannot be sent to the browser as it is (a traceback in the server log).
        compared = store.compare(chosen).rename(columns=names)
        st.dataframe(compared.map(lambda value: "" if value is None or value != value else str(value)), width="stretch")

text_runs = store.table(kind="text")
if not text_runs.empty:
    with st.expander(f"Text runs (GPT-2 fine-tuning): {len(text_runs)}"):
        st.dataframe(text_runs[["run_id", "status", "backbone", "epochs_run"]], hide_index=True, width="stretch")
        st.page_link("pages/text/generate.py", label="Open the Text page", icon=":material/edit_note:")

ab_section(store)

st.subheader("Download a model")
run = cache.pick_run("Run to download", key="download_pick", shared=False)
if run is None:
    st.stop()
size = run.image_size or 224  # the model's own input size when the run kept a model file's
cols = st.columns(3)
cols[0].download_button("model.keras", (run.path / "model.keras").read_bytes(), file_name=f"{run.run_id}.keras")
cols[1].download_button("labels.txt", "\n".join(run.labels) + "\n", file_name="labels.txt")
if cols[2].button(
    "Export and check every format",
    help="Read-only: only the run's owner can add exports to it."
    if run.read_only
    else "Exports each format, runs it in its own runtime on the validation images, compares it with the "
    "Keras model and times it. A few minutes for a MobileNetV2.",
    disabled=run.read_only,
):
    from tlcore.runs.exports import export_formats

    start_task("export", "export", f"Exporting and checking {run.run_id}", lambda job: export_formats(run, job=job))
exports_section(run)
downloads = export_downloads(run)
if downloads:
    down = st.columns(min(len(downloads), 4))
    for index, (name, (file_name, path)) in enumerate(downloads.items()):
        # Read on click (a callable), not on every rerun: eight zips of a MobileNetV2 are ~60 MB.
        down[index % 4].download_button(name, path.read_bytes, file_name=file_name, on_click="ignore")
with st.expander("Model card"):
    st.markdown(run_card(run))

if run.access == "owner":
    token = store.share_token(run)
    with st.expander("Share this run read-only"):
        st.caption(
            "Whoever opens the link sees this run on Evaluate and Predict, read-only: not your other runs, "
            "not its downloads, and they cannot change its calibration."
        )
        if token is None and st.button("Make a share link"):
            token = store.share(run)
        if token is not None:
            base = (st.context.url or "").split("?")[0].rsplit("/", 1)[0]
            st.code(f"{base}/evaluate?run={token}", language=None)
            if st.button("Stop sharing"):
                store.unshare(run)
                st.rerun()

st.markdown("**Use it in Python** (no studio needed: put the downloads beside the script)")
tabs = st.tabs([row.label for row in FORMATS.values()])
for tab, row in zip(tabs, FORMATS.values()):
    with tab:
        code = snippet(row, run.run_id, size)
        st.code(code, language="python")
        # Each download named after its format: identical "predict.py" files could not be told apart.
        st.download_button(
            f"predict_{row.name}.py", code, file_name=f"predict_{row.name}.py", key=f"snippet_{row.name}"
        )
