"""Loss plots: a log y-axis with plain-number labels, plain-language titles, validation as joined markers."""
import math

import pytest

from pico_helpers.analysis import plots
from pico_helpers.models.transformer import TransformerModel
from pico_helpers.training import History, LossPlot

# What corpus.description looks like: the kind of text a title must not be built from.
DESCRIPTION = ("3seqs.txt (10,000 lines), tinystories_weight 0.0, block_size 32, 332,126 tokens (longer examples in "
               "windows: every token used), 13,524 train / 1,525 val sequences, padding 59% -> 4%")


def _history(name="lstm_3seqs", lo=0.03, hi=10.0, steps=200, n_val=12, **config):
    """A run whose loss falls geometrically from ``hi`` to ``lo``, validated ``n_val`` times (one point missing)."""
    loss = [hi * (lo / hi) ** (i / (steps - 1)) for i in range(steps)]
    val = [(s, loss[s - 1] * 1.1) for s in range(steps // n_val, steps + 1, steps // n_val)][:n_val]
    val[3] = (val[3][0], None)  # a validation point without a value (no split) is left out, not drawn as 0
    config = {"input_files": ["input_files/3seqs.txt"], "tinystories_weight": 0.0, "block_size": 32, **config}
    return History(model=name, data=DESCRIPTION, config=config, step_loss=loss, val_points=val)


def _tick_labels(ax) -> list[str]:
    """The non-empty y tick labels inside the visible range."""
    ax.figure.draw_without_rendering()  # tick labels are decided at draw time, from the final limits
    lo, hi = ax.get_ylim()
    ticks = [(y, label.get_text()) for minor in (False, True)
             for y, label in zip(ax.get_yticks(minor=minor), ax.get_yticklabels(minor=minor))]
    return [text for y, text in ticks if lo <= y <= hi and text]


def test_loss_axis_is_log_scaled_with_plain_number_labels():
    ax = plots.loss_figure(_history(lo=0.03, hi=10.0)).axes[0]
    assert ax.get_yscale() == "log"
    labels = _tick_labels(ax)
    assert {"0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10"} <= set(labels), labels
    assert not any("$" in t or "^" in t or "e" in t for t in labels), labels  # no 10^-1 mathtext, no 1e-01
    # Plain numbers on a log axis: each label sits where its value is, so 0.03 and 0.2 are far apart.
    lo, hi = ax.get_ylim()
    assert lo <= 0.03 * 1.1 and hi >= 10 / 1.1


@pytest.mark.parametrize("lo, hi", [(3.5, 4.6), (3.7, 3.9), (1.5, 12.0)])
def test_a_narrow_loss_range_still_gets_several_labels(lo, hi):
    labels = _tick_labels(plots.loss_figure(_history(lo=lo, hi=hi)).axes[0])
    assert len(labels) >= 2, (lo, hi, labels)
    assert all(math.isfinite(float(t)) for t in labels), labels


def test_default_title_is_plain_words_not_a_config_dump():
    h = _history(name="lstm_3seqs")
    title = plots.loss_figure(h).axes[0].get_title()
    assert title == "LSTM on 3seqs: training and validation loss"
    assert "=" not in title and "," not in title and len(title) < 70
    mixed = _history(name="pos_rope", tinystories_weight=0.5)
    assert plots.loss_title(mixed) == "pos_rope on TinyStories + 3seqs: training and validation loss"
    model = TransformerModel(vocab_size=10, d_model=8, n_heads=2, n_blocks=1, block_size=8)
    assert plots.loss_title(mixed, model) == "Transformer on TinyStories + 3seqs: training and validation loss"
    only_stories = _history(name="kgram_mlp_seq", tinystories_weight=1.0)
    assert plots.loss_title(only_stories).startswith("K-gram MLP on TinyStories:")
    assert plots.loss_figure(h, title="My own title").axes[0].get_title() == "My own title"


def test_validation_points_are_markers_joined_by_a_line_and_training_is_smoothed():
    h = _history(n_val=12)
    ax = plots.loss_figure(h).axes[0]
    raw, smoothed, val = ax.lines
    assert raw.get_alpha() < 0.5 and len(raw.get_xdata()) == 200
    assert smoothed.get_label() == "lstm_3seqs: training loss (running mean of 5 steps)"
    assert list(smoothed.get_ydata()) == plots.running_mean(h.step_loss, 5)
    assert val.get_label() == "lstm_3seqs: validation loss"
    assert val.get_marker() == "o" and val.get_linestyle() not in ("None", "", " ")
    assert len(val.get_xdata()) == 11  # 12 points, one without a value


def test_loss_plot_callback_titles_the_saved_figure_by_the_model():
    saved = []

    class Store:
        def save_figure(self, fig):
            saved.append(fig)
            return "loss.png"

    h = _history(name="pos_rope")
    model = TransformerModel(vocab_size=10, d_model=8, n_heads=2, n_blocks=1, block_size=8)
    LossPlot(Store(), live=False).on_train_end(h, model)
    assert h.figure == "loss.png"
    assert saved[0].axes[0].get_title() == "Transformer on 3seqs: training and validation loss"
    assert saved[0].axes[0].get_yscale() == "log"


def test_compared_runs_share_a_log_axis():
    runs = {"a": _history(lo=0.03, hi=5.0), "b": _history(lo=0.1, hi=8.0)}
    for what in ("val", "train"):
        ax = plots.plot_histories(runs, title="Two runs on 3seqs", what=what, ax=plots.bare_figure((6, 4))[1])
        assert ax.get_yscale() == "log" and [line.get_label() for line in ax.lines] == ["a", "b"]
    with pytest.raises(ValueError, match="'val' or 'train'"):
        plots.plot_histories(runs, title="x", what="both")
