"""CLI extension: ``export --run RUN_DIR --format NAME… | --all``, JSON per format.

Each format is exported, run in its own runtime on the run's validation images and
timed (see :mod:`tlcore.runs.exports`); a format that fails has an ``error`` line
instead of numbers, and the others still export.
"""

from __future__ import annotations

from tlcore.cli.common import quiet_keras
from tlcore.errors import StudioError

# The CLI contract's fields, in this order; ``error`` replaces the numbers of a failed format.
FIELDS = ("format", "file", "size_mb", "top1_agreement", "max_prob_diff", "latency_ms", "images_per_second")


def add_parsers(commands) -> None:
    """Adds the ``export`` command."""
    from tlcore.runs.formats import FORMATS

    export = commands.add_parser("export", help="export a run, check each export in its runtime, time it")
    export.add_argument("--run", required=True, help="a finished run folder")
    export.add_argument(
        "--format", action="append", default=[], help=f"one of {', '.join(FORMATS)} (repeat for several)"
    )
    export.add_argument("--all", action="store_true", help="every format (keras = the reference, not exported)")


def cmd_export(args) -> list[dict]:
    """Exports and checks the formats asked for; one JSON object per format."""
    from tlcore.runs.formats import FORMATS, export_format
    from tlcore.runs.store import read_run, require_run_model

    if not args.all and not args.format:
        raise StudioError(f"Name a format with --format (one of {', '.join(FORMATS)}) or give --all.")
    names = list(FORMATS) if args.all else [export_format(name).name for name in args.format]
    run = read_run(require_run_model(args.run))
    quiet_keras()
    from tlcore.runs.exports import export_formats

    report = export_formats(run, names)
    return [_contract(entry) for entry in report.values()]


def _contract(entry: dict) -> dict:
    if "error" in entry:
        return {"format": entry["format"], "error": entry["error"]}
    return {**{key: entry[key] for key in FIELDS}, "load_seconds": entry["load_seconds"], "runtime": entry["runtime"]}


COMMANDS = {"export": cmd_export}
