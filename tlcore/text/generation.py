"""Generation: prompt checks, one compiled generate function per sampler setting, timing.

KerasHub's ``CausalLM.compile`` drops the model's compiled generate function, so
compiling on every call traces (and with XLA, compiles) again on every click. Here
each model keeps its compiled functions, one per (sampler setting, XLA on/off):
the first click with a setting pays for tracing, every later click runs warm.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tlcore.caches import BoundedCache
from tlcore.errors import StudioError
from tlcore.text.models import context_length, load_gpt2, quantization_of
from tlcore.text.sampling import SamplerConfig, reseed
from tlcore.words import plural

MAX_PROMPT_CHARACTERS = 20_000

# Whether generation runs under XLA (jit_compile), by weights and batch size. Warm
# tokens/s (third call) from bench/gpt2_generate.py, GPT-2 124M, greedy, 128 new tokens,
# 2 shared CPU cores; two runs, "off / on" (the README has the tables):
#   float32, batch 1: 15.5 / 10.3 and 15.4 / 18.7; first call 10 s / 15-24 s  -> off
#                     (a tie warm, and every new setting compiles: off is cheaper per click)
#   float32, batch 4: 65.8 / 30.8 and 57.6 / 80.8 (earlier run: 21.8 / 56.6)  -> on
#   int8,    batch 1:  6.0 / 20.3 and  6.8 / 25.5   -> on (int8 matmuls are slow unfused)
#   int8,    batch 4: 18.0 / 136.1 and 20.1 / 51.4  -> on
XLA_BY_WEIGHTS = {"none": {"single": False, "batch": True}, "int8": {"single": True, "batch": True}}


def use_xla(quantization: str, batch_size: int) -> bool:
    """The measured XLA choice for these weights and this many prompts at once."""
    return XLA_BY_WEIGHTS[quantization]["single" if batch_size == 1 else "batch"]


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
    # The start-of-text token takes one position of max_length too.
    if tokens + 1 >= max_length:
        raise StudioError(
            f"The prompt is already {tokens} tokens (plus a start token), so max_length={max_length} leaves no "
            f"room for new text. Raise the maximum length (up to {limit})."
        )
    return tokens


@dataclass
class Generation:
    """Generated texts and how fast they came.

    Attributes:
        texts: prompt plus continuation, one per prompt.
        new_tokens: tokens the model generated, all prompts together (an end-of-text
            token counts; prompt tokens do not).
        seconds: wall time of the call, tokenizing included.
        compiled: this call traced/compiled a new generate function (first use of
            these settings), so its speed is not the warm speed.
    """

    texts: list[str]
    new_tokens: int
    seconds: float
    compiled: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def speed(self) -> str:
        """The Text page's line under a sample: "64 new tokens · 21.3 tokens/s", and why it is slow the first time."""
        text = f"{plural(self.new_tokens, 'new token')} · {self.tokens_per_second:.1f} tokens/s"
        if self.compiled:
            text += " (first run with these settings, compiling included; the next click runs warm)"
        return text


# Compiled generate functions kept per model: each new k, p, beam count or temperature
# traces one (with XLA, compiles one), so a model used for days keeps only the recent ones.
MAX_COMPILED_SETTINGS = 8


@dataclass
class _Compiled:
    lock: threading.Lock = field(default_factory=threading.Lock)  # one sampler slot per model
    functions: BoundedCache = field(
        default_factory=lambda: BoundedCache("compiled generate functions", max_items=MAX_COMPILED_SETTINGS)
    )


_ATTRIBUTE = "_tlcore_compiled_generate"
_ATTACH_LOCK = threading.Lock()


def _compiled_state(model) -> _Compiled:
    with _ATTACH_LOCK:
        state = getattr(model, _ATTRIBUTE, None)
        if state is None:
            state = _Compiled()
            # object.__setattr__: Keras would otherwise try to track it as a layer attribute.
            object.__setattr__(model, _ATTRIBUTE, state)
        return state


def forget_compiled(model) -> None:
    """Drops a model's compiled generate functions (its layers changed: LoRA, quantization)."""
    state = getattr(model, _ATTRIBUTE, None)
    if state is not None:
        with state.lock:  # not while a generation runs one of them
            state.functions.clear()


def _function_for(model, state: _Compiled, settings: SamplerConfig, jit_compile: bool):
    import tensorflow as tf

    key = (settings.graph_key(), jit_compile, quantization_of(model))  # quantizing changes the graph
    return state.functions.get_or_create(
        key, lambda: (settings.make_sampler(), tf.function(model.generate_step, jit_compile=jit_compile))
    )


def generate(
    model, prompts: list[str] | str, settings: SamplerConfig, *, jit_compile: bool | None = None
) -> Generation:
    """Continues one or several prompts with the chosen sampler.

    Args:
        model: a ``GPT2CausalLM`` (float32 or quantized).
        prompts: one prompt or a list, generated as one batch.
        settings: sampler, length and seed.
        jit_compile: force XLA on or off; ``None`` takes the measured choice (:func:`use_xla`).

    Raises:
        StudioError: a bad prompt or setting (see :func:`check_prompt`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise StudioError("No prompt given. Type some text for the model to continue.")
    settings.validate(context_length(model))
    for prompt in prompts:
        check_prompt(model, prompt, settings.max_length)
    if jit_compile is None:
        jit_compile = use_xla(quantization_of(model), len(prompts))
    state = _compiled_state(model)
    with state.lock:  # one sampler slot per model: sessions sharing a cached model take turns
        sampler, function = _function_for(model, state, settings, jit_compile)
        reseed(sampler, settings.seed)
        model.sampler = sampler  # read while tracing a new input shape
        traces = function.experimental_get_tracing_count()
        start = time.perf_counter()
        texts, new_tokens = _run(model, function, prompts, settings.max_length)
        seconds = time.perf_counter() - start
        compiled = function.experimental_get_tracing_count() > traces
    return Generation(texts, new_tokens, seconds, compiled)


def _run(model, function, prompts: list[str], max_length: int) -> tuple[list[str], int]:
    """Tokenize, generate, detokenize; new tokens counted from the masks, not by re-tokenizing."""
    import numpy as np

    preprocessor = model.preprocessor
    inputs = preprocessor.generate_preprocess(prompts, sequence_length=max_length)
    outputs = function(inputs, stop_token_ids=(preprocessor.tokenizer.end_token_id,))
    new_tokens = int(np.sum(outputs["padding_mask"])) - int(np.sum(inputs["padding_mask"]))
    texts = preprocessor.generate_postprocess(outputs)
    texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
    return texts, new_tokens


def generate_samples(source: str, quantization: str, prompt: str, settings: list[SamplerConfig], log, stop) -> list:
    """A generate job's work: the model (from the one bounded cache), then one text per setting.

    Args:
        source: a checked model source (preset, ``hf://`` handle or local preset folder).
        quantization: ``"none"`` or ``"int8"``.
        prompt: the prompt.
        settings: one sampler setting per text (see :meth:`SamplerConfig.side_by_side`).
        log: the job's progress log: a step per loaded model and per text.
        stop: the job's stop event: texts not started yet are skipped.

    Returns:
        The :class:`Generation` of each text written before a stop.
    """
    log.append("step", step=0, steps=len(settings) + 1)
    model = load_gpt2(source, quantization)
    outputs = []
    for index, setting in enumerate(settings):
        if stop.is_set():
            break
        log.append("step", step=index + 1, steps=len(settings) + 1)
        outputs.append(generate(model, prompt, setting))
    return outputs
