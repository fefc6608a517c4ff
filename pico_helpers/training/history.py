"""What a training run recorded (losses, validation points, timings, samples), to and from strict JSON.
Returned by train() in every notebook; saved as <output_dir>/<name>/history.json and drawn by analysis/plots.py."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pico_helpers.runs.store import atomic_write

__all__ = ["History"]


@dataclass
class History:
    """One run's record, and its position: ``epoch`` and ``step_in_epoch`` say where it resumes.

    Losses are nats per real target token. One protocol per curve: ``val_points`` are (step, validation loss) every
    ``eval_every`` steps and at each epoch end, all on the same fixed sample of the held-out set (``val_sample_size``
    of its ``val_size`` sequences; all of them when it is small); ``epoch_val_loss`` scores the whole held-out set at
    each epoch end, and ``val_loss`` is the last of those: the number a run reports."""

    model: str = "model"  # the run's name
    data: str = ""  # the corpus's description
    config: dict = field(default_factory=dict)  # TrainConfig.to_dict() of the latest call
    run_id: str = ""  # hash of the meaningful config fields, the data and the model's shapes (store.run_identity)
    device: str = "cpu"
    bf16: bool = False
    n_params: int = 0
    vocab_size: int = 0
    step_loss: list = field(default_factory=list)  # training loss of every step
    val_points: list = field(default_factory=list)  # (step, validation loss)
    epoch_end_step: list = field(default_factory=list)  # steps done at each epoch end
    epoch_train_loss: list = field(default_factory=list)  # mean step loss of each epoch
    epoch_val_loss: list = field(default_factory=list)  # the whole held-out set; None without a validation split
    val_size: int = 0  # held-out sequences (windows) in the whole set
    val_sample_size: int = 0  # of them, the fixed sample that every point of val_points scores
    epoch_tokens_per_s: list = field(default_factory=list)  # training throughput of each epoch
    tokens_seen: int = 0  # real (unpadded) tokens trained on
    train_time_s: float = 0.0  # time inside training steps
    wall_time_s: float = 0.0  # time inside train(), evaluation and samples included
    samples: list = field(default_factory=list)  # {"step", "greedy", "top_p_0.95"} from the TextSamples callback
    finished: bool = False
    figure: str | None = None  # path of loss.png once written
    eval_pending: bool = False  # a mid-epoch validation point is due at this step but not recorded yet

    @property
    def tokens_per_s(self) -> float | None:
        """Training throughput of the whole run: tokens_seen / train_time_s."""
        return self.tokens_seen / self.train_time_s if self.train_time_s else None

    @property
    def val_loss(self) -> float | None:
        """The validation loss of the whole held-out set at the last epoch end: the number a run reports."""
        return next((v for v in reversed(self.epoch_val_loss) if v is not None), None)

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return len(self.step_loss)

    @property
    def epoch(self) -> int:
        """Epochs done, i.e. the index of the epoch in progress."""
        return len(self.epoch_end_step)

    @property
    def step_in_epoch(self) -> int:
        """Steps done in the epoch in progress."""
        return self.step - (self.epoch_end_step[-1] if self.epoch_end_step else 0)

    def record_step(self, loss: float, n_tokens: int, seconds: float) -> None:
        """One optimizer step done: its loss, the real tokens it trained on and the seconds it took."""
        self.step_loss.append(loss)
        self.tokens_seen, self.train_time_s = self.tokens_seen + n_tokens, self.train_time_s + seconds

    def record_epoch(self, loss_sum: float, val_loss: float | None, val_point: float | None,
                     tokens_per_s: float | None) -> None:
        """The epoch in progress is done: its mean step loss (from the sum of its step losses), the whole held-out
        set's loss and the fixed sample's (``val_point``, for val_points). The epoch's end step goes last, since it
        moves the run on to the next epoch."""
        self.epoch_train_loss.append(loss_sum / max(self.step_in_epoch, 1))
        self.epoch_val_loss.append(val_loss)
        self.epoch_tokens_per_s.append(tokens_per_s)
        self.val_points += [(self.step, val_point)] if val_point is not None else []
        self.epoch_end_step.append(self.step)

    def epoch_line(self, i: int, mark: str) -> str:
        """The starter's end-of-epoch line for epoch ``i``, with a hint when the loss is far above a uniform guess."""
        train_loss, val, speed = self.epoch_train_loss[i], self.epoch_val_loss[i], self.epoch_tokens_per_s[i]
        uniform = math.log(max(self.vocab_size, 2))  # the loss of a uniform guess
        return (f"[{self.model}] {mark} end of epoch {i + 1}: train loss {train_loss:.4f}, validation loss "
                + (f"{val:.4f}" if val is not None else "n/a (no validation split)")
                + (f", {speed:,.0f} tokens/s" if speed else "")
                + (f" (far above ln(vocab) = {uniform:.2f}: lower the learning rate)" if train_loss > 2 * uniform
                   else f" (still ln(vocab) = {uniform:.2f}, a uniform guess: the model has not learned yet; if it "
                        "stays there, try another learning rate)" if abs(train_loss - uniform) < 0.02 * uniform
                   else ""))

    def to_dict(self) -> dict:
        """Plain lists and numbers, with None in place of NaN and infinity (strict JSON)."""
        return _finite(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """Rebuild from ``to_dict()``; a ValueError naming the field if one has the wrong type (a damaged or
        hand-edited file)."""
        if not isinstance(d, dict) or set(d) - {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(f"not a History: unknown fields {sorted(set(d) - {f.name for f in dataclasses.fields(cls)})}"
                             if isinstance(d, dict) else f"not a History: a {type(d).__name__}")
        history = cls(**d)
        number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
        loss = lambda x: x is None or number(x)  # noqa: E731 (None: a non-finite loss, strict JSON has no NaN)
        checks = {"step_loss": lambda v: all(map(loss, v)), "epoch_end_step": lambda v: all(map(number, v)),
                  "val_points": lambda v: all(isinstance(p, (list, tuple)) and len(p) == 2 and number(p[0])
                                              and (p[1] is None or number(p[1])) for p in v),
                  "epoch_train_loss": lambda v: all(map(loss, v)), "epoch_val_loss": lambda v: all(map(loss, v))}
        for f in dataclasses.fields(cls):
            value, default = getattr(history, f.name), f.default_factory() if callable(f.default_factory) else f.default
            kind = (int, float) if isinstance(default, float) else str if default is None else type(default)
            ok = isinstance(value, kind) or (value is None and default is None)  # figure: None or a path
            if not ok or (isinstance(value, list) and not checks.get(f.name, lambda v: True)(value)):
                raise ValueError(f"History field {f.name!r} holds {type(value).__name__} {str(value)[:60]!r}, "
                                 f"not {kind.__name__ if isinstance(kind, type) else 'a number'} of the right kind")
        history.val_points = [tuple(p) for p in history.val_points]
        return history

    def to_json(self, path: str | Path) -> None:
        """Write as strict JSON, atomically (a reader never sees half a file)."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        atomic_write(path, lambda f: f.write(text.encode()))

    @classmethod
    def from_json(cls, path: str | Path) -> "History":
        """Read a history.json written by ``to_json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _finite(x):
    """``x`` with every non-finite float replaced by None (and tuples as lists)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return {k: _finite(v) for k, v in x.items()} if isinstance(x, dict) else x
