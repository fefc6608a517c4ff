"""Sparse autoencoders on a trained model's stories, saved and loaded like every run.
Used in 07_monosemanticity.ipynb and by ``pico.py --monosemantic_enabled``.

An SAE run lives in <runs>/sae/<name>/ (or a folder you name): sae.pt (weights, settings, measures, feature labels)
and sae.json (the same settings and measures, readable). It is keyed on its settings and the model's run id, so the
same call loads it the next time, and a changed model or setting trains it again."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pico_helpers.analysis.sae import (SITES, SparseAutoencoder, feature_purity, sae_metrics, top_activations,
                                       train_sae)
from pico_helpers.analysis.sae_stories import held_out_loss_recovered, raw_transformer, story_activations

__all__ = ["SAEConfig", "SAERun", "trained_sae", "load_sae", "saved_sae", "sae_key", "held_out_sample", "SAE_FILE"]

SAE_FILE = "sae.pt"  # pico.py looks for <output_dir>/<model>/sae.pt


# --- settings ---

@dataclass(frozen=True)
class SAEConfig:
    """One SAE run: where it reads the model, its size and sparsity, how it trains, how many tokens it sees.
    layer: block index; site: "resid" (that block's output, d_model wide) or "mlp" (its GELU layer, 4 x d_model).
    n_features; k: top-k (None: ReLU with an ``l1`` penalty). steps, batch_size (tokens), lr, seed,
    resample_every: as train_sae. train_tokens: activations collected from that many training-story tokens;
    eval_tokens: held-out tokens the measures use (None: all)."""

    layer: int = 1
    site: str = "resid"
    n_features: int = 1536
    k: int | None = 32
    l1: float = 5.0
    steps: int = 1500
    batch_size: int = 2048
    lr: float = 1e-3
    seed: int = 0
    resample_every: int | None = 250
    train_tokens: int = 200_000
    eval_tokens: int | None = 50_000

    def __post_init__(self):
        if self.site not in SITES:
            raise ValueError(f"site must be one of {SITES} (residual stream or MLP hidden layer), got {self.site!r}")

    @classmethod
    def quick(cls, **overrides) -> "SAEConfig":
        """A tiny SAE that trains in seconds on a CPU (quick mode, tests)."""
        base = dict(layer=0, n_features=128, k=8, steps=150, batch_size=512, resample_every=50, train_tokens=20_000,
                    eval_tokens=None)
        return cls(**(base | overrides))

    def replace(self, **changes) -> "SAEConfig":
        """A copy with ``changes``, e.g. ``config.replace(site="mlp", k=16)``."""
        return dataclasses.replace(self, **changes)


def sae_key(config: SAEConfig, run_id: str) -> str:
    """The id of an SAE run: a hash of its settings and of the model's run id (History.run_id)."""
    key = {"sae": dataclasses.asdict(config), "model_run_id": run_id}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# --- a saved SAE run ---

@dataclass
class SAERun:
    """A trained SAE with what it was trained on and how it measured on held-out stories.
    metrics: fve, l0, dead_fraction, dense_fraction, loss (clean, zero_ablated, spliced, fraction), train_time_s,
    train_tokens, eval_tokens. sae is on the CPU. frequency (F,): share of held-out tokens each feature fires on. labels: per feature,
    its most common token among its top held-out activations ("" if dead). log: per-step loss, mse, l0."""

    sae: SparseAutoencoder
    config: SAEConfig
    metrics: dict
    frequency: torch.Tensor
    labels: list
    log: dict
    path: Path
    run_id: str
    loaded: bool = False

    @property
    def layer(self) -> int:
        return self.config.layer

    @property
    def site(self) -> str:
        return self.config.site


def _story_lists(split) -> list:
    """The GPT-2 id sequences of a dataset split (TinyStories windows, then lines of files)."""
    return [] if split is None else list(split.tinystories) + list(split.other)


def held_out_sample(corpus, seed: int = 0) -> list:
    """The held-out windows in a seeded random order, so the first eval_tokens of them are a random sample, not the
    validation file's first (and easier) stories. The SAE measures and 07's browser read them in this order."""
    seqs = _story_lists(corpus.val)
    random.Random(seed).shuffle(seqs)
    return seqs


def load_sae(path, run_id: str | None = None) -> SAERun:
    """The SAE run saved at ``path`` (a sae.pt). ``run_id``: refuse (ValueError) an SAE of another model run."""
    from pico_helpers.runs.store import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SAE at {path}; train one with trained_sae(model, corpus, config, name)")
    saved = load_checkpoint(path)
    if run_id is not None and saved["run_id"] != run_id:
        raise ValueError(f"the SAE at {path} was trained on model run {saved['run_id']}, not {run_id}: "
                         "train it again for this model")
    config = SAEConfig(**saved["config"])
    sae = SparseAutoencoder(saved["d_model"], config.n_features, config.k)
    sae.load_state_dict(saved["state_dict"])
    return SAERun(sae.eval(), config, saved["metrics"], saved["frequency"], saved["labels"], saved["log"], path,
                  saved["run_id"], loaded=True)


def saved_sae(folder, run_id: str) -> tuple[SAERun | None, str]:
    """The SAE saved in a model's run folder (``folder``/sae.pt) for run ``run_id``, or None; and a line saying
    which annotation that gives (pico.py prints it)."""
    path = Path(folder) / SAE_FILE
    if not path.is_file():
        return None, "annotated with embedding neighbours (no SAE saved for this run)"
    try:
        run = load_sae(path)
    except Exception as err:  # truncated, not a checkpoint, keys missing: many kinds
        return None, f"annotated with embedding neighbours (cannot read the SAE at {path}: {type(err).__name__})"
    if run.run_id != run_id:
        return None, (f"annotated with embedding neighbours (the SAE at {path} was trained on another run of this "
                      "model: train it again)")
    return run, f"annotated with SAE features from {path}"


def _saved_if_same(path: Path, key: str, name: str, say):
    """The SAERun saved at ``path`` if its key is ``key``; else None, saying why it trains again."""
    if not path.is_file():
        return None
    from pico_helpers.runs.store import load_checkpoint

    try:
        same = load_checkpoint(path).get("key") == key
    except Exception as err:  # truncated or not a checkpoint: as if absent, it is written again
        say(f"[sae {name}] cannot read {path} ({type(err).__name__}): training again")
        return None
    if not same:
        say(f"[sae {name}] the settings or the model changed since {path} was saved: training again")
        return None
    run = load_sae(path)
    say(f"[sae {name}] loaded {path} (trained in {run.metrics['train_time_s']:.0f} s)")
    return run


def _measure(model, corpus, sae, config: SAEConfig, device) -> tuple[dict, dict, list]:
    """(sae_metrics, loss recovered, feature labels) on the held-out stories (config.eval_tokens of them)."""
    held_seqs = held_out_sample(corpus, config.seed)
    held = story_activations(model, held_seqs, config.layer, config.site, config.eval_tokens)
    measured = sae_metrics(sae, held.acts.to(device))
    loss = held_out_loss_recovered(model, sae, held.seqs, config.layer, config.site)
    values, rows, _ = top_activations(sae.encode, held.acts.to(device), n=20)
    modes = feature_purity(values, rows, held.ids)["mode"]  # the token each feature fires on most
    labels = ["" if m < 0 else corpus.enc.decode([int(m)]) for m in modes.tolist()]
    return measured | {"eval_tokens": len(held.acts)}, loss, labels


def _save(folder: Path, sae, config: SAEConfig, key: str, run_id: str, metrics: dict, frequency, labels, log):
    """sae.pt (weights, settings, measures, labels, log) and sae.json (settings and measures), atomically."""
    from pico_helpers.runs.store import atomic_write

    saved = {"state_dict": {k: v.cpu() for k, v in sae.state_dict().items()}, "d_model": sae.d_model,
             "config": dataclasses.asdict(config), "key": key, "run_id": run_id, "metrics": metrics,
             "frequency": frequency, "labels": labels, "log": log}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / SAE_FILE, lambda f: torch.save(saved, f))
    readable = {"config": saved["config"], "run_id": run_id, "key": key, "metrics": metrics}
    atomic_write(folder / "sae.json", lambda f: f.write(json.dumps(readable, indent=1).encode()))


def trained_sae(model, corpus, config: SAEConfig, name: str, quick: bool | None = None, run_id: str = "",
                folder=None, verbose: bool = True) -> SAERun:
    """The SAE of ``config`` on ``model``'s training stories, trained once and loaded afterwards.
    Activations come from a seeded sample of the training stories (``config.train_tokens``); the measures from the
    held-out stories (``config.eval_tokens``): sae_metrics, loss recovered (over all 50,257 ids), feature labels.
    Args: model: a CorpusVocabModel (or TransformerModel); corpus: its Corpus. name: the run's folder name.
        quick: picks runs_root(quick) (None reads quick_mode()). run_id: the model's History.run_id (the key).
        folder: save here instead of runs_root(quick)/sae/<name> (pico.py reads <output_dir>/<model>/).
        verbose: a progress bar and one line."""
    from pico_helpers.config import quick_mode
    from pico_helpers.presets import runs_root
    from pico_helpers.runs.store import check_run_name

    say = print if verbose else (lambda *a, **k: None)
    quick = quick_mode() if quick is None else quick
    folder = Path(folder) if folder is not None else runs_root(quick) / "sae" / check_run_name(name)
    path, key = folder / SAE_FILE, sae_key(config, run_id)
    if (run := _saved_if_same(path, key, name, say)) is not None:
        return run
    train_seqs = _story_lists(corpus.train)
    random.Random(config.seed).shuffle(train_seqs)  # a seeded sample of stories, not the first ones
    if not train_seqs or not _story_lists(corpus.val):
        raise ValueError("the corpus needs training and held-out sequences (a test_fraction > 0)")
    acts = story_activations(model, train_seqs, config.layer, config.site, config.train_tokens).acts
    device, bar = next(raw_transformer(model)[0].parameters()).device, _progress(config.steps, name) if verbose else None
    t0 = time.perf_counter()
    sae, log = train_sae(acts.to(device), config.n_features, config.k, config.l1, config.steps, config.batch_size,
                         config.lr, config.seed, config.resample_every, on_step=bar)
    train_time = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    measured, loss, labels = _measure(model, corpus, sae.eval(), config, device)
    metrics = {k: measured[k] for k in ("fve", "l0", "dead_fraction", "dense_fraction", "eval_tokens")} | {
        "loss": loss, "train_time_s": train_time, "train_tokens": len(acts)}
    _save(folder, sae, config, key, run_id, metrics, measured["frequency"], labels, log)
    say(f"[sae {name}] {config.site} of block {config.layer}, {config.n_features} features, k={config.k}: "
        f"{train_time:.0f} s on {len(acts):,} tokens; held-out loss recovered {loss['fraction']:.3f}, "
        f"L0 {measured['l0']:.1f}, dead {100 * measured['dead_fraction']:.1f} %; saved {path}")
    return SAERun(sae.cpu(), config, metrics, measured["frequency"], labels, log, path, run_id, loaded=False)


def _progress(steps: int, name: str):
    """A tqdm bar as an ``on_step`` callback: step, elapsed, remaining and the current mse and L0."""
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=f"sae {name}", leave=False)

    def on_step(step, log):
        bar.update(1)
        if step % 25 == 0 or step == steps:
            bar.set_postfix(mse=f"{log['mse'][-1]:.4f}", l0=f"{log['l0'][-1]:.1f}")

    on_step.close = bar.close
    return on_step
