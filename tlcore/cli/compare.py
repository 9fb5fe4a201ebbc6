"""``python -m tlcore compare-backbones | compare-depths``: which backbone, how deep to fine-tune.

Same configs and the same feature cache as ``train``; JSON on stdout, and the table,
the JSON and the chart (an HTML file) in ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tlcore.cli.common import add_run_flags, config_from_args, quiet_keras
from tlcore.errors import StudioError


def add_parsers(commands) -> None:
    """Adds ``compare-backbones`` and ``compare-depths`` to ``python -m tlcore``'s sub-parsers."""
    backbones = commands.add_parser(
        "compare-backbones",
        help="rank backbones on your data: accuracy ± sd, speed, size (a leaderboard)",
        conflict_handler="resolve",  # --backbone below replaces the run flags' single one
    )
    add_run_flags(backbones)
    backbones.add_argument(
        "--backbone",
        action="append",
        required=True,
        help="a candidate, repeated: NAME, NAME:WEIGHTS (e.g. MobileNetV2:none) or a model file",
    )
    backbones.add_argument("--folds", type=int, default=5, help="stratified folds over all images (1 = your split)")
    backbones.add_argument("--seeds", type=int, default=1, help="head seeds per fold")
    backbones.add_argument("--out", required=True, help="folder for leaderboard.csv/.json/.html")

    depths = commands.add_parser("compare-depths", help="fine-tune from each of the last N blocks, compared")
    add_run_flags(depths)
    depths.add_argument("--blocks", type=int, default=3, help="how many of the last blocks to try (default 3)")
    depths.add_argument("--repeats", type=int, default=1, help="seeds per depth, for mean ± sd (default 1)")
    depths.add_argument("--out", required=True, help="folder for depths.csv/.json/.html")


def _out_folder(value: str, name: str) -> Path:
    out = Path(value)
    if (out / name).exists():
        raise StudioError(f"--out {out} already holds {name}. Choose a new folder.")
    return out


def _prepared(args):
    from tlcore.data.sources import resolve_source

    config = config_from_args(args)
    for source in filter(None, (config.data.data_dir, config.data.val_dir)):
        resolve_source(source)  # cheap checks first, before TensorFlow loads
    return config


def cmd_compare_backbones(args) -> dict:
    out = _out_folder(args.out, "leaderboard.json")
    candidates = list(args.backbone)
    config = _prepared(argparse.Namespace(**{**vars(args), "backbone": candidates[0]}))
    quiet_keras()
    from tlcore.charts import leaderboard_figure
    from tlcore.insight.backbone_compare import compare_backbones

    board = compare_backbones(config, candidates, folds=args.folds, seeds=args.seeds)
    return _write_outputs(out, "leaderboard", board.to_dict(), board.table(), leaderboard_figure)


def cmd_compare_depths(args) -> dict:
    out = _out_folder(args.out, "depths.json")
    config = _prepared(args)
    quiet_keras()
    from tlcore.charts import depth_figure
    from tlcore.insight.depth_compare import compare_depths

    comparison = compare_depths(config, blocks=args.blocks, repeats=args.repeats)
    return _write_outputs(out, "depths", comparison.to_dict(), comparison.table(), depth_figure)


def _write_outputs(out, stem: str, result: dict, table, figure) -> dict:
    """``STEM.csv`` (the table), ``STEM.json`` (the result) and ``STEM.html`` (the chart) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
    figure(table).write_html(out / f"{stem}.html", include_plotlyjs="cdn")
    return {**result, "out": str(out)}


COMMANDS = {"compare-backbones": cmd_compare_backbones, "compare-depths": cmd_compare_depths}
