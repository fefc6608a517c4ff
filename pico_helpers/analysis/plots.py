"""Loss plots of a run's History: per-step training loss (light, smoothed) with validation loss, live in Jupyter.
Used by train() (its LossPlot callback) in every notebook and by pico.py, which saves the figure as loss.png."""
from __future__ import annotations

import io
from pathlib import Path

__all__ = ["plot_history", "plot_histories", "val_set", "loss_figure", "loss_title", "label_axes", "LiveLossPlot",
           "LIVE_MARK", "in_notebook", "new_axes", "bare_figure", "png_image", "running_mean"]

LOSS_LABEL = "loss (cross-entropy, nats per token)"
LIVE_MARK = "pico_live"  # output metadata of the live training plot: the export leaves it out of cells with a figure
MODEL_WORDS = {"transformer": "Transformer", "lstm": "LSTM", "kgram": "K-gram MLP"}  # class or run name -> words


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbclient), False in a terminal or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return "IPKernelApp" in getattr(get_ipython(), "config", {})  # get_ipython() is None outside IPython


def new_axes(ax=None, figsize=(8, 4.5)):
    """``ax``, or the Axes of a new pyplot figure (matplotlib is imported only then)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def bare_figure(figsize, dpi=None):
    """A Figure and its Axes outside pyplot: no GUI window, nothing shown twice or kept alive by callbacks."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.add_subplot(111)


def png_image(fig, **savefig_kwargs):
    """An IPython PNG Image of a matplotlib Figure (shown without pyplot, so never twice)."""
    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kwargs)
    return Image(data=buf.getvalue(), format="png")


def running_mean(values: list[float], window: int) -> list[float]:
    """Trailing running mean: element i is the mean of values[max(0, i-window+1) : i+1]."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _window(n_steps: int) -> int:
    return max(5, n_steps // 50)  # about 2 % of the run: smooth, yet a trend of a few % of the steps still shows


def loss_title(history, model=None) -> str:
    """The default title in words, e.g. "Transformer on TinyStories: training and validation loss".
    The model is named by its class (else by a word of the run's name), the data by the config's sources."""
    kind = (type(model).__name__ if model is not None else history.model).lower()
    who = next((words for key, words in MODEL_WORDS.items() if key in kind), history.model)
    weight, files = history.config.get("tinystories_weight", 0.0), history.config.get("input_files", [])
    data = ["TinyStories"] * (weight > 0) + [Path(f).stem for f in files if weight < 1]
    return f"{who} on {' + '.join(data) or 'its data'}: training and validation loss"


def label_axes(ax, xlabel: str, ylabel: str, title: str, log_y: bool = False):
    """The finishing lines of a notebook figure: axis labels (say the units), a title, a light grid, the legend, and
    a log y-axis where the values span decades (losses). Returns the Axes."""
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return ax


def _finish_axes(ax, title: str, ylabel: str = LOSS_LABEL):
    """Log y-axis with plain-number tick labels (1, 2, 5 per decade; more over a narrower range), labels, legend."""
    from matplotlib.ticker import FuncFormatter

    def label(y, _):
        lo, hi = ax.get_ylim()
        shown = "123456789" if hi < 10 * lo else "1235" if hi < 100 * lo else "125"  # leading digits labelled
        return f"{y:g}" if f"{y:.0e}"[0] in shown else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))
    ax.set(xlabel="training step (one batch each)", ylabel=ylabel)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # an empty run has nothing to label
        ax.legend(fontsize=8)
    return ax


def plot_history(history, ax=None, title: str | None = None, smooth: int | None = None, color=None):
    """Draw one run: light per-step training loss, its running mean, and validation loss as joined markers.
    Args: history from train(); ax (new figure if None); title: default ``loss_title(history)``;
        smooth: running-mean window in steps, default about 2 % of the steps (at least 5). Returns the Axes."""
    ax, losses = new_axes(ax), history.step_loss
    if losses:
        window = smooth or _window(len(losses))
        steps = range(1, len(losses) + 1)
        color = ax.plot(steps, losses, alpha=0.25, lw=0.8, color=color)[0].get_color()  # the smoothed line's too
        ax.plot(steps, running_mean(losses, window), lw=1.6, color=color,
                label=f"{history.model}: training loss (running mean of {window} steps)")
    val = [(s, v) for s, v in history.val_points if v is not None]
    if val:
        ax.plot(*zip(*val), "o--", ms=4, lw=1.0, color=color, mec="black", mfc="white",
                label=f"{history.model}: validation loss{val_set(history)}")
    if 0 < history.val_sample_size < history.val_size:  # the whole set, scored at epoch ends only: its own markers
        ends = [(s, v) for s, v in zip(history.epoch_end_step, history.epoch_val_loss) if v is not None]
        ax.plot(*zip(*ends), "D", ms=5, color=color, mec="black",
                label=f"{history.model}: validation loss, all {history.val_size:,} held-out sequences (epoch ends)")
    return _finish_axes(ax, title or loss_title(history))


def val_set(history) -> str:
    """What every point of a run's validation curve scores, for a legend: " (all 998 held-out sequences)" or
    " (the same 256 of 2,093 held-out sequences at every point)"; "" for a run saved before these were recorded."""
    n, sample = history.val_size, history.val_sample_size
    return ("" if not n else f" (all {n:,} held-out sequences)" if sample >= n
            else f" (the same {sample:,} of {n:,} held-out sequences at every point)")


def plot_histories(histories: dict, title: str, ax=None, what: str = "val"):
    """Compare runs on one Axes: their validation loss (``what="val"``) or smoothed training loss (``"train"``).
    Args: histories: label -> History; title: name the models and the data."""
    if what not in ("val", "train"):
        raise ValueError(f"what must be 'val' or 'train', got {what!r}")
    ax = new_axes(ax)
    for label, h in histories.items():
        if what == "val":
            points = [(s, v) for s, v in h.val_points if v is not None]
            if points:
                ax.plot(*zip(*points), "o-", ms=3, label=label)
        else:
            ax.plot(range(1, len(h.step_loss) + 1), running_mean(h.step_loss, _window(len(h.step_loss))), label=label)
    sets = {val_set(h) for h in histories.values()}  # the runs' validation curves: on which held-out sequences
    title += sets.pop().replace(" (", ": validation on ", 1).rstrip(")") if what == "val" and len(sets) == 1 else ""
    return _finish_axes(ax, title, ("validation " if what == "val" else "training (running mean) ") + LOSS_LABEL)


def loss_figure(history, title: str | None = None):
    """``plot_history`` on a bare_figure, e.g. to save as loss.png."""
    fig, ax = bare_figure((8, 4.5), dpi=100)
    plot_history(history, ax=ax, title=title)
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """A loss figure shown in a Jupyter cell while a run trains, redrawn in place; ``live`` defaults to inside
    Jupyter. The runs of one cell share one figure (the run in progress). ``finish`` empties it when training is
    done: it is a progress display, and the cell's own figures are the record (the export leaves it out)."""

    _cell = {"count": None, "handle": None}  # the display of the cell running now (IPython's execution count)

    def __init__(self, live: bool | None = None, title: str | None = None):
        self.live, self.title = in_notebook() if live is None else live, title

    def update(self, history) -> None:
        """Redraw with the latest history (about 0.1 s: fine every few seconds)."""
        if not self.live:
            return
        from IPython import get_ipython
        from IPython.display import display

        image = png_image(loss_figure(history, self.title), dpi=100)
        count, shared = getattr(get_ipython(), "execution_count", None), LiveLossPlot._cell
        if shared["handle"] is None or shared["count"] != count:
            shared.update(count=count, handle=display(image, display_id=True, metadata={LIVE_MARK: True}))
        else:
            shared["handle"].update(image, metadata={LIVE_MARK: True})

    def finish(self) -> None:
        """Empty the cell's live figure (its run has finished)."""
        handle = LiveLossPlot._cell["handle"]
        if self.live and handle is not None:
            handle.update({"text/plain": ""}, raw=True, metadata={LIVE_MARK: True})
