"""Time to a validation loss: the old default training path raced against the new default on TinyStories."""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.harness import bf16_reason
from pico_helpers.config import TrainConfig
from pico_helpers.data import iterate_batches, load_corpus, split_train_val
from pico_helpers.data.sources import load_tinystories
from pico_helpers.data.tokenizer import get_tokenizer
from pico_helpers.models import build_model
from pico_helpers.training import evaluate, lr_at, make_optimizer, train_step, use_bf16

__all__ = ["OLD_DEFAULTS", "tinystories_files", "side_configs", "held_out_windows", "Side", "race",
           "time_to_reach"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
REPO_SAMPLE = ROOT / "input_files" / "tinystories_sample.txt"
EVAL_BATCH = 64  # held-out windows per forward pass when scoring (no gradients: larger batches cost no memory)

# The training path as it was before issue 11: the baseline sets these explicitly (where the field exists).
OLD_DEFAULTS = dict(vocab="full", long_examples="truncate", bucket_by_length=False, bf16=False,
                    lr_schedule="constant", learning_rate=1e-3)


# --- data ---

def tinystories_files(quick: bool) -> tuple[Path, Path | None]:
    """(training file, validation file or None): the repository's sample in quick mode; else ../shared/data's
    training and validation samples when present, else $PICO_TINYSTORIES, else the repository's sample."""
    shared = (SHARED_DATA / "tinystories_train_sample.txt", SHARED_DATA / "tinystories_valid_sample.txt")
    if quick:
        return REPO_SAMPLE, None
    if all(p.is_file() for p in shared):
        return shared
    env = os.environ.get("PICO_TINYSTORIES")
    return (Path(env), None) if env else (REPO_SAMPLE, None)


def side_configs(sizes, train_path: Path, val_path: Path | None, device, fast_changes: dict | None = None):
    """{"baseline": TrainConfig, "fast": TrainConfig}: the fast side is TrainConfig's default for this shape and data
    (plus ``fast_changes``); the baseline the same with OLD_DEFAULTS."""
    fast = TrainConfig(input_files=[], tinystories_weight=1.0, tinystories_path=str(train_path),
                       tinystories_stories=sizes.ttl_stories, block_size=sizes.tf_block, embed_size=sizes.tf_d,
                       n_heads=sizes.tf_heads, n_blocks=sizes.tf_layers, batch_size=sizes.tf_batch,
                       test_fraction=0.0 if val_path else 0.1, device_id=str(device), seed=0, log_every=0,
                       sample_every_s=0.0).replace(**(fast_changes or {}))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {"baseline": fast.replace(**{k: v for k, v in OLD_DEFAULTS.items() if k in names}), "fast": fast}


def _windows(seq: list[int], block: int) -> list[list[int]]:
    """Consecutive block-size windows overlapping by one token: every next-token pair of ``seq`` in exactly one."""
    return [seq[i:i + block] for i in range(0, max(len(seq) - 1, 1), block - 1)]


def held_out_windows(config, val_path: Path | None, n_stories: int) -> list[list[int]]:
    """GPT-2 ids of ``n_stories`` held-out stories, in block-size windows: the validation file's first stories, or
    (no file) the stories that load_corpus holds out of ``config``'s training file (same split, same seed)."""
    enc = get_tokenizer()
    if val_path is not None:
        stories = load_tinystories(enc, n_stories=n_stories, path=str(val_path))
    else:
        every = load_tinystories(enc, n_stories=config.tinystories_stories, path=config.tinystories_path)
        stories = split_train_val(every, config.test_fraction, config.seed)[1][:n_stories]
    return [w for s in stories for w in _windows(s, config.block_size)]


# --- one side of the race ---

def _train_batches(corpus, config):
    """The training loop's batches, epoch after epoch (bucketed by length where the config says so)."""
    bucket = {"bucket": config.bucket_by_length} if hasattr(config, "bucket_by_length") else {}
    epoch = 0
    while True:
        corpus.train.set_epoch(epoch)
        yield from iterate_batches(corpus.train, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                                   **bucket)
        epoch += 1


@dataclass
class Side:
    """One training run of the race: its config, data, model, optimizer, clock and validation points."""

    name: str
    config: object  # its bf16 resolved for this device, as train() resolves it
    corpus: object
    model: torch.nn.Module  # reads GPT-2 ids (a corpus-vocabulary model comes wrapped in CorpusVocabModel)
    optimizer: torch.optim.Optimizer
    bf16: bool
    bf16_why: str
    val: list  # held-out windows of GPT-2 ids
    budget_s: float = 0.0  # seconds of training this side gets
    total_steps: int = 1  # the schedule's horizon: the steps this side is projected to take in its budget
    clock: float = 0.0  # seconds of training so far
    steps: int = 0
    tokens: int = 0  # real (non-padding) tokens trained on
    points: list = field(default_factory=list)  # (clock s, validation loss)
    batches: object = None  # this side's endless batch iterator

    @classmethod
    def build(cls, name: str, config, val_gpt2: list[list[int]], device) -> "Side":
        """Load the corpus the config asks for, build the Transformer and its optimizer, resolve bf16."""
        corpus = load_corpus(config)
        model = build_model("kvcache_transformer", config, corpus.vocab).to(device)
        bf16, why = use_bf16(config, device), bf16_reason(config, device)
        side = cls(name, config.replace(bf16=bf16), corpus, model, make_optimizer(model, config.learning_rate), bf16,
                   why, val_gpt2)
        side.batches = _train_batches(corpus, config)
        return side

    def warm_up(self) -> None:
        """One step, then back to the start (initial weights, a fresh optimizer, the first batch): the first step's
        one-off costs (kernel set-up, first allocations) stay off the clock."""
        start = copy.deepcopy(self.model.state_dict())
        self.step()
        self.model.load_state_dict(start)
        self.optimizer = make_optimizer(self.model, self.config.learning_rate)
        self.batches = _train_batches(self.corpus, self.config)
        self.clock, self.steps, self.tokens = 0.0, 0, 0

    def step(self) -> None:
        """One training step on this side's clock: next batch, learning rate, loss, backward, Adam update."""
        device = next(self.model.parameters()).device
        t0 = time.perf_counter()
        tokens, mask = next(self.batches)
        tokens, mask = tokens.to(device), mask.to(device)
        if self.steps:  # a budget of time, not of steps: project the steps it holds at the pace so far
            self.total_steps = max(self.steps + 1, round(self.steps * self.budget_s / self.clock))
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.steps, self.config, self.total_steps)
        train_step(self.model, self.optimizer, tokens, mask, self.config)
        self.clock += time.perf_counter() - t0  # train_step syncs the device (it reads the loss)
        self.steps += 1
        self.tokens += int(mask.sum())

    def score(self) -> float:
        """Validation loss on the held-out windows (float32, off the clock); recorded at the current clock."""
        loss = evaluate(self.model, self.val, self.config.replace(batch_size=EVAL_BATCH, bf16=False))
        self.points.append((self.clock, loss))
        return loss


# --- the race ---

def race(sizes, device, fast_changes: dict | None = None, log=print) -> dict:
    """Train the baseline and the fast side for ``sizes.ttl_budget_s`` each on their own clocks, turn about.

    Both sides train the same Transformer shape from the same seed and take turns one step at a time: the side
    whose clock is behind steps next, so both clocks advance together and a slow spell of the machine falls on both.
    A clock counts what a training loop does (fetch the next batch, set the learning rate, the step itself); an
    untimed warm-up step before (then back to the initial weights) and scoring the held-out set are off the clock.
    Both sides are scored at every tenth of their budget on the same held-out story windows, in float32, as a
    cross-entropy over all 50,257 GPT-2 ids (a corpus-vocabulary model's "other" class shares its probability among
    the ids it stands for), so the two losses are the same kind of number.
    Returns {"sides": {name: Side}, "data": description, "reached_s": seconds or None, "final": {name: loss}}.
    """
    train_path, val_path = tinystories_files(sizes.quick_mode)
    configs = side_configs(sizes, train_path, val_path, device, fast_changes)
    val_gpt2 = held_out_windows(configs["fast"], val_path, sizes.ttl_val_stories)
    sides = {name: Side.build(name, cfg, val_gpt2, device) for name, cfg in configs.items()}
    budget = sizes.ttl_budget_s
    for side in sides.values():
        side.budget_s = budget
        side.warm_up()
        side.score()
    marks = {name: 1 for name in sides}  # the next tenth of the budget at which to score each side
    while running := [s for s in sides.values() if s.clock < budget]:
        side = min(running, key=lambda s: s.clock)
        side.step()
        crossed = min(sizes.ttl_points, int(side.clock * sizes.ttl_points / budget))
        if crossed >= marks[side.name]:
            marks[side.name] = crossed + 1
            loss = side.score()
            log(f"[time_to_loss] {side.name}: {side.clock:5.1f} s, {side.steps} steps, validation loss {loss:.3f}",
                flush=True)
    final = {name: s.points[-1][1] for name, s in sides.items()}
    reached = time_to_reach(sides["fast"].points, final["baseline"])
    data = (f"{train_path.name} for training, held out: "
            + (f"the first {sizes.ttl_val_stories} stories of {val_path.name}" if val_path
               else f"{sizes.ttl_val_stories} stories of the 10% split")
            + f" ({sum(map(len, val_gpt2)):,} tokens in {len(val_gpt2)} windows)")
    return {"sides": sides, "data": data, "reached_s": reached, "final": final}


def time_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """The first clock time at which the loss curve ``points`` (clock, loss) reaches ``target``, linearly
    interpolated between the two validation points around it; None if it never does."""
    for i, (t1, l1) in enumerate(points):
        if l1 <= target:
            if i == 0:
                return t1
            t0, l0 = points[i - 1]  # l0 > target >= l1
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None
