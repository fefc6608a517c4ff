"""What a training run recorded (losses, validation points, timings, samples), to and from strict JSON.
Returned by train() in every notebook; saved as <output_dir>/<name>/history.json and drawn by analysis/plots.py."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pico_helpers.training.store import atomic_write

__all__ = ["History"]


@dataclass
class History:
    """One run's record, and its position: ``epoch`` and ``step_in_epoch`` say where it resumes.

    Losses are nats per real target token; ``val_points``: (step, validation loss) every ``eval_every`` steps
    (a fixed sample) and at each epoch end (all of it, also ``epoch_val_loss``)."""

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
    epoch_val_loss: list = field(default_factory=list)  # None without a validation split
    epoch_tokens_per_s: list = field(default_factory=list)  # training throughput of each epoch
    tokens_seen: int = 0  # real (unpadded) tokens trained on
    train_time_s: float = 0.0  # time inside training steps
    wall_time_s: float = 0.0  # time inside train(), evaluation and samples included
    samples: list = field(default_factory=list)  # {"step", "greedy", "top_p_0.95"} from the TextSamples callback
    finished: bool = False
    figure: str | None = None  # path of loss.png once written

    @property
    def tokens_per_s(self) -> float | None:
        """Training throughput of the whole run: tokens_seen / train_time_s."""
        return self.tokens_seen / self.train_time_s if self.train_time_s else None

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

    def to_dict(self) -> dict:
        """Plain lists and numbers, with None in place of NaN and infinity (strict JSON)."""
        return _finite(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """Rebuild from ``to_dict()``; unknown keys (an older version's) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        history = cls(**{k: v for k, v in d.items() if k in names})
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
