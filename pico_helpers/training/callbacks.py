"""Hooks that train() calls during a run: the Callback base, the live loss plot, the progress (a bar in Jupyter, the
starter's log lines elsewhere) and the periodic text samples.
Used by train() in every notebook and by pico.py; add your own with ``train(..., callbacks=[...])``."""
from __future__ import annotations

import time

from pico_helpers.analysis.plots import LiveLossPlot, loss_figure, loss_title

__all__ = ["Callback", "LossPlot", "ProgressBar", "ProgressLog", "TextSamples"]


class Callback:
    """Override any of these. Each gets the run's History (``history.step`` = steps done so far) and the model."""

    def on_step(self, history, model) -> None:
        """After each optimizer step; its loss is ``history.step_loss[-1]``."""

    def on_eval(self, history, model) -> None:
        """After each mid-epoch validation point, ``history.val_points[-1]``."""

    def on_epoch_end(self, history, model) -> None:
        """After an epoch's losses are recorded and checkpointed."""

    def on_train_end(self, history, model) -> None:
        """Once, after the last epoch, when the run is marked finished (then checkpointed)."""


class LossPlot(Callback):
    """The run's loss figure, titled ``loss_title(history, model)``. In Jupyter (``live``; default only there) it is
    redrawn in place while the run trains: at each validation point and epoch end, and at least every ``every_s``
    seconds. At the end it is written to the RunStore ``store``'s loss.png and the live figure gives way to the
    cell's own figures."""

    def __init__(self, store, live: bool | None = None, every_s: float = 10.0):
        self.store, self.plot, self.every_s, self.last = store, LiveLossPlot(live=live), every_s, time.perf_counter()

    def _redraw(self, history, model) -> None:
        self.plot.title = loss_title(history, model)
        self.plot.update(history)
        self.last = time.perf_counter()

    def on_step(self, history, model) -> None:
        if self.plot.live and time.perf_counter() - self.last >= self.every_s:
            self._redraw(history, model)

    on_eval = on_epoch_end = _redraw

    def on_train_end(self, history, model) -> None:
        self.plot.title = loss_title(history, model)
        history.figure = str(self.store.save_figure(loss_figure(history, self.plot.title)))
        self.plot.finish()


class ProgressBar(Callback):
    """A tqdm.auto bar (a widget in Jupyter): the steps done of the run's ``total_steps`` (or the seconds of its time
    budget ``budget_s``), elapsed and remaining time, and the latest step's loss."""

    def __init__(self, total_steps: int, budget_s: float | None = None):
        self.total, self.budget_s, self.bar = total_steps, budget_s, None

    def on_step(self, history, model) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            total, unit = (round(self.budget_s), "s") if self.budget_s else (self.total, "step")
            self.bar = tqdm(total=total, unit=unit, desc=history.model, dynamic_ncols=True, mininterval=0.5,
                            leave=False)  # gone once the run is done, like the live plot
        done = round(history.train_time_s) if self.budget_s else history.step
        self.bar.set_postfix_str(f"step {history.step}, loss {history.step_loss[-1]:.3f}", refresh=False)
        self.bar.update(done - self.bar.n)

    def on_train_end(self, history, model) -> None:
        if self.bar is not None:
            self.bar.close()


class ProgressLog(Callback):
    """The starter's lines: every ``every`` steps of an epoch its partial average loss, and at each epoch end the
    epoch's mean training and validation loss (outside Jupyter, where ProgressBar and the live plot show both)."""

    def __init__(self, every: int, steps_per_epoch: int, say=print):
        self.every, self.steps, self.say = every, steps_per_epoch, say

    def on_step(self, history, model) -> None:
        i = history.step_in_epoch  # steps of this epoch done (its end is recorded after this hook)
        if self.every and i % self.every == 0:
            mean = sum(history.step_loss[history.step - i:]) / i
            self.say(f"[{history.model}] epoch {history.epoch + 1}, step {i}/{self.steps}: partial average loss "
                     f"{mean:.4f}")

    def on_epoch_end(self, history, model) -> None:
        self.say(history.epoch_line(history.epoch - 1, "***"))


class TextSamples(Callback):
    """Every ``every_s`` seconds: a greedy and a top-p 0.95 sample of 20 tokens after ``prompt``.
    Each is printed with ``say`` and kept in ``history.samples``; ``every_s=0`` turns the samples off."""

    def __init__(self, enc, prompt: str, every_s: float, say=print):
        self.enc, self.prompt, self.every_s, self.say, self.last = enc, prompt, every_s, say, time.perf_counter()

    def on_step(self, history, model) -> None:
        if not self.every_s or time.perf_counter() - self.last < self.every_s:
            return
        from pico_helpers.sample.generate import generate_text

        step, where = history.step, f"epoch {history.epoch + 1}, step {history.step_in_epoch}"  # as the log lines
        try:
            greedy, _ = generate_text(model, self.enc, self.prompt, max_new_tokens=20)
            top_p, _ = generate_text(model, self.enc, self.prompt, max_new_tokens=20, top_p=0.95, seed=step)
        except ValueError as err:  # e.g. non-finite logits
            self.say(f"  (no sample: {err})")
        else:
            self.say(f"  [{history.model}] sample at {where}, greedy: {greedy!r}\n"
                     f"  [{history.model}] sample at {where}, top-p 0.95: {top_p!r}")
            history.samples.append({"step": step, "greedy": greedy, "top_p_0.95": top_p})
        self.last = time.perf_counter()
