"""What every CLI command module shares: the run flags, the config they make, quiet output.

``tlcore.cli.main`` and its extension modules (``cli_head``, ``cli_insight``, ``cli_scale``)
import from here, so the command modules never import each other.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

from tlcore.config import (
    AUGMENT_CHOICES,
    FINE_TUNE_SCHEDULES,
    DataConfig,
    FreezePlan,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from tlcore.errors import StudioError


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
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--fine-tune-epochs", type=int, default=TrainConfig.fine_tune_epochs)
    parser.add_argument(
        "--fine-tune-lr", type=float, default=TrainConfig.fine_tune_learning_rate, help="default: --lr / 10"
    )
    parser.add_argument(
        "--fine-tune-schedule",
        default=TrainConfig.fine_tune_schedule,
        help=f"{' | '.join(FINE_TUNE_SCHEDULES)} (default {TrainConfig.fine_tune_schedule})",
    )
    parser.add_argument(
        "--fine-tune-rate-decay",
        type=float,
        default=TrainConfig.fine_tune_rate_decay,
        help="discriminative rates: each lower unfrozen block trains at this times the rate above (1 = one rate)",
    )
    parser.add_argument("--unfreeze-from", help="layer or block where fine-tuning starts (default: last block)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--optimizer", default=TrainConfig.optimizer)
    parser.add_argument(
        "--patience", type=int, default=TrainConfig.early_stopping_patience, help="early-stopping patience; 0 = off"
    )
    parser.add_argument(
        "--augment",
        nargs="?",
        const="full",
        default=TrainConfig.augment,
        choices=AUGMENT_CHOICES,
        help="flip: random horizontal flip (fine-tuning stays on cached activations); full (the bare flag): "
        "flip, rotation, zoom, contrast",
    )
    parser.add_argument("--no-feature-cache", action="store_true")
    parser.add_argument("--keep-placeholders", action="store_true")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)


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
    "fine_tune_schedule": ("train", "fine_tune_schedule", None),
    "fine_tune_rate_decay": ("train", "fine_tune_rate_decay", None),
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
            fine_tune_schedule=args.fine_tune_schedule,
            fine_tune_rate_decay=args.fine_tune_rate_decay,
            unfreeze_from=args.unfreeze_from,
            feature_cache=not args.no_feature_cache,
            seed=args.seed,
        ),
    ).validate()


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
