"""``python -m tlcore inspect|train|predict …``: the headless face of the same core.

Output is JSON on stdout. Bad input exits with status 2 and one line on stderr that
says what is wrong and what to do; there is never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from tlcore.cli.common import (
    add_run_flags,
    config_from_args,
    new_run_folder,
    one_line,
    quiet_keras,
    removed_on_bad_input,
)
from tlcore.errors import StudioError, unexpected


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other bad input
        raise StudioError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tlcore", description="Transfer-learning studio, headless.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    inspect = commands.add_parser("inspect", help="scan a dataset: classes, counts, skipped files")
    inspect.add_argument("--data", required=True, help="folder of class sub-folders, or a .zip")
    inspect.add_argument("--keep-placeholders", action="store_true", help="keep blank/placeholder graphics")

    train = commands.add_parser("train", help="train a classifier and save the run")
    add_run_flags(train)
    train.add_argument("--out", required=True, help="run folder to create")

    generate = commands.add_parser("generate", help="continue a prompt with GPT-2")
    generate.add_argument("--model", required=True, help="preset name (gpt2_base_en…), hf:// handle or preset folder")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--max-length", type=int, default=64, help="total tokens, prompt included")
    generate.add_argument("--sampler", default="top_k", help="greedy | top_k | top_p | beam | random")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=40)
    generate.add_argument("--top-p", type=float, default=0.9)
    generate.add_argument("--num-beams", type=int, default=4)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument(
        "--quantize",
        default="none",
        help="none (float32) | int8: 8-bit weights with XLA, about 1.5x faster on a CPU for a small quality cost",
    )

    finetune = commands.add_parser("finetune-text", help="fine-tune GPT-2 on your own text")
    finetune.add_argument("--model", required=True, help="preset name, hf:// handle or preset folder to start from")
    finetune.add_argument("--text", required=True, nargs="+", help=".txt/.md files")
    finetune.add_argument("--out", required=True, help="run folder to create")
    finetune.add_argument("--epochs", type=int, default=3)
    finetune.add_argument("--sequence-length", type=int, default=128)
    finetune.add_argument("--batch-size", type=int, default=4)
    finetune.add_argument("--lr", type=float, help="learning rate (default 5e-5, or 1e-2 with --lora-rank)")
    finetune.add_argument("--lora-rank", type=int, default=0, help="0 = train every weight")
    finetune.add_argument("--prompt", default="", help="prompt for the before/after comparison")
    finetune.add_argument("--seed", type=int, default=42)

    predict = commands.add_parser("predict", help="top-k predictions of a trained run")
    predict.add_argument("--model", required=True, help="a run folder")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--tta", default="none", help="none | flip: average over the image and its mirror")
    predict.add_argument("images", nargs="+")
    from tlcore.cli.scale import add_predict_flags

    add_predict_flags(predict)  # --engine local|ray, --workers, --output CSV (folders walked)
    for module in _extensions():
        module.add_parsers(commands)
    return parser


# Command modules that add sub-commands: each has ``add_parsers(commands)`` and ``COMMANDS``.
EXTENSION_MODULES = (
    "tlcore.cli.insight",
    "tlcore.cli.scale",
    "tlcore.cli.head",
    "tlcore.cli.export",
    "tlcore.cli.compare",
)


def _extensions() -> list:
    import importlib

    found = []
    for name in EXTENSION_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
    return found


def cmd_inspect(args) -> dict:
    from tlcore.data.scan import scan_folder
    from tlcore.data.sources import resolve_source

    return scan_folder(resolve_source(args.data), skip_placeholders=not args.keep_placeholders).to_dict()


def cmd_train(args) -> dict:
    from tlcore.data.sources import resolve_source

    out = new_run_folder(args.out)
    config = config_from_args(args)
    for source in filter(None, (config.data.data_dir, config.data.val_dir)):
        resolve_source(source)  # cheap checks first, before TensorFlow loads
    quiet_keras()
    from tlcore.training.launch import train_run

    with removed_on_bad_input(out):
        result = train_run(config, out)
    return {"run_dir": str(out), "classes": result.classes, **result.metrics}


def cmd_predict(args) -> list | dict:
    from tlcore.cli.scale import predict_folders, wants_predict_folders
    from tlcore.runs.store import read_run, require_run_model

    if wants_predict_folders(args):  # --output/--engine: folders walked, a CSV written
        return predict_folders(args)

    run_dir = require_run_model(args.model)
    quiet_keras()
    from tlcore.inference.predict import predict_top_k

    run = read_run(run_dir)
    model = run.load_model()
    output = []
    for image in args.images:
        try:
            output.append(
                {"image": image, "top_k": predict_top_k(model, run.labels, [image], args.top_k, tta=args.tta)[0]}
            )
        except (StudioError, OSError) as error:
            output.append({"image": image, "error": str(error)})
    if all("error" in row for row in output):
        raise StudioError(f"No image could be read: {output[0]['error']}")
    return output


def cmd_generate(args) -> dict:
    from tlcore.text.sampling import SamplerConfig

    settings = SamplerConfig(
        args.sampler, args.top_k, args.top_p, args.num_beams, args.temperature, args.max_length, args.seed
    )
    if settings.sampler not in ("greedy", "top_k", "top_p", "beam", "random"):
        settings.validate(1)  # names the choices before TensorFlow loads
    if not args.prompt.strip():
        raise StudioError("The prompt is empty. Type some text for the model to continue.")
    if args.quantize not in ("none", "int8"):
        raise StudioError(
            f"Unknown quantization. Expected one of ['none', 'int8']. Received: --quantize {args.quantize}."
        )
    quiet_keras()
    from tlcore.text.generation import generate
    from tlcore.text.models import load_gpt2

    generation = generate(load_gpt2(args.model, args.quantize), args.prompt, settings)
    return {
        "text": generation.texts[0],
        "new_tokens": generation.new_tokens,
        "tokens_per_second": generation.tokens_per_second,
        "quantization": args.quantize,
    }


def cmd_finetune_text(args) -> dict:
    from tlcore.text.finetuning import TextConfig, read_text_files

    out = new_run_folder(args.out)
    files = []
    for name in args.text:
        path = Path(name)
        if not path.is_file():
            raise StudioError(f"Text file not found: {path}.")
        files.append((path.name, path.read_bytes()))
    text = read_text_files(files)
    config = TextConfig(
        args.model, args.sequence_length, args.epochs, args.batch_size, args.lr, args.lora_rank, args.seed, args.prompt
    )
    config.validate()
    quiet_keras()
    from tlcore.text.finetuning import finetune

    with removed_on_bad_input(out):
        return {"run_dir": str(out), **finetune(config, text, out)}


COMMANDS = {
    "inspect": cmd_inspect,
    "train": cmd_train,
    "predict": cmd_predict,
    "generate": cmd_generate,
    "finetune-text": cmd_finetune_text,
}


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")  # library warnings are not for CLI users; errors are one line
    try:
        args = build_parser().parse_args(argv)
        commands = dict(COMMANDS)
        for module in _extensions():
            commands.update(module.COMMANDS)
        result = commands[args.command](args)
    except (StudioError, ValueError, TypeError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  - never a traceback for the user
        print(f"error: {unexpected(error)}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0
