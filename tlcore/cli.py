"""``python -m tlcore inspect|train|predict …``: the headless face of the same core.

Output is JSON on stdout. Bad input exits with status 2 and one line on stderr that
says what is wrong and what to do; there is never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

from tlcore.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tlcore.errors import StudioError


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
    predict.add_argument("images", nargs="+")
    for module in _extensions():
        module.add_parsers(commands)
    return parser


# Command modules that add sub-commands: each has ``add_parsers(commands)`` and ``COMMANDS``.
EXTENSION_MODULES = ("tlcore.cli_insight", "tlcore.cli_scale", "tlcore.cli_head")


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


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The data, model and training flags of ``train``: every command that trains or extracts takes them."""
    parser.add_argument("--data", required=True, help="folder of class sub-folders, a .zip, or demo:shapes")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--val-data", help="validation folder or .zip (instead of a split)")
    split.add_argument("--val-split", type=float, default=0.2, help="fraction held out per class (default 0.2)")
    parser.add_argument("--backbone", required=True, help="registry name (e.g. MobileNetV2) or a .keras/.h5 file")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | PATH to a weights file")
    parser.add_argument("--cut-layer", help="with a model file: the layer whose output is the feature map")
    parser.add_argument("--preprocess", help="keras.applications preprocessing name (default: the backbone's)")
    parser.add_argument("--image-size", type=int, help="input size in pixels (default: the backbone's)")
    parser.add_argument("--pooling", default="avg", help="avg | max | flatten")
    parser.add_argument("--hidden-units", type=int, default=0)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument(
        "--freeze",
        default="all",
        help="backbone layers frozen in the first phase: all (default), none, top:N (last N trainable) "
        "or a layer/block name (trainable from there on)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=0)
    parser.add_argument("--fine-tune-lr", type=float)
    parser.add_argument("--unfreeze-from", help="layer or block where fine-tuning starts (default: last block)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience; 0 = off")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--no-feature-cache", action="store_true")
    parser.add_argument("--keep-placeholders", action="store_true")
    parser.add_argument("--seed", type=int, default=42)


# Flag → (section, field, conversion) of a RunConfig: what a flag given beside --config overrides.
FLAG_FIELDS = {
    "data": ("data", "data_dir", None),
    "val_data": ("data", "val_dir", None),
    "val_split": ("data", "val_split", None),
    "keep_placeholders": ("data", "skip_placeholders", lambda keep: not keep),
    "backbone": ("model", "backbone", None),
    "weights": ("model", "weights", None),
    "cut_layer": ("model", "cut_layer", None),
    "preprocess": ("model", "preprocess", None),
    "image_size": ("model", "image_size", None),
    "pooling": ("model", "pooling", None),
    "hidden_units": ("model", "hidden_units", None),
    "dropout": ("model", "dropout_rate", None),
    "freeze": ("model", "freeze", FreezePlan.parse),
    "epochs": ("train", "epochs", None),
    "fine_tune_epochs": ("train", "fine_tune_epochs", None),
    "fine_tune_lr": ("train", "fine_tune_learning_rate", None),
    "unfreeze_from": ("train", "unfreeze_from", None),
    "batch_size": ("train", "batch_size", None),
    "lr": ("train", "learning_rate", None),
    "optimizer": ("train", "optimizer", None),
    "patience": ("train", "early_stopping_patience", None),
    "augment": ("train", "augment", None),
    "no_feature_cache": ("train", "feature_cache", lambda off: not off),
    "seed": ("train", "seed", None),
}


def config_with_flags(config: RunConfig, given: dict) -> RunConfig:
    """``config`` with the fields of the flags in ``given`` (``{flag dest: value}``) replaced."""
    for name, value in given.items():
        section, field_name, convert = FLAG_FIELDS[name]
        setattr(getattr(config, section), field_name, convert(value) if convert else value)
    if "val_split" in given and "val_data" not in given:
        config.data.val_dir = None  # a split given beside a saved validation folder replaces it
    return config


def load_config_file(value: str) -> RunConfig:
    """``--config``: a run's config.json, or the run folder that holds one."""
    path = Path(value)
    path = path / "config.json" if path.is_dir() else path
    try:
        return RunConfig.load(path)
    except (OSError, ValueError, TypeError) as error:
        raise StudioError(f"Cannot read --config {value}: {one_line(error)}. Expected a run's config.json.") from None


def config_from_args(args) -> RunConfig:
    """The same :class:`RunConfig` the dashboard would build.

    ``train`` leaves out the flags the user did not type (their defaults are in
    ``args.run_flag_defaults``): with ``--config`` the saved config is the start and each
    typed flag replaces one field; without it the defaults fill in.
    """
    defaults = getattr(args, "run_flag_defaults", None)
    if defaults is not None:
        given = {name: value for name, value in vars(args).items() if name in FLAG_FIELDS}
        if getattr(args, "config", None):
            return config_with_flags(load_config_file(args.config), given).validate()
        missing = [f"--{name.replace('_', '-')}" for name in ("data", "backbone") if name not in given]
        if missing:
            raise StudioError(
                f"the following arguments are required: {', '.join(missing)} (or --config RUN_DIR/config.json "
                "to train what a saved run trained)"
            )
        args = argparse.Namespace(**{**defaults, **vars(args)})
    return RunConfig(
        data=DataConfig(args.data, args.val_data, args.val_split, skip_placeholders=not args.keep_placeholders),
        model=ModelConfig(
            backbone=args.backbone,
            weights=args.weights,
            cut_layer=args.cut_layer,
            preprocess=args.preprocess,
            image_size=args.image_size,
            pooling=args.pooling,
            hidden_units=args.hidden_units,
            dropout_rate=args.dropout,
            freeze=FreezePlan.parse(args.freeze),
        ),
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            optimizer=args.optimizer,
            augment=args.augment,
            early_stopping_patience=args.patience,
            fine_tune_epochs=args.fine_tune_epochs,
            fine_tune_learning_rate=args.fine_tune_lr,
            unfreeze_from=args.unfreeze_from,
            feature_cache=not args.no_feature_cache,
            seed=args.seed,
        ),
    ).validate()


def cmd_inspect(args) -> dict:
    from tlcore.data import resolve_source, scan_folder

    return scan_folder(resolve_source(args.data), skip_placeholders=not args.keep_placeholders).to_dict()


def new_run_folder(value: str) -> Path:
    """``--out``: a folder that does not exist yet, or an empty one."""
    out = Path(value)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StudioError(f"--out {out} already exists and is not an empty folder. Choose a new run folder.")
    return out


@contextlib.contextmanager
def removed_on_bad_input(out: Path):
    """Bad input midway: remove the run folder if this command created it (never the user's own)."""
    created = not out.exists()
    try:
        yield
    except StudioError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def cmd_train(args) -> dict:
    from tlcore.data import resolve_source

    out = new_run_folder(args.out)
    config = config_from_args(args)
    for source in filter(None, (config.data.data_dir, config.data.val_dir)):
        resolve_source(source)  # cheap checks first, before TensorFlow loads
    quiet_keras()
    from tlcore.launch import train_run

    with removed_on_bad_input(out):
        result = train_run(config, out)
    return {"run_dir": str(out), "classes": result.classes, **result.metrics}


def cmd_predict(args) -> list:
    from tlcore.runs import read_run

    run_dir = Path(args.model)
    if not (run_dir / "model.keras").is_file():
        raise StudioError(
            f"{run_dir} is not a finished run folder (no model.keras). Train one with `python -m tlcore train`."
        )
    quiet_keras()
    from tlcore.predict import predict_top_k

    run = read_run(run_dir)
    model = run.load_model()
    output = []
    for image in args.images:
        try:
            output.append({"image": image, "top_k": predict_top_k(model, run.labels, [image], args.top_k)[0]})
        except (StudioError, OSError) as error:
            output.append({"image": image, "error": str(error)})
    if all("error" in row for row in output):
        raise StudioError(f"No image could be read: {output[0]['error']}")
    return output


def cmd_generate(args) -> dict:
    from tlcore.text import SamplerConfig

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
    from tlcore.text import generate, load_gpt2

    generation = generate(load_gpt2(args.model, args.quantize), args.prompt, settings)
    return {
        "text": generation.texts[0],
        "new_tokens": generation.new_tokens,
        "tokens_per_second": generation.tokens_per_second,
        "quantization": args.quantize,
    }


def cmd_finetune_text(args) -> dict:
    from tlcore.text import TextConfig, read_text_files

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
    from tlcore.text import finetune

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
        print(f"error: unexpected {type(error).__name__}: {one_line(error)} (please report this)", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def quiet_keras() -> None:
    # TensorFlow's C++ side logs to file descriptor 2 while it loads (CUDA probing),
    # whatever TF_CPP_MIN_LOG_LEVEL says; the CLI's stderr is for one-line errors.
    if "tensorflow" not in sys.modules:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(devnull)
            os.close(saved)
    # Keras prints download progress to stdout; the CLI's stdout is JSON only.
    import keras

    keras.config.disable_interactive_logging()
