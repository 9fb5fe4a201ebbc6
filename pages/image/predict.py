import streamlit as st

from tlcore import charts
from tlcore.data.common import UPLOAD_TYPES
from tlcore.data.images import thumbnail
from tlcore.errors import StudioError
from tlcore.model.backbones import BACKBONES
from ui import cache, messages

st.title("Predict")
runs = cache.finished_runs()
IMAGENET = "ImageNet classes (no training needed)"
mode = st.radio("Predict with", ["A trained run", IMAGENET], horizontal=True, index=0 if runs else 1)

uploads = st.file_uploader("Images", type=UPLOAD_TYPES, accept_multiple_files=True)
with st.expander("Or take a photo with your camera"):
    photo = st.camera_input("Camera", label_visibility="collapsed")
images = [(f.name, f.getvalue()) for f in uploads or []] + ([("camera", photo.getvalue())] if photo else [])

if mode == IMAGENET:
    names = [name for name, spec in BACKBONES.items() if spec.imagenet_top]
    backbone_name = st.selectbox("Backbone", names, index=names.index("MobileNetV2"))
    st.caption(
        "The backbone's own ImageNet classifier: top-5 of 1,000 everyday classes. Needs its ImageNet weights (downloaded once)."
    )
    if not images:
        st.info("Upload an image or take a photo.")
        st.stop()
    from tlcore.inference.predict import imagenet_top5

    try:
        with st.spinner("Loading ImageNet weights…"):
            results = imagenet_top5(backbone_name, [data for _, data in images])
    except StudioError as error:
        messages.show_error(error, "Without ImageNet weights, train a run on your own data and predict with it.")
        st.stop()
    for index, ((name, data), result) in enumerate(zip(images, results)):
        left, right = st.columns([1, 2])
        left.image(thumbnail(data, 480), caption=name, width="stretch")
        right.plotly_chart(charts.top_k_figure(result), width="stretch", key=f"imagenet_{index}")
    st.stop()

run = cache.pick_run("Trained run")
if run is None:
    st.info("No trained run yet. Train one, or switch to ImageNet classes.")
    st.page_link("pages/image/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()
top_k = st.slider("Top-k", 1, max(1, min(10, len(run.labels))), min(3, len(run.labels)))
show_cam = st.toggle("Grad-CAM: show where the model looks")
tta = st.toggle(
    "Average with the mirror image (test-time augmentation)",
    help="Predicts the image as is and flipped left to right, and averages: often a little more accurate.",
)
from tlcore.insight.calibration import load_temperature  # noqa: E402

temperature = load_temperature(run.path)
if temperature is not None and not st.toggle(f"Calibrated probabilities (temperature {temperature:.2f})", True):
    temperature = None
if not images:
    st.info("Upload one or more images, or take a photo.")
    st.stop()

from tlcore.inference.input_check import input_warnings, warning_sentence  # noqa: E402
from tlcore.inference.predict import grad_cam, overlay_heatmap, predict_top_k  # noqa: E402  (TensorFlow loads here)

model = cache.load_run_model(run)
reference = cache.input_reference(run)
if reference is None:
    st.caption("This run was trained before inputs were compared with its training images: only drawings are flagged.")
for index, (name, data) in enumerate(images):
    left, right = st.columns([1, 2])
    try:
        result = predict_top_k(
            model, run.labels, [data], top_k, tta="flip" if tta else "none", temperature=temperature
        )[0]
        unlike = input_warnings(model, reference, [data])[0]
    except StudioError as error:
        left.error(messages.escape_markdown(f"{name}: {error}"))
        continue
    if unlike:
        right.warning(messages.escape_markdown(warning_sentence(name, unlike)), icon=":material/warning:")
    try:
        heatmap = grad_cam(model, data)[0] if show_cam else None
    except StudioError as error:
        heatmap = None
        left.info(messages.escape_markdown(str(error)))
    if heatmap is not None:
        left.image(
            overlay_heatmap(data, heatmap, 320),
            caption=f"{name} · Grad-CAM for '{result[0]['label']}'",
            width="stretch",
        )
    else:
        left.image(thumbnail(data, 480), caption=name, width="stretch")
    best = f"{result[0]['label']} ({result[0]['probability']:.0%})"
    right.plotly_chart(
        charts.top_k_figure(result, title=f"no confident answer · top guess {best}" if unlike else best),
        width="stretch",
        key=f"top_k_{index}",
    )
