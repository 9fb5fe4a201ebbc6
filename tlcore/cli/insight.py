"""``python -m tlcore lr-find | label-issues | near-duplicates | learning-curve``.

The insight analyses, headless: same configs and the same feature cache as ``train``.
Each prints JSON on stdout; bad input exits with 2 and one line (see ``tlcore.cli.main``).
"""

from __future__ import annotations

from tlcore.cli.common import add_run_flags, config_from_args, quiet_keras
from tlcore.errors import StudioError


def add_parsers(commands) -> None:
    """Adds the four insight sub-commands to ``python -m tlcore``'s sub-parsers."""
    lr_find = commands.add_parser("lr-find", help="learning-rate finder (fastai's lr_find, 'valley' suggestion)")
    add_run_flags(lr_find)
    lr_find.add_argument(
        "--phase", default="head", help="head (on cached features, default) | fine-tune (on images, capped in steps)"
    )
    lr_find.add_argument(
        "--steps", type=int, help="sweep steps (default 100 for head, 75 for fine-tune; a suggestion needs at least 50)"
    )

    label_issues = commands.add_parser("label-issues", help="suspect labels by confident learning (k-fold, cleanlab)")
    add_run_flags(label_issues)
    label_issues.add_argument("--folds", type=int, default=5, help="k of the k-fold (default 5)")
    label_issues.add_argument("--all", action="store_true", help="list every image ranked, not only flagged ones")

    duplicates = commands.add_parser("near-duplicates", help="near-duplicate images and train→validation leakage")
    add_run_flags(duplicates)
    duplicates.add_argument(
        "--threshold",
        type=float,
        help="feature similarity from which a pair is 'similar' (default: derived from the data)",
    )

    curve = commands.add_parser("learning-curve", help="accuracy against training-set size, with a projection")
    add_run_flags(curve)
    curve.add_argument("--repeats", type=int, default=5, help="subsets drawn per fraction (default 5)")
    curve.add_argument("--fractions", default="0.1,0.2,0.3,0.5,0.7,1.0", help="comma-separated shares of each class")


def prepared_config(args):
    """The run config, with the cheap checks done before TensorFlow loads."""
    from tlcore.data.sources import resolve_source

    config = config_from_args(args)
    for source in filter(None, (config.data.data_dir, config.data.val_dir)):
        resolve_source(source)
    return config


def features_of(config):
    quiet_keras()
    from tlcore.insight.feature_set import dataset_features

    return dataset_features(config)


def cmd_lr_find(args) -> dict:
    from tlcore.insight import lr_finder

    if args.phase not in ("head", "fine-tune"):
        raise StudioError(f"Unknown phase. Expected one of ['head', 'fine-tune']. Received: --phase {args.phase}.")
    if args.steps is not None and not 10 <= args.steps <= 1000:
        raise StudioError(f"Expected --steps between 10 and 1000. Received: --steps {args.steps}.")
    config = prepared_config(args)
    if args.phase == "fine-tune":
        quiet_keras()
        return lr_finder.find_fine_tune_lr(config, args.steps or lr_finder.FINE_TUNE_STEPS).to_dict()
    return lr_finder.find_head_lr(features_of(config), config, args.steps or lr_finder.NUM_IT).to_dict()


def cmd_label_issues(args) -> dict:
    from tlcore.insight.label_issues import review_labels

    if args.folds < 2:
        raise StudioError(f"Expected --folds of at least 2. Received: --folds {args.folds}.")
    review = review_labels(features_of(prepared_config(args)), args.folds, args.seed)
    rows = review.ranked if args.all else review.issues()
    columns = ["path", "given", "suggested", "score", "agreement", "split"]
    return {
        "checked": review.checked,
        "folds": review.folds,
        "splits": review.splits,
        "accuracy": review.accuracy,
        "summary": review.describe(),
        "issues": rows[columns].to_dict("records"),
    }


def cmd_near_duplicates(args) -> dict:
    from tlcore.insight import duplicates

    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise StudioError(f"Expected --threshold between -1 and 1. Received: --threshold {args.threshold}.")
    features = features_of(prepared_config(args))
    pairs = duplicates.near_duplicates(features, args.threshold)
    thresholds = pairs.attrs["thresholds"]
    leak = duplicates.leakage(features, pairs)
    records = pairs[["a", "b", "similarity", "pixels", "kind", "where"]].astype(object)
    return {
        "pairs": records.where(records.notna(), None).to_dict("records"),
        "threshold": thresholds.similar,
        "threshold_derived": thresholds.derived,
        "typical_similarity": thresholds.median,
        "same_photo_pixels": duplicates.SAME_PHOTO_PIXELS,
        "same_photo_pairs": int((pairs["kind"] == duplicates.SAME).sum()),
        "leaked_val_images": len(leak.leaked),
        "val_accuracy": leak.val_accuracy,
        "val_accuracy_without_leaks": leak.val_accuracy_without_leaks,
        "summary": thresholds.describe() + " " + leak.describe(),
    }


def cmd_learning_curve(args) -> dict:
    from tlcore.insight.learning_curve import learning_curve

    try:
        fractions = [float(value) for value in args.fractions.split(",") if value.strip()]
    except ValueError:
        raise StudioError(f"Expected --fractions like 0.1,0.5,1.0. Received: --fractions {args.fractions}.") from None
    if not fractions or not all(0 < value <= 1 for value in fractions):
        raise StudioError(f"Expected --fractions in (0, 1]. Received: --fractions {args.fractions}.")
    if not 1 <= args.repeats <= 100:
        raise StudioError(f"Expected --repeats between 1 and 100. Received: --repeats {args.repeats}.")
    curve = learning_curve(features_of(prepared_config(args)), fractions, args.repeats, args.seed)
    return {**curve.to_dict(), "summary": curve.describe()}


COMMANDS = {
    "lr-find": cmd_lr_find,
    "label-issues": cmd_label_issues,
    "near-duplicates": cmd_near_duplicates,
    "learning-curve": cmd_learning_curve,
}
