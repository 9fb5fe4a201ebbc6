"""Data-page sections: suspect labels (relabel / exclude) and near-duplicates with leakage."""

from __future__ import annotations

import streamlit as st

from tlcore.config import RunConfig
from tlcore.insight.label_issues import suspicion_words
from ui import cache, messages
from ui.insight import common


def label_issues_section(config: RunConfig, max_rows: int = 24, columns: int = 3) -> None:
    """Suspect labels found by confident learning, with "relabel" and "exclude".

    Decisions are stored in the workspace as an overlay: the files stay where they
    are, and the next training (or analysis) sees the corrected labels.

    Args:
        config: the current setup (``shared.run_config()``).
        max_rows: suspects shown at most.
        columns: thumbnails per row.
    """
    from tlcore.insight.label_issues import HOW_SUSPECTS_ARE_FOUND, SUSPECTS_ORDER, review_labels

    st.subheader("Suspect labels")
    st.caption(HOW_SUSPECTS_ARE_FOUND)
    _kept_decisions(config, max_rows)
    review = common.analysis(
        "label_review",
        config,
        "Find suspect labels",
        "Cross-validating heads…",
        lambda found: review_labels(found, seed=config.train.seed),
        key="label_issues",
    )
    if review is None:
        return
    issues = review.issues()
    (st.info if issues.empty else st.warning)(messages.escape_markdown(review.describe()))
    if issues.empty:
        return
    st.caption(SUSPECTS_ORDER)
    grid = st.columns(columns)
    for index, row in enumerate(issues.head(max_rows).itertuples()):
        with grid[index % columns]:
            _suspect_card(config, row, review.relabel_target(row.given, row.suggested), index)
    st.caption("Relabelled or excluded? Train again to see the effect.")


def _suspect_card(config: RunConfig, row, target: str, index: int) -> None:
    common.show_image(
        row.path,
        f"{common.name(row.path)} ({row.split})  \ngiven **{messages.escape_markdown(row.given)}** · "
        f"suggested **{messages.escape_markdown(row.suggested)}** · {suspicion_words(row.score, row.agreement)}",
    )
    # Each button stores its decision in its callback, before the page reruns to show it.
    decision, choice = common.decision(config, row.path), (config, row.path, row.digest)
    if decision is not None:
        st.caption(f":material/check: {common.done(decision)}")
        st.button("Undo", key=f"undo_{index}", on_click=common.decide, args=(*choice, "undo"))
        return
    left, right = st.columns(2)
    relabel = (*choice, "relabel", target)
    left.button(f"Relabel as {target}", key=f"relabel_{index}", on_click=common.decide, args=relabel)
    right.button("Exclude", key=f"exclude_{index}", on_click=common.decide, args=(*choice, "exclude"))


def _kept_decisions(config: RunConfig, max_rows: int) -> None:
    """The decisions kept in the workspace (a refresh keeps them), each with Undo, and the images they leave."""
    from tlcore.insight.overlay import decisions, images_left

    folders = common.roots(config)
    kept = decisions(folders, config.data.owner)
    if not kept:
        return
    # Scan what the visitor chose (a folder, or a .zip whose extraction folder is the studio's own
    # and not readable by path), as the Data page and training do.
    sources = filter(None, (config.data.data_dir, config.data.val_dir))
    scans = [cache.scan(source, config.data.skip_placeholders) for source in sources]
    left = messages.escape_markdown(images_left(scans, config.data.owner))
    st.markdown(f"**Your label decisions ({len(kept)})** · images left: {left}")
    for index, (path, decision) in enumerate(kept[:max_rows]):
        text, undo = st.columns([6, 1], vertical_alignment="center")
        text.caption(f"{common.name(path)}: {common.done(decision)}")
        undo.button("Undo", key=f"kept_undo_{index}", on_click=common.decide, args=(config, path, "", "undo"))
    if len(kept) > max_rows:
        st.caption(f"…and {len(kept) - max_rows} more (undo some to see them).")


def near_duplicates_section(config: RunConfig, max_pairs: int = 12) -> None:
    """Same-photo pairs side by side (a leak when across training and validation), then look-alikes.

    Args:
        config: the current setup.
        max_pairs: pairs shown at most per list.
    """
    from tlcore.insight import duplicates

    st.subheader("Duplicates and leakage")
    st.caption(duplicates.HOW_PAIRS_ARE_FOUND)
    found = common.recall("dup_features", config)
    if st.button("Find duplicates", key="near_duplicates"):
        found = common.features(config)
        if found is None:
            return
        common.remember("dup_features", config, found)
    if found is None:
        return
    with st.spinner("Comparing features, then pixels…"):
        pairs = duplicates.near_duplicates(found)
    st.caption(messages.escape_markdown(pairs.attrs["thresholds"].describe()))
    same, similar = pairs[pairs["kind"] == duplicates.SAME], pairs[pairs["kind"] == duplicates.SIMILAR]
    if pairs.empty:
        st.success("No copies and no unusually alike pairs: every photo is a different picture. Nothing to do.")
        return
    leak = duplicates.leakage(found, pairs)
    cols = st.columns(3)
    cols[0].metric("Same-photo pairs", len(same))
    cols[1].metric("Validation images also in training", len(leak.leaked))
    if leak.accuracy_change is not None:
        cols[2].metric("Validation accuracy (head on features) → without leaks", leak.accuracy_change)
    (st.warning if leak.leaked else st.success)(messages.escape_markdown(leak.describe()))
    for index, row in enumerate(same.head(max_pairs).itertuples()):
        _pair_row(config, found, row, f"same_{index}")
    if len(same) > max_pairs:
        st.caption(f"…and {len(same) - max_pairs} more same-photo pairs.")
    if not similar.empty:
        with st.expander(f"{len(similar)} similar photos: alike, but different pictures (not copies, not leaks)"):
            for index, row in enumerate(similar.head(max_pairs).itertuples()):
                _pair_row(config, found, row, f"similar_{index}")


def _pair_row(config: RunConfig, found, row, key: str) -> None:
    from tlcore.insight import duplicates

    st.markdown(f"**{row.kind}** · {row.where} · {duplicates.pair_scores(row.kind, row.similarity, row.pixels)}")
    left, right, actions = st.columns([2, 2, 1])
    with left:
        common.show_image(row.a, f"{common.name(row.a)} · {messages.escape_markdown(row.a_label)}")
    with right:
        common.show_image(row.b, f"{common.name(row.b)} · {messages.escape_markdown(row.b_label)}")
    item = {item.path: item for item in found.all_items}.get(row.a)
    with actions:
        if common.decision(config, row.a) is not None:
            st.caption(f"{common.name(row.a)} excluded")
        elif item is not None:
            exclude = (config, item.path, item.digest, "exclude")
            st.button("Exclude the left one", key=f"dup_exclude_{key}", on_click=common.decide, args=exclude)
