"""Why a model is as accurate as it is, and what to do next — answers computed on cached features.

A head on frozen backbone features trains in milliseconds, so k-fold, sweeps and
curves cost seconds on a CPU. One module per analysis:

- ``feature_set``: the dataset's pooled backbone features (from the on-disk cache), the
  start of every analysis.
- ``probes``: the tiny classifiers (linear probes) trained on them (k-fold out-of-sample
  probabilities); the studio's own Keras head is :mod:`tlcore.training.head`.
- ``lr_finder``: fastai's learning-rate finder (exponential sweep, "valley").
- ``label_issues``: suspect labels by confident learning (cleanlab).
- ``overlay``: the user's "relabel"/"exclude" decisions, applied when a dataset is loaded.
- ``duplicates``: near-duplicates and train→validation leakage.
- ``learning_curve``: accuracy against training-set size, with a projection.
- ``embedding``: a 2-D map of the features (t-SNE).
- ``calibration``: reliability diagram, expected calibration error, temperature scaling.
- ``figures``: the Plotly figures of all of these.

Nothing is imported here: ``tlcore.data.pipeline`` imports ``overlay`` while it loads, and
the other modules load TensorFlow or scikit-learn.
"""
