import shutil
from pathlib import Path

import streamlit as st

from pages.studio import shared
from tlcore import charts
from tlcore.errors import StudioError

st.title("Runs")
store = shared.store()
table = store.table()
if table.empty:
    st.info("No runs yet. Every training run is saved here with its settings, curves and model.")
else:
    st.dataframe(
        table,
        column_config={
            "val_accuracy": st.column_config.NumberColumn(format="%.3f"),
            "val_loss": st.column_config.NumberColumn(format="%.3f"),
            "train_seconds": st.column_config.NumberColumn(format="%.1f"),
        },
        hide_index=True,
        width="stretch",
    )
    if (table["status"] == "incomplete").any():
        st.caption(
            "'incomplete' runs were interrupted (the server stopped mid-run): their settings are kept, they have no model."
        )

    chosen = st.multiselect("Compare runs", table["run_id"].tolist(), default=table["run_id"].tolist()[:2])
    if chosen:
        st.plotly_chart(charts.history_figure(store.histories(chosen), title="Curves", group="run_id"), width="stretch")
        st.dataframe(store.compare(chosen), width="stretch")

st.subheader("A/B: fixed feature extractor vs fine-tuning")
st.caption(
    "Trains the current setup twice on the same split: once with the backbone frozen, once fine-tuned, then compare them above."
)
job = shared.current_job()
if st.button("Run the A/B pair", disabled=job is not None and job.active):
    from tlcore.runs import start_ab

    try:
        shared.remember_job(start_ab(shared.registry(), shared.session_id(), shared.run_config(), store))
        st.rerun()
    except (StudioError, ValueError) as error:
        shared.show_error(error)
if job is not None and job.kind == "ab":
    if job.active:
        st.info(f"A/B running ({job.status}). Follow it on the Train page; this table updates when it finishes.")
        st.page_link("pages/image/train.py", label="Watch it train", icon=":material/monitoring:")
    elif job.status == "failed":
        shared.show_error(StudioError(job.error))

st.subheader("Download a model")
run = shared.pick_run("Run to download", key="download_pick")
if run is None:
    st.stop()
cols = st.columns(3)
cols[0].download_button("model.keras", (run.path / "model.keras").read_bytes(), file_name=f"{run.run_id}.keras")
cols[1].download_button("labels.txt", "\n".join(run.labels) + "\n", file_name="labels.txt")
exports = run.path / "exports"
if cols[2].button(
    "Prepare SavedModel + TFLite", help="Exports, re-loads each export and checks it predicts like the Keras model."
):
    from tlcore.runs import export_all

    samples = run.val_predictions()["path"].tolist()[:8]
    try:
        with st.spinner("Exporting and checking…"):
            report = export_all(run, [p for p in samples if Path(p).is_file()])
        st.success(
            "Exports agree with the Keras model: "
            + ", ".join(f"{k} {v['top1_agreement']:.0%}" for k, v in report.items())
        )
    except (StudioError, ValueError, OSError) as error:
        shared.show_error(error)
if (exports / "saved_model").is_dir():
    archive = shutil.make_archive(str(exports / "saved_model"), "zip", exports / "saved_model")
    down = st.columns(3)
    down[0].download_button("SavedModel (.zip)", Path(archive).read_bytes(), file_name=f"{run.run_id}-saved_model.zip")
    for column, name in zip(down[1:], ("model_float.tflite", "model_dynamic_range.tflite")):
        if (exports / name).is_file():
            column.download_button(name, (exports / name).read_bytes(), file_name=name)

size = run.config.model.image_size if run.config and run.config.model.image_size else "SIZE"
st.markdown("**Use it in Python**")
st.code(
    f"""import keras, numpy as np
from PIL import Image
import tlcore.model  # registers the Preprocess layer saved inside the model

model = keras.models.load_model("{run.run_id}.keras", safe_mode=True)
labels = open("labels.txt").read().splitlines()
image = Image.open("photo.jpg").convert("RGB").resize(({size}, {size}))
probabilities = model.predict(np.asarray(image, "float32")[None])[0]
print(labels[probabilities.argmax()], probabilities.max())""",
    language="python",
)
