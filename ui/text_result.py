"""How the Text page shows generated text and a finished fine-tuning job."""

import re

import streamlit as st


def quoted(text: str) -> str:
    """A Markdown blockquote that shows generated text literally: every line stays inside the quote."""
    lines = re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$:=])", r"\\\1", str(text)).splitlines() or [""]
    lines = [re.sub(r"^[ \t]+", lambda m: "&nbsp;" * len(m.group()), line) for line in lines]
    return "\n".join(f"> {line}  " if line.strip() else ">" for line in lines)


def finished(job) -> None:
    metrics, run_dir = job.result or {}, job.run_dir
    st.success(
        f"Done: loss {metrics.get('loss_before', 0):.2f} → {metrics.get('loss_after', 0):.2f}. "
        f"Saved to `{run_dir}/preset`."
    )
    st.session_state.text_preset = f"{run_dir}/preset"
    before, after = st.columns(2)
    before.markdown("**Before**")
    before.markdown(quoted(metrics.get("before", "")))
    after.markdown("**After**")
    after.markdown(quoted(metrics.get("after", "")))
    for note in metrics.get("notes", []):
        st.info(note)
