import streamlit as st

from pages.studio import shared
from pages.studio.job_panel import job_panel
from pages.text.results import finished, quoted
from tlcore import charts
from tlcore.errors import StudioError
from tlcore.text import DEFAULT_LEARNING_RATE, PRESETS, SAMPLERS, SamplerConfig, TextConfig

SPEEDS = {"standard (float32)": "none", "fast (int8)": "int8"}


st.title("Text (GPT-2)")
st.caption(
    "The same idea as the image studio, for language: start from GPT-2, pretrained on web text, and adapt it to yours."
)

source_kind = st.radio(
    "Model", ["KerasHub preset (downloaded once)", "Hugging Face (hf://…)", "Local preset folder"], horizontal=True
)
if source_kind.startswith("KerasHub"):
    model_source = st.selectbox("Preset", PRESETS)
elif source_kind.startswith("Hugging"):
    model_source = st.text_input("Handle", "hf://openai-community/gpt2")
else:
    model_source = st.text_input("Folder", st.session_state.get("text_preset", ""), placeholder="runs/text-…/preset")
speed = st.radio(
    "Speed",
    list(SPEEDS),
    horizontal=True,
    help="fast (int8) stores the weights as 8-bit integers and compiles with XLA: about 1.5x the tokens/s on a "
    "CPU for a small loss in quality (see the README). The first click with new settings compiles; later clicks "
    "run warm.",
)


@st.cache_resource(show_spinner="Loading GPT-2…", max_entries=2)
def cached_model(source: str, quantization: str):
    from tlcore.text import load_gpt2

    return load_gpt2(source, quantization)


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
    samples = 1 if deterministic else int(samples)

if st.button("Generate", type="primary"):
    from tlcore.text import generate

    try:
        model = cached_model(model_source, SPEEDS[speed])
        outputs = []
        for index in range(samples):
            settings = SamplerConfig(
                sampler, int(k), float(p), int(beams), float(temperature), int(max_length), int(seed) + index
            )
            outputs.append(generate(model, prompt, settings))
        for column, output in zip(st.columns(len(outputs)), outputs):
            column.markdown(quoted(output.texts[0]))
            column.caption(
                f"{output.new_tokens} new tokens · {output.tokens_per_second:.1f} tokens/s"
                + (
                    " (first run with these settings, compiling included; the next click runs warm)"
                    if output.compiled
                    else ""
                )
            )
    except StudioError as error:
        shared.show_error(error)

st.divider()
st.subheader("Fine-tune on your own text")
uploads = st.file_uploader("Text files (.txt, .md)", type=["txt", "md"], accept_multiple_files=True)
pasted = st.text_area("…or paste text", height=120)
cols = st.columns(5)
epochs = cols[0].number_input("Epochs", 1, 200, 3)
lora = cols[3].select_slider("LoRA rank (0 = all weights)", [0, 2, 4, 8, 16], value=4)
lr = cols[1].select_slider(
    "Learning rate",
    [1e-5, 3e-5, 5e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    value=DEFAULT_LEARNING_RATE["lora" if lora else "full"],
    format_func=lambda r: f"{r:g}",
    help="LoRA adapters start at zero and need a larger step (default 1e-2) than fine-tuning every weight "
    "(default 5e-5).",
)
sequence_length = cols[2].select_slider("Sequence length", [32, 64, 128, 256, 512], value=128)
batch = cols[4].select_slider("Batch size", [1, 2, 4, 8, 16], value=4)
job = shared.current_job("text")
running = job is not None and job.active
if st.button("Start fine-tuning", disabled=running):
    from tlcore.runs import runs_root
    from tlcore.text import read_text_files, start_finetune

    try:
        corpus = read_text_files([(f.name, f.getvalue()) for f in uploads or []]) + (
            "\n\n" + pasted if pasted.strip() else ""
        )
        config = TextConfig(
            model_source, int(sequence_length), int(epochs), int(batch), float(lr), int(lora), sample_prompt=prompt
        )
        shared.remember_job(start_finetune(shared.registry(), shared.session_id(), config, corpus, runs_root()))
        st.rerun()
    except StudioError as error:
        shared.show_error(error)


def figure(job):
    from tlcore.text import perplexity_frame

    return charts.text_finetune_figure(perplexity_frame(job.log))


if job is not None and job.kind == "text-finetune":
    job_panel(job, figure, finished, chart_key="text_chart")
