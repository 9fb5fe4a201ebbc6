import streamlit as st

from tlcore.config import POOLING_CHOICES, FreezePlan
from tlcore.errors import StudioError
from tlcore.model.backbones import BACKBONES
from tlcore.model.choices import (
    HIDDEN_UNITS_CHOICES,
    WEIGHTS_LABELS,
    backbone_settings,
    cut_layer_index,
    cut_layer_setting,
    default_freeze_plan,
    describe_backbone,
    image_size_choices,
    image_size_value,
    model_file_size_choices,
    model_file_size_label,
    preprocess_choices,
    preprocess_label,
    weights_choice,
    weights_choices,
)
from tlcore.model.files import MODEL_FILE_SUFFIXES
from tlcore.model.hub import HUB_PRESETS, check_hub_source, hub_prompt, is_hub_name
from ui import cache, messages, shared
from ui.identity import downloads_allowed
from ui.model_file import accepted_model_file, follow_setup

st.title("Model")
model = shared.config("model")
OWN = "Your own Keras model file…"
HUB = "KerasHub preset (ViT, DINOv2, CLIP, SigLIP…)"
SIZE = "Input size (pixels)"
choices = list(BACKBONES) + [HUB, OWN]
current = OWN if model.is_model_file else HUB if is_hub_name(model.backbone) else model.backbone
left, right = st.columns(2)
with left:
    follow_setup("backbone_choice", current if current in choices else choices[0], choices)
    choice = st.selectbox("Backbone", choices, key="backbone_choice")
    if choice == OWN:
        upload = st.file_uploader(
            "Keras model file (.keras or .h5)", type=[suffix[1:] for suffix in MODEL_FILE_SUFFIXES]
        )
        if upload is not None:
            path = shared.saved_upload("models", upload)
            if path != model.backbone and accepted_model_file(path, upload.name, describe_backbone(model)):
                shared.change_backbone(backbone_settings(path))  # its size, preprocessing and cut come from it
        if not model.is_model_file:
            st.info(
                "Upload a model file to use it as the backbone. It is loaded in safe mode: Lambda layers are refused."
            )
            st.stop()
        st.caption(f"Using your model file **{messages.escape_markdown(model.backbone.rsplit('/', 1)[-1])}**")
        try:
            info = cache.model_file_info(model.backbone)
        except (StudioError, OSError) as error:
            messages.show_error(error, "Upload another model file above, or choose a **Backbone** from the list.")
            st.stop()
        options = preprocess_choices()
        index = options.index(model.preprocess) if model.preprocess in options else 0
        model.preprocess = st.selectbox(
            "Preprocessing the model expects", options, index=index, format_func=preprocess_label
        )
        own, layers = info["image_size"], info["layers"]
        sizes = model_file_size_choices(own, model.image_size)
        model.image_size = st.selectbox(
            SIZE, sizes, index=sizes.index(model.image_size), format_func=lambda size: model_file_size_label(size, own)
        )
        cut = st.selectbox(
            "Cut the model at (its output becomes the feature map)",
            layers,
            index=cut_layer_index(layers, model.cut_layer),
        )
        model.cut_layer = cut_layer_setting(layers, cut)
        controls = "**Input size**, **Cut the model at** or **Preprocessing**"
    elif choice == HUB:
        typed = st.text_input(
            "Preset name, kaggle:// or hf:// handle, or a local preset folder",
            model.backbone[4:] if is_hub_name(model.backbone) else "",
            placeholder=HUB_PRESETS[0],
            help=f"Presets: {', '.join(HUB_PRESETS)}. Offline: a folder written by save_to_preset.",
        )
        if not typed.strip():  # nothing is downloaded or loaded until a source is named
            st.info(hub_prompt(describe_backbone(model)))
            st.stop()
        try:
            chosen = check_hub_source(typed, shared.session_id(), downloads_allowed())
            if chosen != model.backbone:  # its own weights, input size and image converter
                shared.change_backbone(backbone_settings(chosen))
        except StudioError as error:
            messages.show_error(error, "Type a preset name from the list, or the path of a local preset folder.")
            st.stop()
        st.caption(f"Using {messages.escape_markdown(describe_backbone(model))}")
        controls = "the **preset**"
    else:
        spec = BACKBONES[choice]
        if choice != model.backbone:  # a new backbone: its size, weights and preprocessing come from it
            shared.change_backbone(backbone_settings(choice))
        options = weights_choices(spec, local_file=True)
        kind = weights_choice(model.weights)
        follow_setup(f"weights_{choice}", kind, options)  # another backbone, "use random weights", another tab
        kind = st.radio("Weights", options, key=f"weights_{choice}", format_func=WEIGHTS_LABELS.get, horizontal=True)
        weights = kind
        if kind == "file":
            upload = st.file_uploader(f"{choice} weights without the classification top (.h5)", type=["h5"])
            if upload is not None:
                weights = shared.saved_upload("weights", upload)
            elif model.weights in ("imagenet", "none"):
                st.info("Upload the weights file (for example the keras.applications `..._notop.h5` file).")
                st.stop()
            else:
                weights = model.weights
        if weights != model.weights:
            shared.update("model", weights=weights, freeze=default_freeze_plan(weights != "none"))
        value = image_size_value(spec, model.image_size)
        model.image_size = st.select_slider(SIZE, image_size_choices(spec), value=value,
                                            help="Smaller is faster; ImageNet weights were trained at the default.")  # fmt: skip
        controls = "**Weights** or **Input size**"
with right:
    st.markdown("**New head**")
    model.pooling = st.radio("Pooling", POOLING_CHOICES, index=POOLING_CHOICES.index(model.pooling), horizontal=True)
    model.hidden_units = st.select_slider("Hidden dense layer", HIDDEN_UNITS_CHOICES, value=model.hidden_units)
    model.dropout_rate = st.slider("Dropout", 0.0, 0.8, float(model.dropout_rate), 0.05)

from ui.compare_sections import leaderboard_section  # noqa: E402

leaderboard_section(shared.config("data"), model, shared.config("train"))

try:
    backbone = cache.backbone(model)
except StudioError as error:
    messages.show_error(error, f"Change {controls} above, or choose another **Backbone**.")
    if model.weights == "imagenet" and st.button("Use random weights instead (train from scratch)"):
        shared.update("model", weights="none", freeze=FreezePlan("none"))
    st.stop()

from ui.freeze import freeze_editor  # noqa: E402  (TensorFlow loads here)

freeze_editor(model, backbone)
st.page_link("pages/image/train.py", label="Next: train", icon=":material/monitoring:")
