import pandas as pd

from tlcore import charts


def history(phases=("head", "head", "fine-tune")):
    return pd.DataFrame(
        {
            "phase": list(phases),
            "epoch": list(range(1, len(phases) + 1)),
            "loss": [1.0, 0.6, 0.4][: len(phases)],
            "accuracy": [0.5, 0.7, 0.8][: len(phases)],
            "val_loss": [1.1, 0.7, 0.5][: len(phases)],
            "val_accuracy": [0.4, 0.6, 0.75][: len(phases)],
        }
    )


def test_history_figure_draws_train_and_validation_curves_and_marks_fine_tuning():
    figure = charts.history_figure(history())
    names = {trace.name for trace in figure.data}
    assert names == {"train loss", "validation loss", "train accuracy", "validation accuracy"}
    assert list(figure.data[0].x) == [1, 2, 3]
    assert any(shape.x0 == 2.5 for shape in figure.layout.shapes)
    assert any("fine-tuning" in (a.text or "") for a in figure.layout.annotations)


def test_history_figure_without_fine_tuning_has_no_marker():
    assert not charts.history_figure(history(("head", "head"))).layout.shapes


def test_empty_history_says_so():
    figure = charts.history_figure(pd.DataFrame())
    assert any("No epochs yet" in (a.text or "") for a in figure.layout.annotations)


def test_overlay_of_runs_has_lines_per_run():
    frame = pd.concat([history().assign(run_id="a"), history().assign(run_id="b")])
    names = {trace.name for trace in charts.history_figure(frame, group="run_id").data}
    assert "a validation accuracy" in names and "b validation accuracy" in names


def test_top_k_figure_puts_the_most_likely_on_top():
    figure = charts.top_k_figure([{"label": "bee", "probability": 0.8}, {"label": "ant", "probability": 0.2}])
    assert list(figure.data[0].y) == ["ant", "bee"]


def test_confusion_and_count_figures_carry_the_numbers():
    from tlcore.metrics import confusion_matrix

    matrix = confusion_matrix([0, 1, 1], [0, 1, 0], ["a", "b"])
    assert charts.confusion_figure(matrix).data[0].z.tolist() == [[1, 0], [1, 1]]
    assert list(charts.counts_figure({"a": 3, "b": 5}).data[0].y) == [3, 5]


def test_short_run_names_keep_the_whole_model_name():
    """A legend said "mobilenetv2-16" for a 160 px model file: the name must not be cut mid-word."""
    from tlcore.charts import short_run_names

    ids = ["20261204-153012-dog-breed-mobilenetv2-160-ab12", "20261204-153012-dog-breed-mobilenetv2-160-cd34"]
    names = short_run_names(ids)
    assert all("dog-breed-mobilenetv2-160 15:30:12" in name for name in names.values())
    assert len(set(names.values())) == 2  # the same name and time: told apart by the random part
