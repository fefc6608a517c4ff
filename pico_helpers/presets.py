"""The runs that several notebooks share, defined once: ``preset("compare_tinystories", quick)``.
A later notebook gets the same config, so it loads the finished run instead of retraining. Used in 01, 03-06."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pico_helpers.config import MODEL_NAMES, TrainConfig, quick_mode

__all__ = ["preset", "PRESETS", "COMPARE_MODELS", "SWEEP_RATES", "SEEDS", "BUDGET_S", "SWEEP_S", "TEST_SPLIT",
           "LONG_RUN", "runs_root", "tinystories_source", "tinystories_valid_source", "Compared", "compare", "Trained",
           "long_config", "trained_transformer"]

COMPARE_MODELS = MODEL_NAMES  # the three models of the comparison, in the course's order
SAMPLE_STORIES = "input_files/tinystories_sample.txt"  # the repository's offline sample (quick mode)


def runs_root(quick: bool) -> Path:
    """Where this mode's runs are saved: $PICO_RUNS_DIR (default runs/) / quick or full."""
    return Path(os.environ.get("PICO_RUNS_DIR", "runs")) / ("quick" if quick else "full")


def tinystories_source(quick: bool) -> str | None:
    """The TinyStories file to read: $PICO_TINYSTORIES, else the repository's sample in quick mode, else None (the hub)."""
    return os.environ.get("PICO_TINYSTORIES") or (SAMPLE_STORIES if quick else None)


def tinystories_valid_source(quick: bool) -> str | None:
    """A separate validation file ($PICO_TINYSTORIES_VALID, full runs only), or None: hold out 10 % of the stories."""
    return None if quick else os.environ.get("PICO_TINYSTORIES_VALID") or None


TEST_SPLIT = 0.05  # share of the training stories held out as the test set of 04's headline numbers (corpus.test)


# --- the shared runs: each returns the config for (quick, runs folder, TinyStories source) ---

def _lstm_3seqs(quick: bool, runs: Path, tiny: str | None) -> TrainConfig:
    """The course's sanity check: the starter's LSTM on 3seqs at block 32 (01 trains it, 03 reuses it)."""
    if quick:
        return TrainConfig.quick(embed_size=32, epochs=2, max_steps_per_epoch=15, log_every=15,
                                 test_fraction=0.02, output_dir=str(runs / "lstm"))
    return TrainConfig(input_files=["input_files/3seqs.txt"], tinystories_weight=0.0, block_size=32,
                       embed_size=128, epochs=2, max_steps_per_epoch=200, sample_every_s=0.0,
                       prompt="0 1 2 3 4", output_dir=str(runs / "lstm"))


def _lstm_tinystories(quick: bool, runs: Path, tiny: str | None) -> TrainConfig:
    """The same LSTM on TinyStories for 3 minutes, prompt "Once upon a" (01 trains it, 03 reuses it)."""
    if quick:
        return TrainConfig.quick(input_files=[], tinystories_weight=1.0, tinystories_path=tiny,
                                 tinystories_stories=200, block_size=64, embed_size=32, epochs=1,
                                 max_steps_per_epoch=20, log_every=20, prompt="Once upon a",
                                 output_dir=str(runs / "lstm"))
    return TrainConfig(input_files=[], tinystories_weight=1.0, tinystories_path=tiny, block_size=128,
                       tinystories_valid_path=tinystories_valid_source(quick), embed_size=128, epochs=100,
                       time_budget_s=180.0, sample_every_s=0.0, log_every=0, prompt="Once upon a",
                       output_dir=str(runs / "lstm"))


def _compare_tinystories(quick: bool, runs: Path, tiny: str | None) -> TrainConfig:
    """The three models (COMPARE_MODELS) on TinyStories with one config and BUDGET_S seconds each; see compare().
    TEST_SPLIT of the training stories are held out first as corpus.test, for the final numbers only."""
    if quick:
        return TrainConfig.quick(tinystories_weight=1.0, tinystories_path=tiny, tinystories_stories=200,
                                 test_split=TEST_SPLIT, block_size=32, embed_size=32, n_heads=2, n_blocks=1,
                                 kgram_input_mode="embedding", epochs=3, max_steps_per_epoch=5, eval_every=0,
                                 output_dir=str(runs / "compare"))  # eval_every 0: a point at each epoch end
    return TrainConfig(tinystories_weight=1.0, tinystories_path=tiny, tinystories_stories=20000, test_split=TEST_SPLIT,
                       tinystories_valid_path=tinystories_valid_source(quick), block_size=128, embed_size=128,
                       n_heads=4, n_blocks=4, kgram_chunk_size=0, kgram_input_mode="embedding", batch_size=16,
                       epochs=100, time_budget_s=BUDGET_S, lr_schedule="cosine", warmup_steps=WARMUP_STEPS,
                       sample_every_s=0, log_every=0, output_dir=str(runs / "compare"))


PRESETS = {"lstm_3seqs": _lstm_3seqs, "lstm_tinystories": _lstm_tinystories,
           "compare_tinystories": _compare_tinystories}


def preset(name: str, quick: bool | None = None) -> TrainConfig:
    """The config of a shared run.

    Args: name: one of PRESETS (the LSTM presets are also run names; "compare_tinystories" runs per COMPARE_MODELS);
        quick: small sizes for smoke runs; None reads ``quick_mode()``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    quick = quick_mode() if quick is None else quick
    return PRESETS[name](quick, runs_root(quick), tinystories_source(quick))


# --- the equal-time comparison (04 trains it; 05 and 06 load it) ---

# Seconds of training steps: each final run, each try of the sweep. With tries and evaluations, compare() takes
# 25-28 minutes on 2 CPU cores (04_transformer.ipynb gives the sum).
BUDGET_S, SWEEP_S = 120.0, 20.0
WARMUP_STEPS = 50  # then cosine decay to the end of the budget (a try decays over its own SWEEP_S)
SEEDS = (0, 1, 2)  # the final runs: seed s gives every model the same batch order and held-out set
# The first rates each model tries; sweep() adds 1-2-5 rates past an edge until the best is inside (MAX_EXTEND).
SWEEP_RATES = {"kgram_mlp_seq": (5e-3, 1e-2, 2e-2), "lstm_seq": (5e-3, 1e-2, 2e-2),
               "kvcache_transformer": (2e-3, 5e-3, 1e-2)}


@dataclass
class Compared:
    """One model of the comparison. ``model``, ``history``: its first finished seed (seed 0), which 05 samples from;
    ``learning_rate``: the rate chosen on validation; ``sweep``: rate -> validation loss after a short try (None:
    diverged; a rate missing was not tried); ``seeds``: seed -> (model, History) of the final runs (None: diverged);
    ``val_losses``: seed -> final validation loss; ``corpora``: seed -> the Corpus of that seed's runs."""

    model: object
    history: object
    learning_rate: float
    sweep: dict
    config: TrainConfig | None = None  # the final runs' config (their seed replaced)
    seeds: dict = field(default_factory=dict)
    val_losses: dict = field(default_factory=dict)
    corpora: dict = field(default_factory=dict)
    _test: dict | None = field(default=None, init=False, repr=False)

    def test_losses(self) -> dict | None:
        """seed -> loss of that seed's final run on its corpus's test stories (held out of the training file; no
        choice looks at them), evaluated once and remembered; None if the corpus has no test set."""
        from pico_helpers.training import evaluate

        if self._test is None and all(c.test is not None for c in self.corpora.values()):
            self._test = {s: evaluate(run[0], self.corpora[s].test, self.config) if run else None
                          for s, run in self.seeds.items()}
        return self._test


def _budget_tag(config: TrainConfig) -> str:
    """A run name's part that says how long it trains ("20s", quick mode "1ep"): a changed budget is a new run."""
    return f"{config.time_budget_s:g}s" if config.time_budget_s else f"{config.epochs}ep"


def _sweep(name: str, short: TrainConfig, corpus, verbose: bool) -> dict:
    """sweep() of one model: each try trains ``short`` at the rate (seed 0), saved as <name>_try<budget>_lr<rate>."""
    from pico_helpers.models import build_model
    from pico_helpers.training import Diverged, train
    from pico_helpers.workbook.comparison import sweep

    def try_rate(rate: float) -> float | None:
        if verbose:
            print(f"compare(): {name}, a {_budget_tag(short)} try at learning rate {rate:g} (the sweep)")
        config = short.replace(learning_rate=rate)
        try:
            history = train(build_model(name, config, corpus.vocab), corpus, config,
                            f"{name}_try{_budget_tag(short)}_lr{rate:g}", verbose=verbose)
        except Diverged:
            return None
        return history.val_loss  # the whole validation set at the try's end

    return sweep(try_rate, SWEEP_RATES[name])


def _final_runs(base: TrainConfig, rates: dict, corpus, seeds, verbose: bool):
    """over_seeds() of every model at its rate: (SeedStudy, {seed: Corpus}); seed ``base.seed`` reuses ``corpus``."""
    from pico_helpers.analysis.seeds import over_seeds
    from pico_helpers.data import load_corpus

    corpora = {base.seed: corpus}

    def corpus_for(config):
        if config.seed not in corpora:
            corpora[config.seed] = load_corpus(config)
        return corpora[config.seed]

    variants = {name: (name, base.replace(learning_rate=rate)) for name, rate in rates.items()}
    study = over_seeds(variants, seeds, corpus_for=corpus_for, verbose=verbose,
                       run_name=lambda name, s: f"{name}_{_budget_tag(base)}_lr{rates[name]:g}_seed{s}")
    return study, {s: corpora[s] for s in seeds}


def compare(corpus, quick: bool | None = None, names=COMPARE_MODELS, verbose: bool = True, seeds=SEEDS) -> dict:
    """Each model of ``names``: a SWEEP_S-second try per rate (seed 0; SWEEP_RATES, extended past an edge until
    the best rate is inside), then BUDGET_S-second runs at the best rate on every seed of ``seeds``, paired across
    the models. Warm-up, then cosine decay over each run's budget. Returns {name: Compared}; runs are saved and load
    at once the next time. Quick mode: 5-step tries, then 15 steps per seed.

    Args: corpus: load_corpus(preset("compare_tinystories", quick)); verbose: the live plots and progress lines."""
    from pico_helpers.workbook.comparison import best_rate

    quick = quick_mode() if quick is None else quick
    base = preset("compare_tinystories", quick)
    short = base.replace(epochs=1) if quick else base.replace(time_budget_s=SWEEP_S)
    sweeps = {name: _sweep(name, short, corpus, verbose) for name in names}
    rates = {name: best_rate(losses) for name, losses in sweeps.items()}
    if None in rates.values():
        raise ValueError(f"every try of {[n for n, r in rates.items() if r is None]} diverged, down to "
                         f"{min(min(sweeps[n]) for n, r in rates.items() if r is None):g}: lower SWEEP_RATES")
    study, corpora = _final_runs(base, rates, corpus, seeds, verbose)
    results = {}
    for name in names:
        runs = {s: study.runs[(name, s)] for s in seeds}
        first = next((run for run in runs.values() if run), None)
        if first is None:
            raise ValueError(f"{name} diverged on every seed at learning rate {rates[name]:g}: lower SWEEP_RATES")
        results[name] = Compared(first[0], first[1], rates[name], sweeps[name], base.replace(learning_rate=rates[name]),
                                 runs, dict(study.scores[name]), corpora)
    return results


# --- the trained Transformer (04 trains it; 04-06 show its samples, attention and embeddings) ---

# The comparison's Transformer stops improving after about 5 passes over the 7,038 training stories (1.44M tokens),
# so the model shown is not that one trained for longer: it is wider and reads whole stories (block 256 holds 92 % of
# the held-out stories in one window, so a token sees its story from its start), for a fixed number of passes rather
# than seconds (on a small sample the passes, not the seconds, decide when it overfits). One probe run per setting
# chose these (block 256: width 128 for 6 passes, 192 for 5 and 7, 192 x 6 blocks, 256; README.md, "The full run"),
# each scored on the validation stories: 04 reports this run's loss on the test stories (TEST_SPLIT), once.
LONG_RUN = {"embed_size": 192, "block_size": 256, "learning_rate": 1.5e-3, "epochs": 7, "time_budget_s": None}


@dataclass
class Trained:
    """The trained Transformer: the model, its History and the corpus it was trained on (block LONG_RUN's)."""

    model: object
    history: object
    corpus: object


def long_config(quick: bool | None = None) -> TrainConfig:
    """The trained Transformer's config: the comparison's with LONG_RUN's changes (quick mode: twice its epochs)."""
    quick = quick_mode() if quick is None else quick
    base = preset("compare_tinystories", quick)
    return base.replace(epochs=2 * base.epochs) if quick else base.replace(**LONG_RUN)


def trained_transformer(quick: bool | None = None, verbose: bool = True,
                        config: TrainConfig | None = None) -> Trained:
    """The Transformer of long_config(quick), trained once (warm-up, then cosine decay over its epochs) and loaded
    afterwards: the model whose samples, attention and embeddings 04-06 show. ``config``: another config to train
    the same way instead (tools/probe_long_run.py)."""
    from pico_helpers.data import load_corpus
    from pico_helpers.models import build_model
    from pico_helpers.training import train

    config = config or long_config(quick)
    corpus = load_corpus(config)
    model = build_model("kvcache_transformer", config, corpus.vocab)
    history = train(model, corpus, config, "kvcache_transformer_long", verbose=verbose)
    return Trained(model, history, corpus)
