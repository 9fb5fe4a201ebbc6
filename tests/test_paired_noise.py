import pytest

from tlcore.insight.paired_noise import paired_lead


def test_the_same_scores_on_every_fold_are_within_noise():
    lead = paired_lead([0.80, 0.85, 0.90, 0.75], [0.80, 0.85, 0.90, 0.75], num_val=50)
    assert lead.outcome == "within" and lead.margin == 0.0


def test_folds_with_identical_scores_never_make_a_one_image_lead_beyond_noise():
    # sd 0 on both sides: the old rule called any margin "beyond the spread (sd 0.0)"
    one_image = paired_lead([1.0] * 5, [0.99] * 5, num_val=100)
    assert one_image.standard_error == 0.0 and one_image.resolution == pytest.approx(0.01)
    assert one_image.outcome == "within"
    twenty_images = paired_lead([1.0] * 5, [0.80] * 5, num_val=100)
    assert twenty_images.outcome == "beyond"


def test_a_clear_lead_is_beyond_noise_and_pairing_removes_what_the_folds_share():
    clear = paired_lead([0.95, 0.93, 0.96, 0.94, 0.95], [0.70, 0.72, 0.69, 0.71, 0.70], num_val=80)
    assert clear.outcome == "beyond" and clear.margin == pytest.approx(0.242)
    # hard and easy folds move both candidates: unpaired, their sds (about 14 points) would swamp a
    # 5-point lead; paired, every fold says +5 points
    first = [0.60, 0.90, 0.70, 0.95, 0.80]
    assert paired_lead(first, [score - 0.05 for score in first], num_val=200).outcome == "beyond"


def test_too_few_paired_scores_cannot_tell_unless_there_is_no_lead():
    lead = paired_lead([0.95, 0.96], [0.50, 0.52], num_val=100)
    assert lead.outcome == "cannot tell" and lead.bound is None
    assert "too few paired folds" in lead.explained("folds")
    same = paired_lead([0.954], [0.954], num_val=153)  # one repeat each, the same images right
    assert same.outcome == "within" and "less than one validation image apart" in same.explained("repeats")


def test_overlapping_training_folds_widen_the_standard_error():
    first, second = [0.90, 0.85, 0.88, 0.92, 0.86], [0.84, 0.83, 0.85, 0.86, 0.80]
    plain = paired_lead(first, second, num_val=40)
    folds = paired_lead(first, second, num_val=40, overlap=0.25)  # 5 folds: n_val / n_train = 1/4
    assert folds.standard_error == pytest.approx(plain.standard_error * 1.5)  # sqrt(1/5 + 1/4) / sqrt(1/5)


def test_no_validation_image_is_refused():
    with pytest.raises(ValueError, match="num_val"):
        paired_lead([0.9] * 3, [0.8] * 3, num_val=0)
