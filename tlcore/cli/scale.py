"""``python -m tlcore extract …`` and ``predict --engine/--workers/--output``: the scale-out commands.

``extract`` fills the feature cache that ``train`` reads, in this process or on Ray.
:func:`predict_folders` is ``predict`` over folders (walked recursively) into a CSV,
in this process or on Ray; ``tlcore.cli.main`` dispatches to it.
"""

from __future__ import annotations

import argparse

from tlcore.errors import StudioError

ENGINE_HELP = "local (this process, default) | ray (Ray Data actors; see --ray-address)"
ADDRESS_HELP = "Ray cluster: auto, ray://host:10001, or unset for a local Ray (default: $TLCORE_RAY_ADDRESS)"


def add_engine_flags(parser: argparse.ArgumentParser, default_workers: int = 2) -> None:
    """``--engine``, ``--workers`` and ``--ray-address``: shared by ``extract`` and ``predict``."""
    parser.add_argument("--engine", default="local", choices=("local", "ray"), help=ENGINE_HELP)
    parser.add_argument(
        "--workers", type=int, default=default_workers, help="Ray actors, each with its own model copy (ray only)"
    )
    parser.add_argument("--ray-address", help=ADDRESS_HELP)


def add_predict_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``predict`` needs for :func:`predict_folders` (``tlcore.cli.main`` adds them to its parser)."""
    add_engine_flags(parser)
    parser.add_argument("--output", help="write a CSV (path,label,probability), one row per image")


def add_parsers(commands) -> None:
    from tlcore.cli.common import add_run_flags

    extract = commands.add_parser("extract", help="fill the feature cache that train uses (locally or on Ray)")
    add_run_flags(extract)
    add_engine_flags(extract)


def ray_address(args) -> str | None:
    import os

    from tlcore.runners.cluster import ADDRESS_VARIABLE

    return args.ray_address or os.environ.get(ADDRESS_VARIABLE, "").strip() or None


def cmd_extract(args) -> dict:
    from tlcore.cli.common import config_from_args, quiet_keras
    from tlcore.data.sources import resolve_source
    from tlcore.runners.ray_data import check_engine

    config = config_from_args(args)
    check_engine(args.engine, args.workers)
    for source in filter(None, (config.data.data_dir, config.data.val_dir)):
        resolve_source(source)  # cheap checks first, before TensorFlow loads
    quiet_keras()
    from tlcore.training.extraction import extract_to_cache

    report = extract_to_cache(config, args.engine, args.workers, ray_address(args))
    return report.to_dict()


def predict_folders(args) -> dict:
    """``predict --output CSV [--engine E --workers N] FOLDER_OR_IMAGE…``.

    Returns:
        ``{"output", "images", "skipped": [{"path", "reason"}], "seconds", "engine", "workers"}``.

    Raises:
        StudioError: no output file given, no run model, no image found, Ray unreachable.
    """
    from tlcore.cli.common import quiet_keras
    from tlcore.inference.batch import predict_images
    from tlcore.runners.ray_data import check_engine
    from tlcore.runs.store import require_run_model

    if not args.output:
        raise StudioError("Expected --output FILE.csv for batch predictions. Received no --output.")
    check_engine(args.engine, args.workers)
    require_run_model(args.model)
    quiet_keras()
    predictions = predict_images(args.model, args.images, args.engine, args.workers, ray_address(args))
    path = predictions.write_csv(args.output)
    return {
        "output": str(path),
        "images": len(predictions.rows),
        "skipped": predictions.skipped,
        "seconds": predictions.seconds,
        "engine": predictions.engine,
        "workers": predictions.workers,
    }


def wants_predict_folders(args) -> bool:
    """True when a ``predict`` call asks for the CSV / engine path (``tlcore.cli.main`` dispatches on it)."""
    return bool(getattr(args, "output", None)) or getattr(args, "engine", "local") != "local"


COMMANDS = {"extract": cmd_extract}
