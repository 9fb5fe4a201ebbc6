"""What quantization costs: held-out loss, perplexity and agreement, float32 vs int8."""

from __future__ import annotations

import math

from tlcore.text.finetuning import chunk_text
from tlcore.text.generation import generate
from tlcore.text.sampling import SamplerConfig


def token_batches(model, text: str, sequence_length: int = 64):
    """``(features, labels, weights)`` of ``text`` cut into pieces, tokenized once."""
    import tensorflow as tf

    preprocessor = model.preprocessor
    pieces = chunk_text(preprocessor.tokenizer, text, sequence_length)
    return preprocessor(tf.constant(pieces), sequence_length=sequence_length)


def score(model, batches, batch_size: int = 8) -> tuple[float, object]:
    """Mean next-token cross-entropy over the weighted positions, and every position's top-1 token."""
    import keras
    import numpy as np

    features, labels, weights = batches
    loss_sum, top1 = 0.0, []
    for start in range(0, int(labels.shape[0]), batch_size):
        rows = slice(start, start + batch_size)
        logits = model({name: value[rows] for name, value in features.items()}, training=False)
        losses = keras.losses.sparse_categorical_crossentropy(labels[rows], logits, from_logits=True)
        loss_sum += float(np.sum(np.asarray(losses) * np.asarray(weights[rows])))
        top1.append(np.argmax(np.asarray(logits), axis=-1))
    return loss_sum / float(np.sum(np.asarray(weights))), np.concatenate(top1)


def compare_quantized(reference, quantized, text: str, prompts: list[str], sequence_length: int = 64) -> dict:
    """Held-out loss, perplexity, top-1 and greedy agreement of a quantized model against its float32 original.

    Args:
        reference: the float32 model.
        quantized: the same model after :func:`~tlcore.text.models.quantize`.
        text: held-out text (not trained on).
        prompts: prompts whose greedy continuations are compared.
        sequence_length: tokens per scored piece.

    Returns:
        ``loss_float32``, ``loss_int8``, ``loss_cost`` (relative, 0.01 = 1 % worse),
        the two perplexities, ``top1_agreement`` (positions where both pick the same
        next token, teacher-forced on ``text``) and ``greedy_identical`` (fraction of
        prompts with the very same greedy continuation).
    """
    import numpy as np

    batches = token_batches(reference, text, sequence_length)
    weights = np.asarray(batches[2]).astype(bool)
    loss_reference, top1_reference = score(reference, batches)
    loss_quantized, top1_quantized = score(quantized, batches)
    settings = SamplerConfig(sampler="greedy", max_length=sequence_length)
    same = [
        generate(reference, prompt, settings).texts == generate(quantized, prompt, settings).texts for prompt in prompts
    ]
    return {
        "loss_float32": loss_reference,
        "loss_int8": loss_quantized,
        "loss_cost": loss_quantized / loss_reference - 1.0,
        "perplexity_float32": math.exp(loss_reference),
        "perplexity_int8": math.exp(loss_quantized),
        "top1_agreement": float(np.mean(top1_reference[weights] == top1_quantized[weights])),
        "greedy_identical": sum(same) / len(same),
    }
