import dataclasses
import json

import streamlit as st

from pages.studio import shared
from tlcore.backbones import BACKBONES, PREPROCESSING, is_model_file
from tlcore.config import FreezePlan
from tlcore.data import save_upload
from tlcore.errors import StudioError

st.title("Model")
model = shared.config("model")
OWN = "Your own Keras model file…"

choices = list(BACKBONES) + [OWN]
current = OWN if is_model_file(model.backbone) else model.backbone
left, right = st.columns(2)
with left:
    choice = st.selectbox("Backbone", choices, index=choices.index(current) if current in choices else 0)
    if choice == OWN:
        upload = st.file_uploader("Keras model file (.keras or .h5)", type=["keras", "h5", "hdf5"])
        if upload is not None:
            model.backbone = str(save_upload(shared.session_dir() / "models", upload.name, upload.getvalue()))
        if not is_model_file(model.backbone):
            st.info(
                "Upload a model file to use it as the backbone. It is loaded in safe mode: Lambda layers are refused."
            )
            st.stop()
        st.caption(f"Using {model.backbone}")
        preprocess_options = ["(guess from the layer names)"] + list(PREPROCESSING)
        picked = st.selectbox(
            "Preprocessing the model expects",
            preprocess_options,
            index=preprocess_options.index(model.preprocess) if model.preprocess in preprocess_options else 0,
        )
        model.preprocess = None if picked == preprocess_options[0] else picked
        model.weights = "none"
    else:
        spec = BACKBONES[choice]
        if choice != model.backbone:
            model.backbone, model.cut_layer, model.preprocess = choice, None, None
            model.image_size = spec.default_size
            model.weights = "imagenet" if spec.imagenet_weights else "none"
            model.freeze = FreezePlan("all" if spec.imagenet_weights else "none")
        options = ["imagenet", "none"] if spec.imagenet_weights else ["none"]
        previous_weights = model.weights
        model.weights = st.radio(
            "Weights",
            options,
            index=options.index(model.weights) if model.weights in options else 0,
            format_func={
                "imagenet": "ImageNet (pretrained; downloaded once)",
                "none": "none (random: trains from scratch)",
            }.get,
            horizontal=True,
        )
        if model.weights != previous_weights:
            # Pretrained: start as a fixed feature extractor. Random: everything must train.
            model.freeze = FreezePlan("all" if model.weights == "imagenet" else "none")
            st.session_state.freeze_version = st.session_state.get("freeze_version", 0) + 1
        sizes = sorted({s for s in (32, 64, 96, 128, 160, 192, 224, 299) if s >= spec.min_size} | {spec.default_size})
        value = model.image_size if model.image_size in sizes else spec.default_size
        model.image_size = st.select_slider(
            "Input size (pixels)",
            sizes,
            value=value,
            help="Smaller is faster; ImageNet weights were trained at the default.",
        )
with right:
    st.markdown("**New head**")
    model.pooling = st.radio(
        "Pooling", ["avg", "max", "flatten"], index=["avg", "max", "flatten"].index(model.pooling), horizontal=True
    )
    model.hidden_units = st.select_slider("Hidden dense layer", [0, 64, 128, 256, 512], value=model.hidden_units)
    model.dropout_rate = st.slider("Dropout", 0.0, 0.8, float(model.dropout_rate), 0.05)

key = json.dumps(
    {
        k: v
        for k, v in dataclasses.asdict(model).items()
        if k in ("backbone", "weights", "cut_layer", "preprocess", "image_size")
    },
    sort_keys=True,
)
try:
    backbone = shared.backbone(key)
except StudioError as error:
    shared.show_error(error)
    if model.weights == "imagenet":
        if st.button("Use random weights instead (train from scratch)"):
            model.weights, model.freeze = "none", FreezePlan("none")
            st.rerun()
    st.stop()

if is_model_file(model.backbone):
    from tlcore.backbones import feature_layers, load_model_file

    layers = feature_layers(load_model_file(model.backbone))
    cut = st.selectbox(
        "Cut the model at (its output becomes the feature map)",
        layers,
        index=layers.index(backbone.model.name) if backbone.model.name in layers else len(layers) - 1,
    )
    if cut != model.cut_layer and not (model.cut_layer is None and cut == layers[-1]):
        model.cut_layer = cut
        st.rerun()

from tlcore.model import layer_table, plan_totals, trainable_names  # noqa: E402  (TensorFlow loads here)

st.subheader("Which layers train?")
if not backbone.pretrained:
    st.info("Random weights: freezing keeps random features, which carry almost no information. Train all layers.")
table = layer_table(backbone.model, backbone.block_pattern)
try:
    current_names = trainable_names(backbone.model, model.freeze, backbone.block_pattern, backbone.pretrained)
except StudioError:
    model.freeze = FreezePlan("all")
    current_names = set()
table["trainable"] = table["name"].isin(current_names)
blocks = [b for b in dict.fromkeys(table["block"]) if b]

actions = st.columns([1, 1, 2, 2])
version = st.session_state.setdefault("freeze_version", 0)


def set_plan(plan):
    model.freeze = plan
    st.session_state.freeze_version += 1


if actions[0].button("Freeze all", help="Fixed feature extractor: only the new head trains (fastest)."):
    set_plan(FreezePlan("all"))
    st.rerun()
if actions[1].button("Unfreeze all"):
    set_plan(FreezePlan("none"))
    st.rerun()
with actions[2]:
    start_block = (
        st.selectbox(
            "Unfreeze from block", blocks, index=len(blocks) - 1 if blocks else 0, label_visibility="collapsed"
        )
        if blocks
        else None
    )
    if blocks and st.button(f"Unfreeze from {start_block}"):
        set_plan(FreezePlan("from", start_block))
        st.rerun()
with actions[3]:
    top = st.number_input("Top N layers with weights", 1, len(table), 10, label_visibility="collapsed")
    if st.button(f"Top {top} trainable"):
        set_plan(FreezePlan("top", int(top)))
        st.rerun()

edited = st.data_editor(
    table,
    column_config={"trainable": st.column_config.CheckboxColumn("trainable", help="Tick to train this layer")},
    disabled=["index", "name", "type", "block", "parameters"],
    hide_index=True,
    height=320,
    width="stretch",
    key=f"layers_{version}",
)
ticked = set(edited.loc[edited["trainable"], "name"])
if ticked != current_names:
    model.freeze = FreezePlan("layers", sorted(ticked))
if backbone.pretrained:
    st.caption(
        "BatchNormalization layers of a pretrained backbone always stay frozen (inference mode), so their statistics survive fine-tuning."
    )

num_classes = st.session_state.get("num_classes", 2)  # set by the Data page
totals = plan_totals(backbone, model.freeze, num_classes, model)
metrics = st.columns(3)
metrics[0].metric("Trainable parameters", f"{totals['trainable']:,}")
metrics[1].metric("Frozen parameters", f"{totals['frozen']:,}")
metrics[2].metric("Total", f"{totals['total']:,}")
st.caption(
    f"Head: {totals['head']:,} parameters for {num_classes} classes. Feature map {tuple(backbone.model.output.shape[1:])}."
)
st.page_link("pages/image/train.py", label="Next: train", icon=":material/monitoring:")
