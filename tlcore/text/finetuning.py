"""Fine-tuning GPT-2 on the user's own text, as a job with the image studio's progress log.

``finetune`` is a short composition of steps: prepare a model copy, optionally add
LoRA adapters, build the token dataset once, fit and measure, save a local preset.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tlcore.errors import StudioError, first_line
from tlcore.text.generation import forget_compiled, generate
from tlcore.text.models import context_length, load_gpt2_fresh
from tlcore.text.sampling import SamplerConfig

# Learning rates that visibly learn within the few steps a short text gives (3 epochs of
# "The cat sat on the mat. " x 20 at sequence length 32: 6 steps). Measured on a small
# GPT-2 first fine-tuned on English prose (loss before -> after, LoRA rank 4):
#   LoRA 5e-5: 7.24 -> 7.24, before == after    LoRA 1e-3: 7.24 -> 7.235
#   LoRA 3e-3: 7.24 -> 7.21                       LoRA 1e-2: 7.24 -> 6.84
#   all weights 5e-5: 7.24 -> 7.10 (10 epochs: 6.58)
# LoRA adapters start at zero (lora_b) and move only the attention's query/value
# projections, so they need a much larger step than fine-tuning every weight.
DEFAULT_LEARNING_RATE = {"full": 5e-5, "lora": 1e-2}
# The values the Text page offers (each default above is among the learning rates).
LEARNING_RATE_CHOICES = (1e-5, 3e-5, 5e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
LORA_RANK_CHOICES = (0, 2, 4, 8, 16)  # 0: every weight trains
SEQUENCE_LENGTH_CHOICES = (32, 64, 128, 256, 512)
BATCH_SIZE_CHOICES = (1, 2, 4, 8, 16)
# Training without XLA, measured with bench/gpt2_generate.py (GPT-2 124M, batches of
# 4 x 128 tokens, 2 shared CPU cores), warm tokens/s without / with XLA: 79 / 129 in one
# run, 142 / 82 in another; compiling costs ~130 s up front (first epoch 173 s with XLA,
# 45 s without). It does not measurably pay, and a user's run is usually a few epochs.
FIT_JIT_COMPILE = False


@dataclass
class TextConfig:
    """A fine-tuning run on the user's own text.

    Attributes:
        model: preset name, ``hf://`` handle or local preset folder to start from.
        sequence_length: tokens per training sequence.
        epochs: passes over the text.
        batch_size: sequences per step.
        learning_rate: AdamW learning rate; ``None`` takes the default for the mode
            (:data:`DEFAULT_LEARNING_RATE`: 5e-5 for all weights, 1e-2 for LoRA).
        lora_rank: 0 fine-tunes every weight; > 0 trains only LoRA adapters of that rank.
        seed: seeds shuffling and initialisation.
        sample_prompt: prompt used for the before/after comparison.
    """

    model: str = "gpt2_base_en"
    sequence_length: int = 128
    epochs: int = 3
    batch_size: int = 4
    learning_rate: float | None = None
    lora_rank: int = 0
    seed: int = 42
    sample_prompt: str = ""

    @property
    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return DEFAULT_LEARNING_RATE["lora" if self.lora_rank else "full"]

    def validate(self) -> None:
        checks = [
            ("sequence_length", self.sequence_length, 8, 1024),
            ("epochs", self.epochs, 1, 1000),
            ("batch_size", self.batch_size, 1, 256),
            ("lora_rank", self.lora_rank, 0, 256),
        ]
        for name, value, low, high in checks:
            if not (isinstance(value, int) and low <= value <= high):
                raise StudioError(
                    f"`{name}` should be an integer between {low} and {high}. Received: {name}={value!r}."
                )
        if not 1e-7 <= self.effective_learning_rate <= 1.0:
            raise StudioError(f"`learning_rate` should be between 1e-7 and 1. Received: {self.learning_rate}.")


def chunk_text(tokenizer, text: str, sequence_length: int) -> list[str]:
    """Splits text into training pieces of about ``sequence_length`` tokens each.

    Raises:
        StudioError: no text to train on.
    """
    if not text or not text.strip():
        raise StudioError("There is no text to train on. Upload .txt/.md files or paste some text.")
    ids = [int(i) for i in tokenizer(text)]
    # The preprocessor adds start/end tokens: keep two positions free.
    step = max(1, sequence_length - 2)
    pieces = [ids[start : start + step] for start in range(0, len(ids), step)]
    return [tokenizer.detokenize(piece) for piece in pieces if piece]


def read_text_files(files: list[tuple[str, bytes]], max_bytes: int = 20 * 2**20, pasted: str = "") -> str:
    """Joins uploaded .txt/.md files and pasted text; refuses binary or oversized input with a clear message.

    Pasted text counts toward the same limit as the files (its UTF-8 bytes).
    """
    pasted_bytes = len(pasted.encode("utf-8")) if pasted.strip() else 0
    total = sum(len(data) for _, data in files) + pasted_bytes
    if total > max_bytes:
        what = "The text files and the pasted text" if pasted_bytes and files else "The text files"
        what = "The pasted text" if pasted_bytes and not files else what
        raise StudioError(f"{what} total {total / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    parts = []
    for name, data in files:
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise StudioError(f"{name} is not UTF-8 text. Upload plain .txt or .md files.") from None
    return "\n\n".join(parts + ([pasted] if pasted_bytes else []))


# ----------------------------------------------------------------------------- the steps


def prepare_model(config: TextConfig, model=None):
    """The model to train: ``model`` if given, else a fresh copy (the cached one keeps serving)."""
    causal_lm = load_gpt2_fresh(config.model) if model is None else model
    if config.sequence_length > context_length(causal_lm):
        raise StudioError(
            f"`sequence_length` should be at most the model's context of {context_length(causal_lm)} tokens. "
            f"Received: sequence_length={config.sequence_length}. Choose a shorter sequence length."
        )
    causal_lm.preprocessor.sequence_length = config.sequence_length
    return causal_lm


def comparison_prompt(causal_lm, config: TextConfig, pieces: list[str]) -> tuple[str, SamplerConfig]:
    """The before/after prompt (the user's, else the text's first words) and greedy settings for it."""
    tokenizer = causal_lm.preprocessor.tokenizer
    prompt = config.sample_prompt.strip() or tokenizer.detokenize([int(i) for i in tokenizer(pieces[0])][:8])
    length = min(context_length(causal_lm), len(tokenizer(prompt)) + 41)
    return prompt, SamplerConfig(sampler="greedy", max_length=length)


def apply_lora(causal_lm, rank: int) -> None:
    """With ``rank`` > 0, adds LoRA adapters and freezes everything else."""
    if not rank:
        return
    causal_lm.backbone.enable_lora(rank)
    # enable_lora freezes the adapted kernels but leaves their biases (and the layer
    # norms) trainable; LoRA here means: only the adapters learn.
    for variable in causal_lm.backbone.trainable_weights:
        if "lora" not in variable.path:
            variable.trainable = False
    forget_compiled(causal_lm)  # generate functions traced before LoRA would ignore the adapters


def token_dataset(preprocessor, pieces: list[str], config: TextConfig):
    """A shuffled, batched dataset of (token ids, labels, weights), tokenized once.

    With the preprocessor attached, fit would re-run BPE on every epoch.
    """
    import tensorflow as tf

    features, labels, weights = preprocessor(tf.constant(pieces))
    return (
        tf.data.Dataset.from_tensor_slices((features, labels, weights))
        .shuffle(len(pieces), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
    )


def compile_for_training(causal_lm, config: TextConfig) -> None:
    import keras

    keras.utils.set_random_seed(config.seed)
    causal_lm.compile(
        optimizer=keras.optimizers.AdamW(config.effective_learning_rate, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
        jit_compile=FIT_JIT_COMPILE,
    )


def fit_and_measure(causal_lm, data, config: TextConfig, log, stop) -> dict:
    """Loss before, fit with the progress callback, loss after; tokens/s of training."""
    from tlcore.training.callbacks import ProgressCallback

    preprocessor, causal_lm.preprocessor = causal_lm.preprocessor, None  # data is tokenized already
    try:
        loss_before = float(causal_lm.evaluate(data, verbose=0)[0])
        log.append("phase", phase="fine-tune-text", epochs=config.epochs)
        start = time.perf_counter()
        callback = ProgressCallback(log, "fine-tune-text", stop)
        history = causal_lm.fit(data, epochs=config.epochs, verbose=0, shuffle=False, callbacks=[callback])
        seconds = time.perf_counter() - start
        loss_after = float(causal_lm.evaluate(data, verbose=0)[0])
    finally:
        causal_lm.preprocessor = preprocessor
    tokens = _tokens_per_epoch(data) * len(history.epoch)
    return {
        "loss_before": loss_before,
        "loss_after": loss_after,
        "train_seconds": seconds,
        "train_tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
    }


def _tokens_per_epoch(data) -> int:
    return int(sum(float(weights.numpy().sum()) for _, _, weights in data))


def save_run(causal_lm, out_dir: Path, config: TextConfig, log, metrics: dict) -> None:
    """``preset/``, the LoRA adapter, ``history.csv`` (with perplexity) and ``metrics.json``."""
    causal_lm.save_to_preset(str(out_dir / "preset"))
    if config.lora_rank:
        causal_lm.backbone.save_lora_weights(str(out_dir / "adapter.lora.h5"))
    perplexity_frame(log, full=True).to_csv(out_dir / "history.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))


def finetune(config: TextConfig, text: str, out_dir: str | Path, *, log=None, stop=None, model=None) -> dict:
    """Fine-tunes GPT-2 on ``text`` and saves the result as a local preset in ``out_dir/preset``.

    Args:
        config: the fine-tuning settings.
        text: the training text.
        out_dir: the run folder (``preset/``, ``adapter.lora.h5``, ``history.csv``, ``metrics.json``).
        log: a :class:`~tlcore.jobs.ProgressLog` for the live chart.
        stop: an event; set, training stops after the current batch.
        model: a loaded ``GPT2CausalLM`` (tests pass a tiny one); loaded from config otherwise.

    Returns:
        Metrics: loss before/after, perplexity, generations before and after, notes on
        the comparison, timings and training tokens/s.
    """
    from tlcore.jobs import ProgressLog

    config.validate()
    log, stop = (log if log is not None else ProgressLog()), (stop or threading.Event())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.append("status", status="loading model")
    causal_lm = prepare_model(config, model)
    pieces = chunk_text(causal_lm.preprocessor.tokenizer, text, config.sequence_length)
    prompt, sample = comparison_prompt(causal_lm, config, pieces)
    before = generate(causal_lm, prompt, sample).texts[0]
    apply_lora(causal_lm, config.lora_rank)
    compile_for_training(causal_lm, config)
    measured = fit_and_measure(causal_lm, token_dataset(causal_lm.preprocessor, pieces, config), config, log, stop)
    after = generate(causal_lm, prompt, sample).texts[0]
    metrics = {
        **measured,
        "perplexity_before": math.exp(measured["loss_before"]),
        "perplexity_after": math.exp(measured["loss_after"]),
        "sequences": len(pieces),
        "epochs_run": len(log.records(kind="epoch")),
        "stopped_early_by_user": stop.is_set(),
        **{"prompt": prompt, "before": before, "after": after},
        "notes": comparison_notes(prompt, before, after, measured["loss_before"], measured["loss_after"]),
        "config": {**asdict(config), "learning_rate": config.effective_learning_rate},
    }
    save_run(causal_lm, out_dir, config, log, metrics)
    log.append("status", status="stopped" if stop.is_set() else "done")
    return metrics


def comparison_notes(prompt: str, before: str, after: str, loss_before: float, loss_after: float) -> list[str]:
    """Sentences that explain a surprising before/after comparison to the user."""
    notes = []
    if after.strip() == prompt.strip():
        notes.append(
            "After fine-tuning, the model ends the text right after the prompt: its most likely next token is "
            "the end-of-text marker, which it learned from the end of every training piece. Try a prompt that "
            "starts a sentence of your text, or fine-tune on more text."
        )
    elif after == before:
        notes.append(
            f"The greedy continuation did not change: the loss moved only from {loss_before:.2f} to "
            f"{loss_after:.2f}, too little to change the most likely tokens. Train more epochs or raise the "
            "learning rate."
        )
    return notes


def trainable_parameter_names(causal_lm) -> list[str]:
    return [weight.path for weight in causal_lm.backbone.trainable_weights]


def start_finetune(registry, owner: str, config: TextConfig, text_value: str, runs_root: str | Path):
    """Starts text fine-tuning as a background job; the run gets a folder of the run store."""
    from tlcore.runs.store import RunStore

    config.validate()
    if not text_value or not text_value.strip():
        raise StudioError("There is no text to train on. Upload .txt/.md files or paste some text.")

    def target(job):
        from tlcore.runs.store import set_status

        run_dir = RunStore(runs_root, owner=owner).create(name=f"text-{Path(config.model).name}", kind="text")
        job.run_dir = str(run_dir)
        try:
            metrics = finetune(config, text_value, run_dir, log=job.log, stop=job.stop)
        except Exception as error:  # the run folder says so too (the Runs page lists it), then the job fails
            set_status(run_dir, "failed", error=first_line(error))
            raise
        set_status(run_dir, "stopped" if job.stop.is_set() else "done")
        return metrics

    title = f"GPT-2 fine-tune from {Path(config.model).name}"
    return registry.start(owner, "text-finetune", title, target, epochs=config.epochs)


def perplexity_frame(log, full: bool = False):
    """Per-epoch loss and perplexity from a fine-tuning job's log (for the live chart).

    With ``full``, every history column is kept (what ``history.csv`` stores).
    """
    import numpy as np

    from tlcore.jobs import history_frame

    history = history_frame(log)
    history = history.copy() if full else history[["epoch", "loss"]].copy()
    history["perplexity"] = np.exp(history["loss"].astype(float))
    return history
