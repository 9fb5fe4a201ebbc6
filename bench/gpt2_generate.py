"""GPT-2 124M generation speed on CPU: KerasHub (ours) vs Hugging Face transformers + PyTorch.

Run: `.venv/bin/pip install -r bench/requirements.txt` once, then
`.venv/bin/python bench/gpt2_generate.py [--new-tokens 128]`.
Both models have the gpt2_base_en / GPT2Config() architecture with random weights (the
compute is the real model's; no download). Greedy decoding of exactly N new tokens from
the same prompt, batch 1 and 4; first call (including compilation/tracing) and warm.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Transfer learning reuses a network trained on a large corpus"


def ours(tokenizer_dir: Path, new_tokens: int, batch: int, jit_compile: bool) -> tuple[float, float]:
    import keras
    import keras_hub

    from tlcore.text import build_gpt2, build_tokenizer

    keras.config.disable_interactive_logging()
    tokenizer = build_tokenizer(tokenizer_dir / "encoder.json", tokenizer_dir / "vocab.bpe")
    prompt_tokens = len(tokenizer(PROMPT))
    model = build_gpt2(tokenizer, sequence_length=prompt_tokens + new_tokens)
    # A sampler that never stops early: an end token must not cut the measurement short.
    model.compile(sampler=keras_hub.samplers.GreedySampler(), jit_compile=jit_compile)
    prompts = [PROMPT] * batch
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        model.generate(prompts, max_length=prompt_tokens + new_tokens, stop_token_ids=None)
        timings.append(time.perf_counter() - start)
    return tuple(new_tokens * batch / t for t in timings)


def theirs(new_tokens: int, batch: int) -> tuple[float, float]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    ids = torch.tensor([[50256] * 11] * batch)  # same prompt length as ours (11 tokens)
    timings = []
    with torch.inference_mode():
        for _ in range(2):
            start = time.perf_counter()
            model.generate(
                ids,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=50256,
                attention_mask=torch.ones_like(ids),
            )
            timings.append(time.perf_counter() - start)
    return tuple(new_tokens * batch / t for t in timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--shared", default=os.environ.get("TL_SHARED_DIR", str(ROOT.parent / "shared")))
    args = parser.parse_args()
    tokenizer_dir = Path(args.shared) / "gpt2-tokenizer"
    rows = []
    for batch in (1, 4):
        for jit in (False, True):
            rows.append(
                (f"KerasHub GPT2CausalLM, jit_compile={jit}", batch, *ours(tokenizer_dir, args.new_tokens, batch, jit))
            )
        rows.append(("transformers GPT2LMHeadModel (torch CPU)", batch, *theirs(args.new_tokens, batch)))
    print(f"\nGPT-2 124M, random weights, greedy, {args.new_tokens} new tokens, {os.cpu_count()} CPU cores\n")
    print(f"{'implementation':44s} {'batch':>5s} {'first tok/s':>12s} {'warm tok/s':>11s}")
    for name, batch, first, warm in rows:
        print(f"{name:44s} {batch:5d} {first:12.1f} {warm:11.1f}")
    for batch in (1, 4):
        best = max(warm for name, b, _, warm in rows if b == batch and name.startswith("KerasHub"))
        reference = next(warm for name, b, _, warm in rows if b == batch and name.startswith("transformers"))
        print(f"batch {batch}: ours (best setting) / transformers, warm = {best / reference:.2f}  (target >= 1.0)")


if __name__ == "__main__":
    main()
