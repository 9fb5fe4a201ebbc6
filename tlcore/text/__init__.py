"""GPT-2 through KerasHub: load, generate with a chosen sampler, fine-tune on your own text.

Models come from a KerasHub preset name (downloaded once), an ``hf://`` checkpoint, or a
local preset directory (what fine-tuning saves). Loaded models are cached per process
and per quantization. Fine-tuning runs as a job with the same
:class:`~tlcore.jobs.ProgressLog` as image training, so the dashboard draws its
loss/perplexity chart the same way.

Modules: ``sampling`` (sampler settings), ``models`` (load, build, quantize),
``generation`` (compiled generate per setting, XLA choice), ``finetuning`` (the job),
``quality`` (what int8 costs).
"""

from tlcore.text.finetuning import (
    DEFAULT_LEARNING_RATE,
    TextConfig,
    chunk_text,
    comparison_notes,
    finetune,
    perplexity_frame,
    read_text_files,
    start_finetune,
    trainable_parameter_names,
)
from tlcore.text.generation import MAX_PROMPT_CHARACTERS, Generation, check_prompt, generate, use_xla
from tlcore.text.models import (
    PRESETS,
    QUANTIZATIONS,
    build_gpt2,
    build_tokenizer,
    context_length,
    forget_model,
    load_gpt2,
    load_gpt2_fresh,
    quantization_of,
    quantize,
)
from tlcore.text.quality import compare_quantized
from tlcore.text.sampling import DETERMINISTIC_SAMPLERS, SAMPLERS, SamplerConfig

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DETERMINISTIC_SAMPLERS",
    "MAX_PROMPT_CHARACTERS",
    "PRESETS",
    "QUANTIZATIONS",
    "SAMPLERS",
    "Generation",
    "SamplerConfig",
    "TextConfig",
    "build_gpt2",
    "build_tokenizer",
    "check_prompt",
    "chunk_text",
    "compare_quantized",
    "comparison_notes",
    "context_length",
    "finetune",
    "forget_model",
    "generate",
    "load_gpt2",
    "load_gpt2_fresh",
    "perplexity_frame",
    "quantization_of",
    "quantize",
    "read_text_files",
    "start_finetune",
    "trainable_parameter_names",
    "use_xla",
]
