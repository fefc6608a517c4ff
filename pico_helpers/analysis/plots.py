"""Loss plots of a run's History: per-step training loss (light, smoothed) with validation loss, live in Jupyter.

Used by train() (its LossPlot callback) in every notebook and by pico.py, which saves the figure as loss.png.
"""
from __future__ import annotations

__all__ = ["plot_history", "plot_histories", "loss_figure", "LiveLossPlot", "in_notebook", "running_mean"]

LOSS_LABEL = "loss (cross-entropy, nats per token)"


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbclient), False in a terminal or plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


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


def _finish_axes(ax, title: str, ylabel: str = LOSS_LABEL):
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")  # plain numbers on the log axis, the in-between ticks labelled at 2, 3 and 5
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}" if f"{y:.0e}"[0] in "235" else ""))
    ax.set_xlabel("training step (one batch each)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # an empty run has nothing to label
        ax.legend(fontsize=8)
    return ax


def plot_history(history, ax=None, title: str | None = None, smooth: int | None = None, color=None):
    """Draw one run: light per-step training loss, its running mean, and validation loss at its steps.

    Args:
        history: a History from train() (step_loss, val_points, model, data).
        ax: matplotlib Axes to draw on; a new figure if None.
        title: default "<run> on <data>".
        smooth: running-mean window in steps; default about 2 % of the steps (at least 5).
    Returns the Axes.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 4.5))
    losses = history.step_loss
    if losses:
        window = smooth or _window(len(losses))
        steps = range(1, len(losses) + 1)
        line, = ax.plot(steps, losses, alpha=0.25, lw=0.8, color=color)
        color = line.get_color()
        ax.plot(steps, running_mean(losses, window), lw=1.6, color=color,
                label=f"{history.model}: training loss (running mean of {window} steps)")
    val = [(s, v) for s, v in history.val_points if v is not None]
    if val:
        ax.plot(*zip(*val), "o--", ms=5, color=color, mec="black", mfc="white",
                label=f"{history.model}: validation loss")
    data = history.data.split(", tinystories_weight")[0]  # the sources, without the sizes and switches
    return _finish_axes(ax, title or f"{history.model} on {data or 'its data'}")


def plot_histories(histories: dict, title: str, ax=None, what: str = "val"):
    """Compare runs on one Axes: their validation loss (``what="val"``) or smoothed training loss (``"train"``).

    Args:
        histories: label -> History.
        title: the plot's title (name the models and the data).
    """
    if what not in ("val", "train"):
        raise ValueError(f"what must be 'val' or 'train', got {what!r}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 4.5))
    for label, h in histories.items():
        if what == "val":
            points = [(s, v) for s, v in h.val_points if v is not None]
            if points:
                ax.plot(*zip(*points), "o-", ms=3, label=label)
        else:
            ax.plot(range(1, len(h.step_loss) + 1), running_mean(h.step_loss, _window(len(h.step_loss))), label=label)
    return _finish_axes(ax, title, ("validation " if what == "val" else "training (running mean) ") + LOSS_LABEL)


def loss_figure(history, title: str | None = None):
    """``plot_history`` on a bare matplotlib Figure (no pyplot state, no GUI window), e.g. to save as loss.png."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    plot_history(history, ax=fig.add_subplot(111), title=title)
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """A loss figure shown once in a Jupyter cell and then redrawn in place (no pile of figures).

    Args:
        live: draw at all; default only inside Jupyter.
        title: passed to plot_history.
    """

    def __init__(self, live: bool | None = None, title: str | None = None):
        self.live = in_notebook() if live is None else live
        self.title = title
        self._handle = None

    def update(self, history) -> None:
        """Redraw with the latest history (cheap enough for a dozen times a run)."""
        if not self.live:
            return
        import io

        from IPython.display import Image, display

        buf = io.BytesIO()
        loss_figure(history, self.title).savefig(buf, format="png", dpi=100)
        image = Image(data=buf.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
