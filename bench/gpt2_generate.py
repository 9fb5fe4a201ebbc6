"""GPT-2 124M on CPU: what a Text-page user gets from tlcore, against transformers + PyTorch.

Run: `.venv/bin/pip install -r bench/requirements.txt` once (torch CPU + transformers; the
app does not need them), then `.venv/bin/python bench/gpt2_generate.py [--new-tokens 128]`.

Both sides have the gpt2_base_en / GPT2Config() architecture with random weights (the
compute is the real model's; no download), greedy decoding of N new tokens from the same
prompt, batch 1 and 4, in one process, one after the other.

Generation, ours: four calls of `tlcore.text.generation.generate` with the same settings, as four
clicks of Generate; "first" is the first call (tracing/XLA compilation included); the
ratios use the third call. The calls of all settings are interleaved (round 1 of each,
then round 2, ...), so a burst of load from elsewhere on the machine hits all of them. float32 and int8 (`tlcore.text.models.quantize`), each with XLA off and on; the
rows marked * are what `tlcore.text.generation.use_xla` picks. Theirs: `model.generate` three times,
float32 and with torch's dynamic int8 quantization (`torch.ao.quantization.quantize_dynamic`).

Training (`--skip-training` to leave out): tokens/s of fitting GPT-2 124M on batches of
4 x 128 tokens, our fit with and without XLA (the second epoch: warm), against a plain
PyTorch AdamW loop.
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
CALLS = 3


def require_bench_packages() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        sys.exit(
            f"bench/gpt2_generate.py compares against transformers + PyTorch, which are not installed ({error.name} "
            "is missing). Install them once with `.venv/bin/pip install -r bench/requirements.txt` (torch 2.13 CPU "
            "wheel, transformers); the app and the tests do not need them."
        )


# ----------------------------------------------------------------------------- ours


def our_model(tokenizer_dir: Path, quantization: str):
    import keras

    from tlcore.text.models import build_gpt2, build_tokenizer, quantize

    keras.config.disable_interactive_logging()
    tokenizer = build_tokenizer(tokenizer_dir / "encoder.json", tokenizer_dir / "vocab.bpe")
    model = build_gpt2(tokenizer)
    return quantize(model, quantization)


def ours(model, new_tokens: int, batch: int, jit_compile: bool):
    """One click of Generate: a call of tlcore.text.generation.generate -> (seconds, tokens/s)."""
    from tlcore.text.generation import generate
    from tlcore.text.sampling import SamplerConfig

    prompt_tokens = len(model.preprocessor.tokenizer(PROMPT))
    settings = SamplerConfig(sampler="greedy", max_length=1 + prompt_tokens + new_tokens)

    def call():
        generation = generate(model, [PROMPT] * batch, settings, jit_compile=jit_compile)
        return generation.seconds, generation.tokens_per_second

    return call


# ----------------------------------------------------------------------------- theirs


def their_model(quantized: bool):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    if quantized:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def theirs(model, prompt_ids: list[int], new_tokens: int, batch: int):
    """One call of transformers' generate -> (seconds, tokens/s)."""
    import torch

    ids = torch.tensor([[50256, *prompt_ids]] * batch)  # start token + the same prompt as ours

    def call():
        with torch.inference_mode():
            start = time.perf_counter()
            model.generate(
                ids,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=50256,
                attention_mask=torch.ones_like(ids),
            )
            seconds = time.perf_counter() - start
        return seconds, new_tokens * batch / seconds

    return call


# ----------------------------------------------------------------------------- training


def our_training(tokenizer_dir: Path, jit_compile: bool, steps: int) -> tuple[float, float]:
    """(first-epoch seconds, warm tokens/s) of fitting GPT-2 124M on batches of 4 x 128 tokens."""
    import keras
    import numpy as np

    model = our_model(tokenizer_dir, "none")
    model.preprocessor = None
    model.compile(
        optimizer=keras.optimizers.AdamW(5e-5, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50257, size=(4 * steps, 129))
    features = {"token_ids": ids[:, :-1], "padding_mask": np.ones((4 * steps, 128), bool)}
    times = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda *_: times.append(time.perf_counter()),
        on_epoch_end=lambda *_: times.append(time.perf_counter()),
    )
    model.fit(features, ids[:, 1:], batch_size=4, epochs=2, verbose=0, callbacks=[timer])
    return times[1] - times[0], 4 * steps * 128 / (times[3] - times[2])


def their_training(steps: int) -> tuple[float, float]:
    import torch

    model = their_model(False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    ids = torch.randint(0, 50257, (4, 128))
    marks = [time.perf_counter()]
    for _ in range(2 * steps):  # two "epochs" of `steps` steps, as for ours
        optimizer.zero_grad()
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        marks.append(time.perf_counter())
    return marks[steps] - marks[0], steps * 4 * 128 / (marks[-1] - marks[steps])


# ----------------------------------------------------------------------------- report


def generation_rows(tokenizer_dir: Path, new_tokens: int) -> list[tuple]:
    """Per setting: first call, third call and best warm call; the calls of all settings interleaved.

    The machine may be shared: interleaving (round 1 of every setting, then round 2, ...)
    spreads a burst of outside load over all settings instead of one.
    """
    from tlcore.text.generation import use_xla

    models = {quantization: our_model(tokenizer_dir, quantization) for quantization in ("none", "int8")}
    prompt_ids = [int(i) for i in models["none"].preprocessor.tokenizer(PROMPT)]
    their_models = {"float32": their_model(False), "dynamic int8": their_model(True)}
    rows = []
    for batch in (1, 4):
        calls = {}
        for quantization, model in models.items():
            for jit in (False, True):
                chosen = "*" if use_xla(quantization, batch) == jit else " "
                weights = "float32" if quantization == "none" else "int8"
                calls[f"{chosen}tlcore {weights}, XLA {'on' if jit else 'off'}"] = ours(model, new_tokens, batch, jit)
        for name, model in their_models.items():
            calls[f" transformers {name}"] = theirs(model, prompt_ids, new_tokens, batch)
        results = {name: [] for name in calls}
        for _ in range(CALLS + 1):
            for name, call in calls.items():
                results[name].append(call())
        for name, timings in results.items():
            first_seconds, first = timings[0]
            rows.append((name, batch, first_seconds, first, timings[2][1], max(rate for _, rate in timings[1:])))
            print(rows[-1], flush=True)
    return rows


def warm(rows, batch: int, prefix: str) -> float:
    return next(row[4] for row in rows if row[1] == batch and row[0].startswith(prefix))


def print_generation(rows, new_tokens: int) -> None:
    print(f"\nGPT-2 124M, random weights, greedy, {new_tokens} new tokens, {os.cpu_count()} CPU cores")
    print(
        "(* = the XLA setting tlcore.text.generation.generate picks; ratios use the third call with the same settings)\n"
    )
    print(f"| {'implementation':34s} | batch | first call s | first tok/s | third call tok/s | best warm tok/s |")
    print(f"| {'-' * 34} | ----: | -----------: | ----------: | ---------------: | --------------: |")
    for name, batch, first_seconds, first, third, best in rows:
        print(f"| {name:34s} | {batch:5d} | {first_seconds:12.1f} | {first:11.1f} | {third:16.1f} | {best:15.1f} |")
    print()
    for batch in (1, 4):
        float32, int8 = warm(rows, batch, "*tlcore float32"), warm(rows, batch, "*tlcore int8")
        reference, reference_int8 = warm(rows, batch, " transformers float32"), warm(rows, batch, " transformers dyn")
        print(
            f"batch {batch}: float32 / transformers float32 = {float32 / reference:.2f}; "
            f"int8 / transformers float32 = {int8 / reference:.2f}; "
            f"int8 / transformers dynamic int8 = {int8 / reference_int8:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--training-steps", type=int, default=4, help="timed training steps per setting")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--shared", default=os.environ.get("TL_SHARED_DIR", str(ROOT.parent / "shared")))
    args = parser.parse_args()
    require_bench_packages()
    tokenizer_dir = Path(args.shared) / "gpt2-tokenizer"
    if not (tokenizer_dir / "encoder.json").is_file():
        sys.exit(f"The GPT-2 tokenizer is missing: expected {tokenizer_dir}/encoder.json (see --shared).")
    if not args.skip_generation:
        print_generation(generation_rows(tokenizer_dir, args.new_tokens), args.new_tokens)
    if not args.skip_training:
        training = {
            "tlcore fit, XLA off": our_training(tokenizer_dir, False, args.training_steps),
            "tlcore fit, XLA on": our_training(tokenizer_dir, True, args.training_steps),
            "PyTorch AdamW loop": their_training(args.training_steps),
        }
        print(f"\nTraining GPT-2 124M, batch 4 x 128 tokens, epochs of {args.training_steps} steps\n")
        print("| implementation | first epoch s (compiling included) | warm training tokens/s |\n| --- | ---: | ---: |")
        for name, (first_epoch, rate) in training.items():
            print(f"| {name} | {first_epoch:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
