import streamlit as st

from pages.studio import shared
from tlcore.backbones import BACKBONES, PREPROCESSING
from tlcore.config import POOLING_CHOICES, FreezePlan
from tlcore.data import save_upload
from tlcore.errors import StudioError
from tlcore.model_choices import HIDDEN_UNITS_CHOICES, default_freeze_plan

st.title("Model")
model = shared.config("model")
OWN = "Your own Keras model file…"
WEIGHTS = {
    "imagenet": "ImageNet (pretrained; downloaded once)",
    "none": "none (random: trains from scratch)",
    "file": "a weights file (.h5) you downloaded",
}

choices = list(BACKBONES) + [OWN]
current = OWN if model.is_model_file else model.backbone
left, right = st.columns(2)
with left:
    choice = st.selectbox("Backbone", choices, index=choices.index(current) if current in choices else 0)
    if choice == OWN:
        upload = st.file_uploader("Keras model file (.keras or .h5)", type=["keras", "h5", "hdf5"])
        if upload is not None:
            path = str(save_upload(shared.session_dir() / "models", upload.name, upload.getvalue()))
            shared.update("model", backbone=path, weights="none", cut_layer=None, freeze=FreezePlan("all"))
        if not model.is_model_file:
            st.info(
                "Upload a model file to use it as the backbone. It is loaded in safe mode: Lambda layers are refused."
            )
            st.stop()
        st.caption(f"Using your model file **{shared.escape_markdown(model.backbone.rsplit('/', 1)[-1])}**")
        options = ["(guess from the layer names)"] + list(PREPROCESSING)
        index = options.index(model.preprocess) if model.preprocess in options else 0
        picked = st.selectbox("Preprocessing the model expects", options, index=index)
        model.preprocess = None if picked == options[0] else picked
    else:
        spec = BACKBONES[choice]
        if choice != model.backbone:
            weights = "imagenet" if spec.imagenet_weights else "none"
            plan = default_freeze_plan(spec.imagenet_weights)
            shared.update("model", backbone=choice, cut_layer=None, preprocess=None, image_size=spec.default_size,
                          weights=weights, freeze=plan)  # fmt: skip
        options = ["imagenet", "none", "file"] if spec.imagenet_weights else ["none"]
        kind = model.weights if model.weights in ("imagenet", "none") else "file"
        kind = st.radio("Weights", options, index=options.index(kind), format_func=WEIGHTS.get, horizontal=True)
        weights = kind
        if kind == "file":
            upload = st.file_uploader(f"{choice} weights without the classification top (.h5)", type=["h5"])
            if upload is not None:
                weights = str(save_upload(shared.session_dir() / "weights", upload.name, upload.getvalue()))
            elif model.weights in ("imagenet", "none"):
                st.info("Upload the weights file (for example the keras.applications `..._notop.h5` file).")
                st.stop()
            else:
                weights = model.weights
        if weights != model.weights:
            shared.update("model", weights=weights, freeze=default_freeze_plan(weights != "none"))
        sizes = sorted({s for s in (32, 64, 96, 128, 160, 192, 224, 299) if s >= spec.min_size} | {spec.default_size})
        value = model.image_size if model.image_size in sizes else spec.default_size
        model.image_size = st.select_slider("Input size (pixels)", sizes, value=value,
                                            help="Smaller is faster; ImageNet weights were trained at the default.")  # fmt: skip
with right:
    st.markdown("**New head**")
    model.pooling = st.radio("Pooling", POOLING_CHOICES, index=POOLING_CHOICES.index(model.pooling), horizontal=True)
    model.hidden_units = st.select_slider("Hidden dense layer", HIDDEN_UNITS_CHOICES, value=model.hidden_units)
    model.dropout_rate = st.slider("Dropout", 0.0, 0.8, float(model.dropout_rate), 0.05)

try:
    backbone = shared.backbone(model)
except StudioError as error:
    shared.show_error(error)
    if model.weights == "imagenet" and st.button("Use random weights instead (train from scratch)"):
        shared.update("model", weights="none", freeze=FreezePlan("none"))
    st.stop()

if model.is_model_file:
    from tlcore.backbones import feature_layers, load_model_file

    layers = feature_layers(load_model_file(model.backbone))
    index = layers.index(backbone.model.name) if backbone.model.name in layers else len(layers) - 1
    cut = st.selectbox("Cut the model at (its output becomes the feature map)", layers, index=index)
    if cut != model.cut_layer and not (model.cut_layer is None and cut == layers[-1]):
        shared.update("model", cut_layer=cut)

from pages.image.freeze import freeze_editor  # noqa: E402  (TensorFlow loads here)

freeze_editor(model, backbone)
st.page_link("pages/image/train.py", label="Next: train", icon=":material/monitoring:")
