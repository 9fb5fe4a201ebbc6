from pathlib import Path

import streamlit as st

from tlcore import charts
from tlcore import metrics as evaluation
from tlcore.data.images import thumbnail
from tlcore.errors import StudioError
from tlcore.insight import duplicates
from ui import cache, messages

st.title("Evaluate")
run = cache.pick_run()
if run is None:
    st.info("No finished run yet. Train one first: the evaluation uses its validation images.")
    st.page_link("pages/image/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()

paths, labels, probabilities = run.val_probabilities()
if not paths:
    st.warning("This run has no saved validation predictions.")
    st.stop()
val_loss = run.metrics.get("val_loss", float("nan"))  # as Keras measured it for these saved predictions
tta = st.toggle(
    "Average each image with its mirror image (test-time augmentation)",
    key="evaluate_tta",
    help="Predicts every validation image twice, as is and flipped left to right, and averages the two. "
    "Often a little more accurate; costs twice the compute per image. Predict offers the same option.",
)
if tta:
    try:
        probabilities = cache.tta_probabilities(run, paths)
    except StudioError as error:
        messages.show_error(error, "A validation image could not be read again; it may have been moved or deleted.")
        st.stop()
    val_loss = None  # new predictions: their own loss
report = evaluation.evaluate_predictions(paths, labels, probabilities, run.labels, val_loss)
summary = report.summary
cols = st.columns(4)
cols[0].metric("Validation accuracy", f"{summary['accuracy']:.1%}")
cols[1].metric("Validation loss", f"{report.val_loss:.3f}")
cols[2].metric("Validation images", summary["count"])
if "top2_accuracy" in summary:
    cols[3].metric("Top-2 accuracy", f"{summary['top2_accuracy']:.1%}")
measured = st.empty()  # filled after the leakage check below, which may find copies in this run

left, right = st.columns([3, 2])
with left:
    st.plotly_chart(charts.confusion_figure(report.confusion), width="stretch")
with right:
    st.markdown("**Per class**")
    st.dataframe(
        report.per_class,
        column_config={name: st.column_config.NumberColumn(format="%.2f") for name in ("precision", "recall", "f1")},
        hide_index=True,
        width="stretch",
    )

wrong = report.mistakes
st.subheader(f"Misclassified ({len(wrong)})")
if wrong.empty:
    st.write("Every validation image is classified correctly.")
else:
    st.caption("Most confident mistakes first: often mislabelled images or look-alikes worth checking.")
    columns = st.columns(6)
    for index, row in wrong.head(24).iterrows():
        with columns[index % 6]:
            try:
                st.image(thumbnail(row["path"], 256), width="stretch")
            except (StudioError, OSError):
                st.caption(f"({Path(row['path']).name} is no longer readable)")
            name, true, guess = (messages.escape_markdown(row[key]) for key in ("path", "true", "predicted"))
            st.caption(f"{Path(name).name}  \ntrue **{true}** → {guess} ({row['confidence']:.0%})")

with st.expander("Why: calibration, feature map, validation images leaked from training"):
    from ui.insight.evaluate_sections import calibration_section, embedding_section, known_leaks, leakage_section

    calibration_section(run)
    embedding_section(run)
    leakage_section(run)
measured.caption(
    duplicates.measured_on(paths, labels, probabilities, known_leaks(run))
    + " Early stopping picked the best epoch by validation loss on these same images."
    + (f" {run.kept_weights}" if run.kept_weights else "")
)
