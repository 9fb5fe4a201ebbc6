"""Filling the feature cache ahead of training (tlcore.training.extraction).

The Ray engine itself runs in tests/test_ray.py on a real local cluster; here the
contract between extraction and training is checked without starting Ray: whatever
engine computes the features, the entry it writes is the one training reads.
"""

import numpy as np
import pytest

from tests.test_training import colour_config
from tlcore.errors import StudioError
from tlcore.training import extraction
from tlcore.training import features as features_lib
from tlcore.training.trainer import run_training


def test_an_entry_written_by_the_ray_engine_is_the_one_training_reads(colour_dataset, monkeypatch):
    config = colour_config(colour_dataset, epochs=2)
    computed = {}

    def workers_features(run_config, paths, workers, address, log):
        # What Ray's workers return: the backbone's features of ``paths``, in order.
        backbone, classifier = extraction.feature_model(run_config)
        items = extraction.dataset_items(run_config)
        assert [item.path for item in items] == paths
        computed["features"] = features_lib.extract_features(classifier, items, backbone.image_size)
        return computed["features"]

    monkeypatch.setattr(extraction, "extract_features_ray", workers_features)
    report = extraction.extract_to_cache(config, "ray", workers=2)
    assert (report.engine, report.workers, report.from_cache) == ("ray", 2, False)
    assert report.images == len(computed["features"])

    trained = run_training(config)
    assert trained.metrics["features_from_cache"] is True  # no backbone pass: the entry was found
    backbone, classifier = extraction.feature_model(config)
    read, hit = features_lib.cached_features(classifier, backbone, extraction.dataset_items(config))
    assert hit and report.cache_file == str(
        features_lib.feature_cache_file(backbone, [i.digest for i in extraction.dataset_items(config)])
    )
    np.testing.assert_array_equal(read, computed["features"])
    assert extraction.extract_to_cache(config, "ray", workers=2).from_cache is True  # found: no worker asked


def test_extraction_refuses_an_unknown_engine_before_loading_anything(colour_dataset):
    with pytest.raises(
        StudioError, match=r"Unknown engine\. Expected one of \['local', 'ray'\]\. Received: --engine spark"
    ):
        extraction.extract_to_cache(colour_config(colour_dataset), "spark")
