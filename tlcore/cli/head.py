"""CLI extension: ``train --config RUN_DIR/config.json``, ``sweep`` and ``evaluate``.

``train --config`` trains exactly what a saved run trained; a flag typed beside it
replaces one field. To know which flags were typed, the train parser's flags default
to "absent" (``argparse.SUPPRESS``) and their real defaults travel in
``args.run_flag_defaults`` (:func:`tlcore.cli.common.config_from_args` reads both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tlcore.cli.common import add_run_flags, config_from_args, quiet_keras
from tlcore.errors import StudioError


def add_parsers(commands) -> None:
    """Adds ``--config`` to ``train`` and the ``sweep`` command."""
    _allow_config(commands.choices["train"])
    sweep = commands.add_parser("sweep", help="train a grid of head settings on cached features, ranked")
    add_run_flags(sweep)
    lists = {
        "lr": (float, "1e-4,1e-3,1e-2", "learning rates, comma-separated"),
        "dropout": (float, "0,0.2,0.5", "dropout rates, comma-separated"),
        "hidden_units": (int, "0,256", "hidden units, comma-separated (0 = none)"),
        "optimizer": (str, "adam", "optimizers, comma-separated (adam, adamw, sgd, rmsprop)"),
    }
    for action in sweep._actions:
        if action.dest in lists:
            kind, default, text = lists[action.dest]
            action.type, action.default, action.help = _list_of(kind), _list_of(kind)(default), text
    sweep.add_argument("--out", required=True, help="folder for sweep.csv")
    evaluate = commands.add_parser("evaluate", help="a run's validation accuracy and loss, optionally with TTA")
    evaluate.add_argument("--run", required=True, help="a finished run folder")
    evaluate.add_argument("--tta", default="none", help="none | flip: average over each image and its mirror")


def _allow_config(train: argparse.ArgumentParser) -> None:
    defaults = {}
    for action in train._actions:
        if action.option_strings and action.dest not in ("help", "out"):
            defaults[action.dest] = action.default
            action.default = argparse.SUPPRESS  # absent unless typed
            action.required = False  # --data and --backbone: checked in config_from_args
    train.add_argument(
        "--config", help="a run's config.json (or its run folder): train the same again; flags beside it override"
    )
    train.set_defaults(run_flag_defaults=defaults)


def _list_of(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part.strip()) for part in str(text).split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def cmd_sweep(args) -> dict:
    from tlcore.data.sources import resolve_source
    from tlcore.training.sweep import SweepGrid

    out = Path(args.out)
    if out.exists() and (out / "sweep.csv").exists():
        raise StudioError(f"--out {out} already holds a sweep.csv. Choose a new folder.")
    grid = SweepGrid(args.lr, args.dropout, args.hidden_units, args.optimizer).validate()
    lists = {name: getattr(args, name) for name in ("lr", "dropout", "hidden_units", "optimizer")}
    args = argparse.Namespace(**{**vars(args), "lr": 1e-3, "dropout": 0.2, "hidden_units": 0, "optimizer": "adam"})
    config = config_from_args(args)
    for source in filter(None, (config.data.data_dir, config.data.val_dir)):
        resolve_source(source)  # cheap checks first, before TensorFlow loads
    quiet_keras()
    from tlcore.training.sweep import run_sweep

    result = run_sweep(config, grid)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "sweep.csv", index=False)
    return {**result.to_dict(), "grid": lists, "out": str(out)}


def cmd_evaluate(args) -> dict:
    """Validation metrics of a run: as saved (``--tta none``) or predicted again with flip TTA."""
    from tlcore.inference.predict import TTA_CHOICES
    from tlcore.metrics import evaluate_probabilities, summary
    from tlcore.runs.store import read_run, require_run_model

    if args.tta not in TTA_CHOICES:
        raise StudioError(f"Unknown --tta. Expected one of {list(TTA_CHOICES)}. Received: --tta {args.tta}.")
    run_dir = require_run_model(args.run)
    run = read_run(run_dir)
    paths, labels, probabilities = run.val_probabilities()
    if not paths:
        raise StudioError(f"{run_dir} has no saved validation predictions to evaluate.")
    if args.tta != "none":
        quiet_keras()
        from tlcore.inference.predict import predict_paths

        probabilities = predict_paths(run.load_model(), paths, args.tta)
    metrics = evaluate_probabilities(probabilities, labels)
    return {"run": str(run_dir), "images": len(paths), "tta": args.tta, **metrics, **summary(labels, probabilities)}


COMMANDS = {"sweep": cmd_sweep, "evaluate": cmd_evaluate}
__all__ = ["COMMANDS", "add_parsers", "cmd_evaluate", "cmd_sweep"]
