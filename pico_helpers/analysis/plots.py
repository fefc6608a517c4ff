"""Loss plots: per-step training loss (smoothed) with per-epoch train and validation means, live in Jupyter.

Used by train() in every notebook, and by pico.py (saved to a file when headless).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["plot_history", "plot_histories", "LiveLossPlot", "in_notebook", "running_mean"]


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


def _epoch_x(history: dict) -> list[float]:
    """The step at which each epoch ended (x position of the epoch markers)."""
    return [float(s) for s in history.get("epoch_end_step", [])]


def plot_history(history: dict, ax=None, title: str | None = None, smooth: int | None = None, color=None):
    """Draw one run: light per-step loss, its running mean, and per-epoch train/validation markers.

    Args:
        history: the dict returned by train() (step_loss, epoch_end_step, epoch_train_loss, epoch_val_loss).
        ax: matplotlib Axes to draw on; a new figure if None.
        title: defaults to "<model> on <data>".
        smooth: running-mean window in steps; default about 2% of the steps (at least 5).
    Returns the Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    steps = list(range(1, len(history["step_loss"]) + 1))
    label = history.get("model", "model")
    if steps:
        window = smooth or max(5, len(steps) // 50)
        line, = ax.plot(steps, history["step_loss"], alpha=0.25, lw=0.8, color=color)
        color = line.get_color()
        ax.plot(steps, running_mean(history["step_loss"], window), lw=1.6, color=color,
                label=f"{label}: train loss per step (mean of {window})")
    ex = _epoch_x(history)
    if history.get("epoch_train_loss"):
        ax.plot(ex, history["epoch_train_loss"], "o", ms=7, color=color, mec="black",
                label=f"{label}: epoch mean train loss")
    val = [(x, v) for x, v in zip(ex, history.get("epoch_val_loss", [])) if v is not None]
    if val:
        ax.plot([x for x, _ in val], [v for _, v in val], "s--", ms=7, color=color, mec="black", mfc="white",
                label=f"{label}: epoch validation loss")
    ax.set_xlabel("training step (batches)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title or f"{label} on {history.get('data', 'data')}", fontsize=10, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_histories(histories: dict, title: str, ax=None, what: str = "val"):
    """Compare runs: validation (``what="val"``) or smoothed train loss curves of several histories on one Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    for name, h in histories.items():
        if what == "val":
            ex = _epoch_x(h)
            pts = [(x, v) for x, v in zip(ex, h.get("epoch_val_loss", [])) if v is not None]
            ax.plot([x for x, _ in pts], [v for _, v in pts], "o-", label=name)
        else:
            steps = range(1, len(h["step_loss"]) + 1)
            ax.plot(steps, running_mean(h["step_loss"], max(5, len(h["step_loss"]) // 50)), label=name)
    ax.set_xlabel("training step (batches)")
    ax.set_ylabel(("validation" if what == "val" else "training") + " cross-entropy (nats per token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


class LiveLossPlot:
    """One loss figure for a training run: updated in place in Jupyter, saved to ``path`` when done.

    In a notebook the figure is displayed once and then replaced in place (no pile of figures);
    headless it is only written to ``path``.
    """

    def __init__(self, path: str | Path | None = None, live: bool | None = None, title: str | None = None):
        self.path = Path(path) if path else None
        self.live = in_notebook() if live is None else live
        self.title = title
        self._handle = None

    def _figure(self, history: dict):
        # A bare Figure needs no pyplot state or GUI backend, so training never opens windows.
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4.5), dpi=100)
        plot_history(history, ax=fig.add_subplot(111), title=self.title)
        fig.tight_layout()
        return fig

    def update(self, history: dict) -> None:
        """Redraw with the latest history (in a notebook only; cheap enough for every few hundred steps)."""
        if not self.live:
            return
        import io

        from IPython.display import Image, display

        buf = io.BytesIO()
        self._figure(history).savefig(buf, format="png", dpi=100)
        image = Image(data=buf.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def finish(self, history: dict) -> Path | None:
        """Final redraw; save the figure to ``path`` (if given) and return that path."""
        self.update(history)
        if self.path is None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._figure(history).savefig(self.path, dpi=120)
        return self.path
