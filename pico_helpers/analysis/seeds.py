"""Comparing variants over paired seeds: each variant's mean and sd, each paired difference with its 95 % interval
and p. Used in 02_kgram_mlp to 06_experiments, wherever one variant is said to beat another."""
from __future__ import annotations

import math
import re
import statistics
import warnings
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Paired", "paired_difference", "SeedStudy", "over_seeds", "final_val_loss", "run_names"]

# What load_corpus reads from a config: variants of one seed whose configs agree on these share one corpus.
DATA_FIELDS = ("input_files", "tinystories_weight", "tinystories_path", "tinystories_stories",
               "tinystories_valid_path", "block_size", "test_fraction", "test_split", "long_examples",
               "bucket_by_length", "vocab", "seed", "batch_size")


# --- a paired difference over seeds ---

@dataclass(frozen=True)
class Paired:
    """The difference ``b - a`` of a score over seeds that both ran: its mean, the sd of the per-seed differences,
    the ``confidence`` interval (low, high) of the mean (Student's t, n - 1 df) and the paired t-test's p.
    ``dropped``: seeds that could not be paired (missing from one side, or a None / non-finite score there)."""

    a: str
    b: str
    n: int
    mean: float
    sd: float
    low: float
    high: float
    p: float
    confidence: float
    dropped: tuple = ()

    def excludes_zero(self) -> bool:
        """True if the interval lies wholly above or below zero: a difference these seeds can detect."""
        return self.low > 0 or self.high < 0

    def sentence(self, what: str = "validation loss", unit: str = "nats") -> str:
        """The difference in words, e.g. "post-norm minus pre-norm (validation loss): +0.120 nats (95 % CI +0.080
        to +0.160, 3 paired seeds, p = 0.004)"; an interval holding zero starts "no difference detectable with 3
        seeds:" and still gives the mean and the interval."""
        level = f"{100 * self.confidence:g} % CI {self.low:+.3f} to {self.high:+.3f}"
        p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
        dropped = f", {len(self.dropped)} unpaired seed{'s' * (len(self.dropped) != 1)} left out" if self.dropped else ""
        subject = f"{self.b} minus {self.a} ({what})" if what else f"{self.b} minus {self.a}"
        if self.excludes_zero():
            return f"{subject}: {self.mean:+.3f} {unit} ({level}, {self.n} paired seeds, {p}{dropped})"
        return (f"no difference detectable with {self.n} seeds: {subject} is {self.mean:+.3f} {unit} "
                f"({level}, {p}{dropped})")


def _pairs(a: dict, b: dict) -> tuple[list, list, tuple]:
    """(a's scores, b's scores, unpaired seeds) over the seeds where both scores are finite numbers."""
    usable = lambda x: x is not None and math.isfinite(x)  # noqa: E731
    seeds = [s for s in a if s in b and usable(a[s]) and usable(b[s])]
    dropped = tuple(s for s in {**a, **b} if s not in seeds)
    return [float(a[s]) for s in seeds], [float(b[s]) for s in seeds], dropped


def paired_difference(a: dict, b: dict, a_name: str = "A", b_name: str = "B", confidence: float = 0.95) -> Paired:
    """The paired difference ``b - a`` over the seeds both ran, with scipy's paired t-test and t interval.
    Args: a, b: seed -> score (None for a run that diverged: it is left out, as is a seed only one side has);
        confidence: of the interval, mean +- t_{(1+c)/2, n-1} * sd / sqrt(n).
    Raises ValueError with fewer than 2 paired seeds: one difference has no spread, so no interval.
    Every seed giving the same difference: sd 0, the interval is that point, p 0 (or 1 if the difference is 0)."""
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence} (for example confidence=0.95)")
    xs, ys, dropped = _pairs(a, b)
    n = len(xs)
    if n < 2:
        raise ValueError(f"need at least 2 paired seeds for an interval, got {n} ({b_name} vs {a_name}; unpaired: "
                         f"{list(dropped)}): run both on more seeds, e.g. over_seeds(variants, seeds=(0, 1, 2))")
    diffs = [y - x for x, y in zip(xs, ys)]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    with warnings.catch_warnings():  # identical scores: scipy warns of catastrophic cancellation, p is nan
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(ys, xs).pvalue)
    if math.isnan(p):  # every difference 0 (t = 0 / 0): nothing to tell apart
        p = 1.0
    return Paired(a=a_name, b=b_name, n=n, mean=mean, sd=sd, low=mean - half, high=mean + half, p=p,
                  confidence=confidence, dropped=dropped)


# --- a study: every variant on every seed ---

@dataclass
class SeedStudy:
    """What over_seeds trained: ``runs[(variant, seed)]`` = (model, History), or None where it diverged;
    ``scores[variant][seed]`` = its score, None where it diverged; ``seeds``: the seeds, shared by every variant."""

    runs: dict
    scores: dict
    seeds: tuple = field(default_factory=tuple)

    def _check(self, variant: str) -> dict:
        if variant not in self.scores:
            raise ValueError(f"no variant {variant!r} in this study; it has {', '.join(map(repr, self.scores))}")
        return self.scores[variant]

    def difference(self, a: str, b: str, confidence: float = 0.95) -> Paired:
        """The paired difference ``b - a`` of the scores over the seeds both finished (paired_difference)."""
        return paired_difference(self._check(a), self._check(b), a, b, confidence)

    def mean(self, variant: str) -> float:
        """The mean score of ``variant`` over the seeds it finished; nan if it finished none."""
        values = [v for v in self._check(variant).values() if v is not None and math.isfinite(v)]
        return statistics.fmean(values) if values else math.nan

    def best(self, lower_is_better: bool = True) -> str:
        """The variant with the best mean score (lowest by default) among those that finished a seed."""
        means = {v: m for v, m in ((v, self.mean(v)) for v in self.scores) if not math.isnan(m)}
        if not means:
            raise ValueError("no variant finished a seed: every run diverged (try a lower learning_rate)")
        return (min if lower_is_better else max)(means, key=means.get)

    def table(self, baseline: str, what: str = "validation loss") -> str:
        """A markdown table: per variant the seeds finished, mean +- sd, and the paired difference to ``baseline``
        with its 95 % interval and p. A diverged run is named as such, apart from a seed never run."""
        from pico_helpers.workbook.display import md_table

        self._check(baseline)
        header = ["variant", "seeds finished", f"{what}: mean ± sd", f"minus {baseline} (95 % CI)", "p"]
        return md_table(header, [[v, *self._row(v, baseline)] for v in self.scores])

    def _row(self, variant: str, baseline: str) -> list:
        """The cells after the variant's name in table(): seeds finished, mean ± sd (and what did not finish),
        the difference to the baseline and its p."""
        scores, of = self.scores[variant], len(self.seeds) or len(self.scores[variant])
        done = [v for v in scores.values() if v is not None and math.isfinite(v)]
        diverged, not_run = len(scores) - len(done), len([s for s in self.seeds if s not in scores])
        parts = []
        if len(done) == 1:
            parts.append(f"{done[0]:.3f} (1 seed)")
        elif done:
            parts.append(f"{statistics.fmean(done):.3f} ± {statistics.stdev(done):.3f}")
        if diverged:
            parts.append(f"diverged ({diverged} of {of} seeds)")
        if not_run:
            parts.append(f"not run ({not_run} of {of} seeds)")
        cells = [f"{len(done)} of {of}", "; ".join(parts)]
        if variant == baseline:
            return cells + ["baseline", ""]
        try:
            d = self.difference(baseline, variant)
        except ValueError:  # under 2 seeds that both finished: no interval
            return cells + ["too few paired seeds", "-"]
        p = "< 0.001" if d.p < 0.001 else f"{d.p:.3f}"
        return cells + [f"{d.mean:+.3f} ({d.low:+.3f} to {d.high:+.3f})", p]


def final_val_loss(model, history, corpus) -> float:
    """over_seeds' default score: the run's last validation loss (the whole held-out set, at the last epoch's end)."""
    if history.val_loss is None:
        raise ValueError(f"run {history.model} has no validation loss (test_fraction 0?): give over_seeds a "
                         "score=lambda model, history, corpus: ... or a test_fraction > 0")
    return float(history.val_loss)


def run_names(prefix: str) -> Callable:
    """over_seeds' run_name for a study: the folder "<prefix>_<variant as a folder name>_seed<seed>", the variant's
    characters other than letters, digits and . + - as "_" (e.g. "e4_lr_0.003_seed1")."""
    return lambda variant, seed: f"{prefix}_{re.sub(r'[^A-Za-z0-9.+-]+', '_', variant).strip('_')}_seed{seed}"


def _plan(variants: dict) -> dict:
    """variant -> (model name or make(config, corpus), TrainConfig), checked; a bare TrainConfig means the
    Transformer."""
    from pico_helpers.config import MODEL_NAMES, TrainConfig

    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"variants must be a non-empty dict of name -> TrainConfig or (model name, TrainConfig), "
                         f"got {variants!r} (for example {{'lr 1e-3': cfg, 'lr 3e-3': cfg.replace(learning_rate=3e-3)}})")
    plan = {}
    for name, spec in variants.items():
        model_name, config = ("kvcache_transformer", spec) if isinstance(spec, TrainConfig) else (
            spec if isinstance(spec, tuple) and len(spec) == 2 else (None, None))
        if not (callable(model_name) or model_name in MODEL_NAMES) or not isinstance(config, TrainConfig):
            raise ValueError(f"variant {name!r} must be a TrainConfig or (model, TrainConfig) with a model name in "
                             f"{', '.join(MODEL_NAMES)} or a function make(config, corpus) -> model, got {spec!r}")
        plan[name] = (model_name, config)
    return plan


def _memo_corpus(load: Callable) -> Callable:
    """``load(cfg)`` remembered by DATA_FIELDS, so the variants of one seed share a corpus when their data agree."""
    seen = {}

    def corpus_for(cfg):
        key = repr([getattr(cfg, f) for f in DATA_FIELDS])
        if key not in seen:
            seen[key] = load(cfg)
        return seen[key]
    return corpus_for


def over_seeds(variants: dict, seeds, score: Callable | None = None, corpus_for: Callable | None = None,
               run_name: Callable | None = None, verbose: bool = True) -> SeedStudy:
    """Train every variant on every seed, paired: seed s runs ``config.replace(seed=s)`` for each variant, so the
    variants of a seed share initial weights (where shapes agree), batch order and held-out set.
    Args: variants: name -> TrainConfig (a kvcache_transformer) or (model, TrainConfig), the model a name of
            MODEL_NAMES or make(config, corpus) -> model for one build_model cannot make (seed it by config.seed);
        seeds: e.g. (0, 1, 2); score(model, history, corpus) -> float (default final_val_loss);
        corpus_for(cfg) -> Corpus (default load_corpus, shared by configs with equal DATA_FIELDS);
        run_name(variant, seed) -> folder under cfg.output_dir (default "<variant>_seed<seed>"; a finished run loads).
    A run that raises Diverged is kept as None, its score None. Returns a SeedStudy of (model.eval(), History)."""
    from pico_helpers.data import load_corpus
    from pico_helpers.models import build_model
    from pico_helpers.training import Diverged, train

    plan, seeds = _plan(variants), tuple(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least 2, e.g. seeds=(0, 1, 2), for an interval")
    score, corpus_for = score or final_val_loss, corpus_for or _memo_corpus(load_corpus)
    run_name = run_name or (lambda variant, seed: f"{variant}_seed{seed}")
    runs, scores, total = {}, {name: {} for name in plan}, len(plan) * len(seeds)
    for k, (seed, name) in enumerate(((s, v) for s in seeds for v in plan), start=1):
        if verbose:
            print(f"over_seeds: run {k} of {total}, {name}, seed {seed}")
        model_name, cfg = plan[name][0], plan[name][1].replace(seed=seed)
        corpus = corpus_for(cfg)
        model = model_name(cfg, corpus) if callable(model_name) else build_model(model_name, cfg, corpus.vocab)
        try:
            history = train(model, corpus, cfg, name=run_name(name, seed), verbose=verbose)
        except Diverged as error:
            if verbose:
                print(f"over_seeds: {name}, seed {seed} diverged, kept as diverged: {error}")
            runs[(name, seed)], scores[name][seed] = None, None
            continue
        runs[(name, seed)] = (model.eval(), history)
        value = score(model, history, corpus)
        scores[name][seed] = float(value) if value is not None and math.isfinite(value) else None
    return SeedStudy(runs=runs, scores=scores, seeds=seeds)
