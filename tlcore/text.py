"""GPT-2 through KerasHub: load, generate with a chosen sampler, fine-tune on your own text.

Models come from a KerasHub preset name (downloaded once), an ``hf://`` checkpoint, or a
local preset directory (what fine-tuning saves). Loaded models are cached per process.
Fine-tuning runs as a job with the same :class:`~tlcore.jobs.ProgressLog` as image
training, so the dashboard draws its loss/perplexity chart the same way.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tlcore.errors import StudioError

PRESETS = ("gpt2_base_en", "gpt2_medium_en", "gpt2_large_en", "gpt2_extra_large_en")
SAMPLERS = ("greedy", "top_k", "top_p", "beam", "random")
MAX_PROMPT_CHARACTERS = 20_000

_MODELS: dict[str, object] = {}
_MODELS_LOCK = threading.Lock()


@dataclass
class SamplerConfig:
    """How tokens are chosen during generation.

    Attributes:
        sampler: ``"greedy"``, ``"top_k"``, ``"top_p"``, ``"beam"`` or ``"random"``.
        k: candidates kept by top-k.
        p: probability mass kept by top-p (nucleus).
        num_beams: beams of beam search.
        temperature: > 1 flattens, < 1 sharpens the distribution (sampling samplers).
        max_length: total length in tokens, prompt included.
        seed: makes sampling reproducible.
    """

    sampler: str = "top_k"
    k: int = 40
    p: float = 0.9
    num_beams: int = 4
    temperature: float = 1.0
    max_length: int = 64
    seed: int = 42

    def validate(self, context_length: int) -> None:
        if self.sampler not in SAMPLERS:
            raise StudioError(f"Unknown sampler. Expected one of {list(SAMPLERS)}. Received: sampler={self.sampler!r}.")
        if not (isinstance(self.max_length, int) and 1 <= self.max_length <= context_length):
            raise StudioError(
                f"`max_length` (prompt plus new tokens) should be between 1 and the model's context of "
                f"{context_length} tokens. Received: max_length={self.max_length!r}."
            )
        if not 1 <= self.k <= 10_000:
            raise StudioError(f"`k` should be between 1 and 10000. Received: k={self.k}.")
        if not 0.0 < self.p <= 1.0:
            raise StudioError(f"`p` should be in (0, 1]. Received: p={self.p}.")
        if not 1 <= self.num_beams <= 16:
            raise StudioError(f"`num_beams` should be between 1 and 16. Received: num_beams={self.num_beams}.")
        if not 0.05 <= self.temperature <= 5.0:
            raise StudioError(f"`temperature` should be between 0.05 and 5. Received: temperature={self.temperature}.")

    def make_sampler(self):
        import keras_hub

        samplers = keras_hub.samplers
        if self.sampler == "greedy":
            return samplers.GreedySampler()
        if self.sampler == "beam":
            return samplers.BeamSampler(num_beams=self.num_beams)
        if self.sampler == "top_k":
            return samplers.TopKSampler(k=self.k, seed=self.seed, temperature=self.temperature)
        if self.sampler == "top_p":
            return samplers.TopPSampler(p=self.p, seed=self.seed, temperature=self.temperature)
        return samplers.RandomSampler(seed=self.seed, temperature=self.temperature)


# ----------------------------------------------------------------------------- loading


def load_gpt2(source: str):
    """A ``GPT2CausalLM`` from a preset name, ``hf://`` handle or local preset directory (cached).

    Raises:
        StudioError: unknown name, missing directory, or a download that failed; the
            message says what could not be fetched and how to use a local preset.
    """
    source = (source or "").strip()
    if not source:
        raise StudioError(
            f"No model given. Expected a preset ({', '.join(PRESETS)}), an hf:// handle or a preset folder."
        )
    with _MODELS_LOCK:
        if source in _MODELS:
            return _MODELS[source]
    model = load_gpt2_fresh(source)
    with _MODELS_LOCK:
        _MODELS[source] = model
    return model


def load_gpt2_fresh(source: str):
    """Like :func:`load_gpt2` but always a new model object (fine-tuning trains its own copy)."""
    source = (source or "").strip()
    is_remote = source in PRESETS or source.startswith(("hf://", "kaggle://"))
    if not is_remote:
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            raise StudioError(
                f"Unknown model {source!r}. Expected a preset name ({', '.join(PRESETS)}), an hf:// handle, "
                "or a folder saved by fine-tuning (with config.json inside)."
            )
        source = str(path)
    import keras_hub

    try:
        model = keras_hub.models.GPT2CausalLM.from_preset(source)
    except Exception as error:  # downloads fail in many ways (DNS, HTTP, auth): all mean "not available"
        if is_remote:
            raise StudioError(
                f"Could not download {source!r} ({_first_line(error)}). No internet access? Download it on a "
                "connected machine (keras_hub.models.GPT2CausalLM.from_preset(...).save_to_preset(folder)) "
                "and point to that folder instead."
            ) from None
        raise StudioError(f"{source} is not a loadable GPT-2 preset folder ({_first_line(error)}).") from None
    return model


def forget_model(source: str) -> None:
    with _MODELS_LOCK:
        _MODELS.pop(source, None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def context_length(model) -> int:
    return int(model.backbone.max_sequence_length)


def build_tokenizer(vocabulary_json: str | Path, merges_bpe: str | Path):
    """The GPT-2 byte-level BPE tokenizer from OpenAI's ``encoder.json`` and ``vocab.bpe``."""
    import keras_hub

    vocabulary = json.loads(Path(vocabulary_json).read_text(encoding="utf-8"))
    merges = [
        line
        for line in Path(merges_bpe).read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#version")
    ]
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)


def build_gpt2(
    tokenizer,
    num_layers: int = 12,
    num_heads: int = 12,
    hidden_dim: int = 768,
    intermediate_dim: int = 3072,
    max_sequence_length: int = 1024,
    sequence_length: int = 128,
    seed: int = 0,
):
    """A randomly initialised GPT-2 (defaults: the 124M gpt2_base_en configuration)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        max_sequence_length=max_sequence_length,
    )
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=sequence_length)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


# ----------------------------------------------------------------------------- generation


def check_prompt(model, prompt: str, max_length: int) -> int:
    """Validates a prompt; returns its length in tokens.

    Raises:
        StudioError: empty or whitespace-only, too long for the context, or no room
            left for new tokens within ``max_length``.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise StudioError("The prompt is empty. Type some text for the model to continue.")
    if len(prompt) > MAX_PROMPT_CHARACTERS:
        raise StudioError(
            f"The prompt has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARACTERS:,}. Shorten it."
        )
    tokens = len(model.preprocessor.tokenizer(prompt))
    limit = context_length(model)
    if tokens >= limit:
        raise StudioError(f"The prompt is {tokens} tokens; the model's context is {limit}. Shorten the prompt.")
    if tokens >= max_length:
        raise StudioError(
            f"The prompt is already {tokens} tokens, so max_length={max_length} leaves no room for new text. "
            f"Raise the maximum length (up to {limit})."
        )
    return tokens


@dataclass
class Generation:
    """Generated texts and how fast they came."""

    texts: list[str]
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def generate(model, prompts: list[str] | str, settings: SamplerConfig) -> Generation:
    """Continues one or several prompts with the chosen sampler.

    Raises:
        StudioError: a bad prompt or setting (see :func:`check_prompt`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise StudioError("No prompt given. Type some text for the model to continue.")
    settings.validate(context_length(model))
    prompt_tokens = [check_prompt(model, prompt, settings.max_length) for prompt in prompts]
    import keras

    keras.utils.set_random_seed(settings.seed)
    # Measured with bench/gpt2_generate.py on 2 CPU cores: XLA pays off for batches
    # (1.43x transformers at batch 4) but costs at batch 1 (22 vs 27 tokens/s warm).
    model.compile(sampler=settings.make_sampler(), jit_compile=len(prompts) > 1)
    start = time.perf_counter()
    outputs = model.generate(prompts, max_length=settings.max_length)
    seconds = time.perf_counter() - start
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    tokenizer = model.preprocessor.tokenizer
    new_tokens = sum(max(0, len(tokenizer(text)) - n) for text, n in zip(outputs, prompt_tokens))
    return Generation(outputs, new_tokens, seconds)


# ----------------------------------------------------------------------------- fine-tuning


@dataclass
class TextConfig:
    """A fine-tuning run on the user's own text.

    Attributes:
        model: preset name, ``hf://`` handle or local preset folder to start from.
        sequence_length: tokens per training sequence.
        epochs: passes over the text.
        batch_size: sequences per step.
        learning_rate: AdamW learning rate.
        lora_rank: 0 fine-tunes every weight; > 0 trains only LoRA adapters of that rank.
        seed: seeds shuffling and initialisation.
        sample_prompt: prompt used for the before/after comparison.
    """

    model: str = "gpt2_base_en"
    sequence_length: int = 128
    epochs: int = 3
    batch_size: int = 4
    learning_rate: float = 5e-5
    lora_rank: int = 0
    seed: int = 42
    sample_prompt: str = ""

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
        if not 1e-7 <= self.learning_rate <= 1.0:
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


def read_text_files(files: list[tuple[str, bytes]], max_bytes: int = 20 * 2**20) -> str:
    """Joins uploaded .txt/.md files; refuses binary or oversized input with a clear message."""
    total = sum(len(data) for _, data in files)
    if total > max_bytes:
        raise StudioError(f"The text files total {total / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    parts = []
    for name, data in files:
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise StudioError(f"{name} is not UTF-8 text. Upload plain .txt or .md files.") from None
    return "\n\n".join(parts)


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
        Metrics: loss before/after, perplexity, generations before and after, timings.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tlcore.jobs import ProgressLog
    from tlcore.training import ProgressCallback, history_frame

    config.validate()
    log = log if log is not None else ProgressLog()
    stop = stop or threading.Event()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.append("status", status="loading model")
    # Train a fresh copy: the cached model keeps serving generations unchanged.
    causal_lm = load_gpt2_fresh(config.model) if model is None else model
    causal_lm.preprocessor.sequence_length = config.sequence_length
    tokenizer = causal_lm.preprocessor.tokenizer
    pieces = chunk_text(tokenizer, text, config.sequence_length)
    prompt = config.sample_prompt.strip() or tokenizer.detokenize([int(i) for i in tokenizer(pieces[0])][:8])
    sample = SamplerConfig(sampler="greedy", max_length=min(context_length(causal_lm), len(tokenizer(prompt)) + 40))
    before = generate(causal_lm, prompt, sample).texts[0]

    keras.utils.set_random_seed(config.seed)
    if config.lora_rank:
        causal_lm.backbone.enable_lora(config.lora_rank)
        # enable_lora freezes the adapted kernels but leaves their biases (and the
        # layer norms) trainable; LoRA here means: only the adapters learn.
        for variable in causal_lm.backbone.trainable_weights:
            if "lora" not in variable.path:
                variable.trainable = False
    causal_lm.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
        jit_compile=False,  # XLA compilation costs far more than it saves for a few epochs on a CPU
    )
    # Tokenize once; with the preprocessor attached, fit would re-run BPE every epoch.
    preprocessor = causal_lm.preprocessor
    features, labels, weights = preprocessor(tf.constant(pieces))
    data = (
        tf.data.Dataset.from_tensor_slices((features, labels, weights))
        .shuffle(len(pieces), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
    )
    causal_lm.preprocessor = None
    try:
        loss_before = float(causal_lm.evaluate(data, verbose=0)[0])
        log.append("phase", phase="fine-tune-text", epochs=config.epochs)
        start = time.perf_counter()
        callback = ProgressCallback(log, "fine-tune-text", stop)
        causal_lm.fit(data, epochs=config.epochs, verbose=0, shuffle=False, callbacks=[callback])
        seconds = time.perf_counter() - start
        loss_after = float(causal_lm.evaluate(data, verbose=0)[0])
    finally:
        causal_lm.preprocessor = preprocessor
    after = generate(causal_lm, prompt, sample).texts[0]

    causal_lm.save_to_preset(str(out_dir / "preset"))
    if config.lora_rank:
        causal_lm.backbone.save_lora_weights(str(out_dir / "adapter.lora.h5"))
    history = history_frame(log)
    history["perplexity"] = np.exp(history["loss"].astype(float))
    history.to_csv(out_dir / "history.csv", index=False)
    metrics = {
        "loss_before": loss_before,
        "loss_after": loss_after,
        "perplexity_before": math.exp(loss_before),
        "perplexity_after": math.exp(loss_after),
        "train_seconds": seconds,
        "sequences": len(pieces),
        "epochs_run": len(history),
        "stopped_early_by_user": stop.is_set(),
        "prompt": prompt,
        "before": before,
        "after": after,
        "config": asdict(config),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.append("status", status="stopped" if stop.is_set() else "done")
    return metrics


def trainable_parameter_names(causal_lm) -> list[str]:
    return [weight.path for weight in causal_lm.backbone.trainable_weights]


def start_finetune(registry, owner: str, config: TextConfig, text_value: str, runs_root: str | Path):
    """Starts text fine-tuning as a background job; the run lands in ``runs_root/text-<time>``."""
    import datetime as dt

    config.validate()
    if not text_value or not text_value.strip():
        raise StudioError("There is no text to train on. Upload .txt/.md files or paste some text.")
    run_dir = Path(runs_root) / f"text-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"

    def target(job):
        job.run_dir = str(run_dir)
        return finetune(config, text_value, run_dir, log=job.log, stop=job.stop)

    return registry.start(owner, "text-finetune", f"GPT-2 fine-tune from {Path(config.model).name}", target)


def perplexity_frame(log):
    """Per-epoch loss and perplexity from a fine-tuning job's log (for the live chart)."""
    import numpy as np

    from tlcore.training import history_frame

    history = history_frame(log)[["epoch", "loss"]].copy()
    history["perplexity"] = np.exp(history["loss"].astype(float))
    return history
