"""Measuring samples, not reading a few: many samples per decoding setting, each scored by the loss a trained model
gives its new tokens (a proxy for coherence) and by its distinct-2 and repetition (diversity). Used in 05_sampling."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from pico_helpers.analysis.positions import sequence_losses

__all__ = ["Sample", "Summary", "SettingRow", "DEFAULT_SETTINGS", "REFERENCE", "setting_label", "story_openings", "sample_grid",
           "score_samples", "distinct_n", "repetition", "summarise", "measure_grid", "grid_table", "plot_tradeoff"]

DEFAULT_SETTINGS = ("greedy", 0.5, 0.8, 0.9, 0.95, 1.0)  # "greedy" (top_p=None), then top-p values
SENTENCE_ENDS = (".", "!", "?", '."', '!"', '?"')  # a token whose text ends with one of these ends a sentence
REFERENCE = "held-out text"  # the grid key of the stories' own continuations (story_openings)


@dataclass(frozen=True)
class Sample:
    """One generated text: the prompt's GPT-2 ids, the new ids, the sampler's seed (None: greedy or held-out text)
    and which prompt of the grid it continues."""

    prompt: tuple[int, ...]
    new: tuple[int, ...]
    seed: int | None
    prompt_index: int


def setting_label(setting) -> str:
    """"greedy" for "greedy" or None, else "p=0.9": the name a setting has in grids, tables and plots."""
    return "greedy" if setting in ("greedy", None) else f"p={float(setting):g}"


# --- the samples ---

def story_openings(stories: list, enc, n: int, new_tokens: int, max_prompt: int = 48) -> tuple[list[str], list[Sample]]:
    """Prompts from held-out stories: the first sentence of each (its ids up to the first token ending in . ! or ?),
    and, as a reference, the ``new_tokens`` ids the story really continues with.
    Stories are taken in order; one is skipped unless its first token is a capitalised word with no space before it
    (a story or paragraph starts there: a window cut from the middle of a story starts mid-sentence), its first
    sentence has at most ``max_prompt`` tokens and at least ``new_tokens`` ids follow it.
    Args: stories: GPT-2 id lists (``corpus.val.tinystories``); enc: GPT-2's tokenizer.
    Returns (n prompt texts, n reference Samples); a ValueError if fewer than n stories qualify."""
    prompts, references = [], []
    for story in stories:
        if not story or not enc.decode([story[0]])[:1].isupper():
            continue
        end = next((i for i, t in enumerate(story[:max_prompt]) if enc.decode([t]).rstrip().endswith(SENTENCE_ENDS)),
                   None)
        if end is None or len(story) - (end + 1) < new_tokens:
            continue
        prompt, new = tuple(story[:end + 1]), tuple(story[end + 1:end + 1 + new_tokens])
        references.append(Sample(prompt, new, None, len(prompts)))
        prompts.append(enc.decode(list(prompt)))
        if len(prompts) == n:
            return prompts, references
    raise ValueError(f"only {len(prompts)} of {len(stories)} stories start with a sentence of <= {max_prompt} tokens "
                     f"and have {new_tokens} tokens after it; ask for fewer prompts or fewer new tokens")


def sample_grid(model, enc, prompts: list[str], settings=DEFAULT_SETTINGS, samples_per_prompt: int = 1,
                new_tokens: int = 100, seed: int = 0) -> dict[str, list[Sample]]:
    """Samples of every setting from every prompt: {setting_label: [Sample, ...]}, in prompt order.
    Greedy is deterministic, so it gives one Sample per prompt (len(prompts) distinct samples); each top-p gives
    ``samples_per_prompt`` per prompt. Sample k of prompt i uses seed ``seed + i * samples_per_prompt + k`` for
    every p, so the settings share their random numbers and differ only by p.
    Args: model: the course contract (GPT-2 ids in); enc: GPT-2's tokenizer; settings: "greedy" and/or p values."""
    from pico_helpers.sample import generate_tokens

    ids = [tuple(enc.encode_ordinary(text)) for text in prompts]
    grid = {}
    for setting in settings:
        samples = []
        for i, prompt in enumerate(ids):
            if setting_label(setting) == "greedy":
                samples.append(Sample(prompt, tuple(generate_tokens(model, list(prompt), new_tokens)), None, i))
                continue
            for k in range(samples_per_prompt):
                s = seed + i * samples_per_prompt + k
                new = generate_tokens(model, list(prompt), new_tokens, top_p=float(setting), seed=s)
                samples.append(Sample(prompt, tuple(new), s, i))
        grid[setting_label(setting)] = samples
    return grid


# --- the measures of one sample ---

def score_samples(scorer, samples: list[Sample], batch_size: int = 8) -> list[float]:
    """The mean next-token loss (nats per token) of each sample's NEW tokens under ``scorer``, given its prompt.
    Lower: text the scorer finds more likely, our proxy for coherence. If prompt + new is longer than the scorer's
    ``block_size``, the prompt is cropped from the left to fit (as generation crops its context); new tokens that
    alone fill the block are refused. Args: scorer: a model of the course contract (GPT-2 ids in)."""
    block = getattr(scorer, "block_size", None)
    seqs = []
    for s in samples:
        if block is not None and len(s.new) >= block:
            raise ValueError(f"a sample has {len(s.new)} new tokens but the scorer's block_size is {block}: it needs "
                             "at least one prompt token in the same window; generate fewer new tokens")
        keep = len(s.prompt) if block is None else min(len(s.prompt), block - len(s.new))
        seqs.append(list(s.prompt[len(s.prompt) - keep:]) + list(s.new))
    losses = sequence_losses(scorer, seqs, batch_size=batch_size)  # (N, T_max - 1): row t predicts token t + 1
    out = []
    for row, seq, s in zip(losses, seqs, samples):
        first = len(seq) - len(s.new) - 1  # the position whose logits predict the first new token
        out.append(float(row[first:len(seq) - 1].mean()))
    return out


def _ngrams(ids, n: int) -> list[tuple]:
    """The n-grams of ``ids`` in order (len(ids) - n + 1 of them)."""
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(ids, n: int = 2) -> float:
    """Distinct-n of ONE sample: the number of different n-grams of token ids divided by the number of n-grams
    (len(ids) - n + 1). 1.0: no n-gram occurs twice; near 0: the sample loops. NaN if ids has fewer than n tokens."""
    grams = _ngrams(list(ids), n)
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition(ids, n: int = 3) -> float:
    """Repetition of ONE sample: the share of its n-grams of token ids that repeat an n-gram seen EARLIER in the same
    sample ("the dog and the dog and" repeats from the second "the dog and"). Equals 1 - distinct_n(ids, n);
    0: nothing repeats. NaN if ids has fewer than n tokens."""
    grams, seen, repeats = _ngrams(list(ids), n), set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams) if grams else math.nan


# --- summaries over samples ---

@dataclass
class Summary:
    """Mean and sample standard deviation of n values, with a 95 % interval of the mean (Student's t; NaN if n < 2)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.sd:.3f}"


def summarise(values) -> Summary:
    """A Summary of ``values``, NaNs dropped. The interval is mean ± t(0.975, n-1) * sd / sqrt(n), from scipy.stats
    when it is installed, else the normal 1.96 (a little narrow below n = 30)."""
    vals = [float(v) for v in values if not math.isnan(float(v))]
    if not vals:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(vals)
    try:
        from scipy.stats import t

        q = float(t.ppf(0.975, len(vals) - 1))
    except ImportError:
        q = 1.96
    half = q * sd / math.sqrt(len(vals))
    return Summary(len(vals), mean, sd, mean - half, mean + half)


@dataclass
class SettingRow:
    """One decoding setting measured: its name, samples, distinct samples and the Summary of each measure."""

    setting: str
    n: int
    n_distinct: int
    loss: Summary  # mean next-token loss of the new tokens under the scorer, nats per token
    distinct2: Summary  # distinct_n(new, 2) per sample
    repetition: Summary  # repetition(new, 3) per sample


def measure_grid(scorer, grid: dict[str, list[Sample]]) -> list[SettingRow]:
    """Score every setting of ``grid`` (sample_grid's, optionally with story_openings' references under
    REFERENCE): per setting, the loss under ``scorer``, distinct-2 and repetition of 3-grams, each sample once."""
    rows = []
    for setting, samples in grid.items():
        losses = score_samples(scorer, samples)
        rows.append(SettingRow(setting, len(samples), len({s.new for s in samples}), summarise(losses),
                               summarise(distinct_n(s.new, 2) for s in samples),
                               summarise(repetition(s.new, 3) for s in samples)))
    return rows


def grid_table(rows: list[SettingRow], scorer: str = "the trained Transformer") -> str:
    """measure_grid's rows as a markdown table: mean ± sd and the 95 % interval of the mean of each measure."""
    from pico_helpers.workbook.display import md_table

    def cell(s: Summary) -> str:
        return f"{s} [{s.low:.3f}, {s.high:.3f}]"

    header = ["decoding", "samples (distinct)", f"loss under {scorer}, nats/token", "distinct-2", "repeated 3-grams"]
    return md_table(header, [[r.setting, f"{r.n} ({r.n_distinct})", cell(r.loss), cell(r.distinct2),
                              cell(r.repetition)] for r in rows])


def plot_tradeoff(rows: list[SettingRow], ax=None, scorer: str = "the trained Transformer",
                  title: str = "Diversity against likelihood of samples, by decoding setting"):
    """Loss under ``scorer`` (y) against distinct-2 (x), one point per setting with sd error bars, labelled.
    The reference row (REFERENCE, the stories' own text) is drawn as a star. Returns the Axes."""
    from pico_helpers.analysis.plots import label_axes, new_axes

    ax = new_axes(ax, figsize=(7, 4.5))
    for r in rows:
        ref = r.setting == REFERENCE
        ax.errorbar(r.distinct2.mean, r.loss.mean, xerr=r.distinct2.sd, yerr=r.loss.sd, capsize=3,
                    fmt="*" if ref else "o", markersize=12 if ref else 6, color="black" if ref else None)
        ax.annotate(r.setting, (r.distinct2.mean, r.loss.mean), textcoords="offset points", fontsize=9,
                    xytext=(-8, -14) if ref else (6, 6), ha="right" if ref else "left")  # the star's label below left
    return label_axes(ax, "distinct-2 of a sample (different token pairs / pairs)",
                      f"loss under {scorer} (nats/token)", title)
