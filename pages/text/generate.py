import streamlit as st

from tlcore import charts
from tlcore.errors import StudioError
from tlcore.text.finetuning import (
    BATCH_SIZE_CHOICES,
    DEFAULT_LEARNING_RATE,
    LEARNING_RATE_CHOICES,
    LORA_RANK_CHOICES,
    SEQUENCE_LENGTH_CHOICES,
    TextConfig,
)
from tlcore.text.models import (
    MODEL_SOURCE_KINDS,
    PRESET_FOLDER_HOWTO,
    PRESETS,
    QUANTIZATIONS,
    SPEED_HELP,
    SPEED_LABELS,
)
from tlcore.text.sampling import SAMPLERS, SamplerConfig
from ui import cache, messages, shared
from ui.identity import downloads_allowed
from ui.job_panel import job_panel, start_task, task_outcome
from ui.text_result import finished, quoted

st.title("Text (GPT-2)")
st.caption(
    "The same idea as the image studio, for language: start from GPT-2, pretrained on web text, and adapt it to yours."
)

source_kind = st.radio("Model", list(MODEL_SOURCE_KINDS.values()), horizontal=True)
if source_kind == MODEL_SOURCE_KINDS["preset"]:
    model_source = st.selectbox("Preset", PRESETS)
elif source_kind == MODEL_SOURCE_KINDS["hf"]:
    model_source = st.text_input("Handle", "hf://openai-community/gpt2")
else:
    model_source = st.text_input("Folder", st.session_state.get("text_preset", ""), placeholder="runs/text-…/preset")
downloads = downloads_allowed()
if not downloads and source_kind != MODEL_SOURCE_KINDS["local"]:
    st.info(
        "This server does not download models visitors name: whoever runs it has not allowed it "
        f"(TLCORE_ALLOW_DOWNLOADS=1). {messages.escape_markdown(PRESET_FOLDER_HOWTO)}",
        icon=":material/cloud_off:",
    )


def checked_source() -> str:
    """The model source, fenced: downloads only where allowed, folders only where this visitor may read."""
    from tlcore.text.models import check_model_source

    return check_model_source(model_source, cache.store(), shared.session_id(), downloads)


quantization = st.radio("Speed", QUANTIZATIONS, format_func=SPEED_LABELS.get, horizontal=True, help=SPEED_HELP)


prompt = st.text_area("Prompt", "Transfer learning is", height=100)
with st.expander("Sampler", expanded=True):
    cols = st.columns(4)
    sampler = cols[0].selectbox("Sampler", SAMPLERS, index=SAMPLERS.index("top_k"))
    max_length = cols[1].number_input("Max length (tokens, prompt included)", 1, 4096, 64)
    deterministic = SamplerConfig(sampler).deterministic
    temperature = cols[2].slider("Temperature", 0.1, 2.0, 1.0, 0.05, disabled=deterministic)
    seed = cols[3].number_input("Seed", 0, 2**31 - 1, 42, disabled=deterministic)
    cols = st.columns(4)
    k = cols[0].number_input("k (top-k)", 1, 1000, 40, disabled=sampler != "top_k")
    p = cols[1].slider("p (top-p)", 0.05, 1.0, 0.9, 0.05, disabled=sampler != "top_p")
    beams = cols[2].number_input("Beams", 1, 16, 4, disabled=sampler != "beam")
    samples = cols[3].number_input(
        "Samples side by side",
        1,
        4,
        2,
        disabled=deterministic,
        help="Greedy and beam search always give the same text for a prompt, so they show one sample.",
    )


if st.button("Generate", type="primary"):
    from tlcore.text.generation import generate_samples

    try:
        setting = SamplerConfig(sampler, int(k), float(p), int(beams), float(temperature), int(max_length), int(seed))
        source, settings = checked_source(), setting.side_by_side(int(samples))
        start_task(
            "generate",
            "generate",
            "Generating text",
            lambda job: generate_samples(source, quantization, prompt, settings, job.log, job.stop),
        )
    except StudioError as error:
        messages.show_error(error)
outputs = task_outcome("generate")  # progress and Stop while GPT-2 loads and writes
if outputs:
    for column, output in zip(st.columns(len(outputs)), outputs):
        column.markdown(quoted(output.texts[0]))
        column.caption(output.speed())

st.divider()
st.subheader("Fine-tune on your own text")
uploads = st.file_uploader("Text files (.txt, .md)", type=["txt", "md"], accept_multiple_files=True)
pasted = st.text_area("…or paste text", height=120)
cols = st.columns(5)
epochs = cols[0].number_input("Epochs", 1, 200, 3)
lora = cols[3].select_slider("LoRA rank (0 = all weights)", LORA_RANK_CHOICES, value=4)
lr = cols[1].select_slider(
    "Learning rate",
    LEARNING_RATE_CHOICES,
    value=DEFAULT_LEARNING_RATE["lora" if lora else "full"],
    format_func=lambda r: f"{r:g}",
    help="LoRA adapters start at zero and need a larger step (default 1e-2) than fine-tuning every weight "
    "(default 5e-5).",
)
sequence_length = cols[2].select_slider("Sequence length", SEQUENCE_LENGTH_CHOICES, value=128)
batch = cols[4].select_slider("Batch size", BATCH_SIZE_CHOICES, value=4)
job = shared.current_job("text")
running = job is not None and job.active
if st.button("Start fine-tuning", disabled=running):
    from tlcore.paths import runs_dir
    from tlcore.text.finetuning import read_text_files, start_finetune

    try:
        corpus = read_text_files([(f.name, f.getvalue()) for f in uploads or []], pasted=pasted)
        config = TextConfig(
            checked_source(), int(sequence_length), int(epochs), int(batch), float(lr), int(lora), sample_prompt=prompt
        )
        shared.remember_job(start_finetune(shared.registry(), shared.session_id(), config, corpus, runs_dir()))
        st.rerun()
    except StudioError as error:
        messages.show_error(error)


def figure(job):
    from tlcore.text.finetuning import perplexity_frame

    return charts.text_finetune_figure(perplexity_frame(job.log))


if job is not None and job.kind == "text-finetune":
    job_panel(job, figure, finished, chart_key="text_chart")
