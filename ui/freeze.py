"""The Model page's "which layers train?" section: plan buttons, the layer table, totals."""

import streamlit as st

from tlcore.config import FreezePlan
from tlcore.errors import StudioError
from tlcore.model.choices import describe_freeze_plan
from tlcore.model.classifier import layer_table, plan_totals, trainable_names
from ui import shared


def set_plan(model, plan: FreezePlan) -> None:
    model.freeze = plan
    st.session_state.freeze_version = st.session_state.get("freeze_version", 0) + 1
    st.rerun()


def freeze_editor(model, backbone) -> None:
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
    if actions[0].button("Freeze all", help="Fixed feature extractor: only the new head trains (fastest)."):
        set_plan(model, FreezePlan("all"))
    if actions[1].button("Unfreeze all"):
        set_plan(model, FreezePlan("none"))
    if blocks:
        start_block = actions[2].selectbox("Unfreeze from block", blocks, index=len(blocks) - 1,
                                           label_visibility="collapsed")  # fmt: skip
        if actions[2].button(f"Unfreeze from {start_block}"):
            set_plan(model, FreezePlan("from", start_block))
    # A backbone with fewer than 10 such layers (a KerasHub model is one layer, a small model file…).
    top = actions[3].number_input("Top N layers with weights", 1, len(table), min(10, len(table)),
                                  label_visibility="collapsed")  # fmt: skip
    if actions[3].button(f"Top {top} trainable"):
        set_plan(model, FreezePlan("top", int(top)))

    edited = st.data_editor(
        table,
        column_config={"trainable": st.column_config.CheckboxColumn("trainable", help="Tick to train this layer")},
        disabled=["index", "name", "type", "block", "parameters"],
        hide_index=True,
        height=320,
        width="stretch",
        key=f"layers_{st.session_state.setdefault('freeze_version', 0)}",
    )
    ticked = set(edited.loc[edited["trainable"], "name"])
    if ticked != current_names:
        model.freeze = FreezePlan("layers", sorted(ticked))
    st.caption(f"Phase 1 (the Train page's first phase): {describe_freeze_plan(model.freeze)}.")
    if backbone.pretrained:
        st.caption(
            "BatchNormalization layers of a pretrained backbone always stay frozen (inference mode), "
            "so their statistics survive fine-tuning."
        )
    num_classes = shared.class_count()  # set by the Data page
    totals = plan_totals(backbone, model.freeze, num_classes, model)
    metrics = st.columns(3)
    metrics[0].metric("Trainable parameters", f"{totals['trainable']:,}")
    metrics[1].metric("Frozen parameters", f"{totals['frozen']:,}")
    metrics[2].metric("Total", f"{totals['total']:,}")
    st.caption(
        f"Head: {totals['head']:,} parameters for {num_classes} classes. "
        f"Feature map {tuple(backbone.model.output.shape[1:])}."
    )
