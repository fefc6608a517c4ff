"""Hooks that train() calls during a run: the Callback base, the live loss plot and the periodic text samples.
Used by train() in every notebook and by pico.py; add your own with ``train(..., callbacks=[...])``."""
from __future__ import annotations

import time

from pico_helpers.analysis.plots import LiveLossPlot, loss_figure, loss_title

__all__ = ["Callback", "LossPlot", "TextSamples"]


class Callback:
    """Override any of these. Each gets the run's History (``history.step`` = steps done so far) and the model."""

    def on_step(self, history, model) -> None:
        """After each optimizer step; its loss is ``history.step_loss[-1]``."""

    def on_eval(self, history, model) -> None:
        """After each mid-epoch validation point, ``history.val_points[-1]``."""

    def on_epoch_end(self, history, model) -> None:
        """After an epoch's losses are recorded and checkpointed."""

    def on_train_end(self, history, model) -> None:
        """Once, after the last epoch, when the run is marked finished and checkpointed."""


class LossPlot(Callback):
    """The run's loss figure, titled ``loss_title(history, model)``: redrawn in place in Jupyter (``live``; default
    only there) at each validation point and epoch end, and written to the RunStore ``store``'s loss.png at the end."""

    def __init__(self, store, live: bool | None = None):
        self.store, self.plot = store, LiveLossPlot(live=live)

    def on_eval(self, history, model) -> None:
        self.plot.title = loss_title(history, model)
        self.plot.update(history)

    on_epoch_end = on_eval

    def on_train_end(self, history, model) -> None:
        self.on_eval(history, model)
        history.figure = str(self.store.save_figure(loss_figure(history, self.plot.title)))


class TextSamples(Callback):
    """Every ``every_s`` seconds: a greedy and a top-p 0.95 sample of 20 tokens after ``prompt``.
    Each is printed with ``say`` and kept in ``history.samples``; ``every_s=0`` turns the samples off."""

    def __init__(self, enc, prompt: str, every_s: float, say=print):
        self.enc, self.prompt, self.every_s, self.say, self.last = enc, prompt, every_s, say, time.perf_counter()

    def on_step(self, history, model) -> None:
        if not self.every_s or time.perf_counter() - self.last < self.every_s:
            return
        from pico_helpers.sample.generate import generate_text

        step = history.step
        try:
            greedy, _ = generate_text(model, self.enc, self.prompt, max_new_tokens=20)
            top_p, _ = generate_text(model, self.enc, self.prompt, max_new_tokens=20, top_p=0.95, seed=step)
        except ValueError as err:  # e.g. non-finite logits
            self.say(f"  (no sample: {err})")
        else:
            self.say(f"  [{history.model}] sample at step {step}, greedy: {greedy!r}\n"
                     f"  [{history.model}] sample at step {step}, top-p 0.95: {top_p!r}")
            history.samples.append({"step": step, "greedy": greedy, "top_p_0.95": top_p})
        self.last = time.perf_counter()
