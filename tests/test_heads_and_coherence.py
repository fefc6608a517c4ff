"""Attention-head scores (analysis/heads.py) and the measures of samples (analysis/coherence.py), each against a plain
loop written here: synthetic attention with known answers, and a tiny untrained Transformer."""
from __future__ import annotations

import math
import random

import pytest
import torch

from pico_helpers import CorpusVocab, TrainConfig, build_model, generate_tokens
from pico_helpers.analysis.coherence import (REFERENCE, Sample, distinct_n, grid_table, measure_grid, plot_tradeoff,
                                             repetition, sample_grid, score_samples, story_openings, summarise)
from pico_helpers.analysis.heads import (attention_weights, head_scores, head_type, heads_table, scores_from_weights,
                                         story_windows)

VOCAB = 100  # ids of the tiny models: small, so building and running them takes milliseconds


def tiny_model(vocab=VOCAB):
    """An untrained 2-block, 2-head Transformer of block 32 (a raw model over VOCAB ids, or wrapped by a CorpusVocab)."""
    return build_model("kvcache_transformer", TrainConfig.quick(embed_size=16), vocab).eval()


# --- heads: synthetic weights with known answers ---

def one_head(rows: dict[int, dict[int, float]], T: int) -> torch.Tensor:
    """(1, 1, T, T) weights: rows[t] = {key: weight}; a query without a row attends to itself."""
    w = torch.zeros(1, 1, T, T)
    for t in range(T):
        for k, v in rows.get(t, {t: 1.0}).items():
            w[0, 0, t, k] = v
    return w


def test_a_previous_token_head_scores_exactly():
    T = 8
    w = one_head({t: {t - 1: 1.0} for t in range(1, T)}, T)
    s = scores_from_weights(w, list(range(T)))[0]
    assert (s["previous"], s["max_weight"], s["entropy"], s["first"], s["self"]) == pytest.approx((1, 1, 0, 0, 0))
    assert s["queries"] == T - 2 and s["copy_queries"] == 0 and math.isnan(s["copy"])
    assert head_type(s) == "previous-token"


def test_a_uniform_head_has_the_entropy_of_a_uniform_distribution():
    T = 10
    w = one_head({t: {k: 1 / (t + 1) for k in range(t + 1)} for t in range(T)}, T)
    s = scores_from_weights(w, list(range(T)))[0]
    qs = range(2, T)
    # the weights are float32 roundings of 1/(t+1): 1e-6 covers their error, a wrong key count misses by > 0.05
    assert s["entropy"] == pytest.approx(sum(math.log(t + 1) for t in qs) / len(qs), abs=1e-6)
    assert s["entropy"] == pytest.approx(s["uniform_entropy"], abs=1e-6)
    assert s["first"] == pytest.approx(sum(1 / (t + 1) for t in qs) / len(qs), abs=1e-6)
    assert head_type(s) == "broad"


def test_a_copy_head_attends_after_the_earlier_occurrence():
    ids = [5, 6, 7, 5, 6]  # at t=3 (a 5) the token after the earlier 5 is at 1; at t=4 (a 6), at 2
    w = one_head({1: {0: 1.0}, 2: {1: 1.0}, 3: {1: 1.0}, 4: {2: 1.0}}, len(ids))
    s = scores_from_weights(w, ids)[0]
    assert s["copy"] == pytest.approx(1.0) and s["copy_queries"] == 2
    assert s["copy_chance"] == pytest.approx((1 / 4 + 1 / 5) / 2)  # one copy key among t + 1
    assert s["previous"] == pytest.approx(1 / 3)  # only t=2 of the three queries looks back one
    assert head_type(s) == "copy / induction"


def reference_scores(weights: list[torch.Tensor], windows: list[list[int]]) -> list[dict]:
    """The same measures by a plain loop over windows, heads, queries and keys."""
    L, H = weights[0].shape[:2]
    out = []
    for layer in range(L):
        for head in range(H):
            acc = dict(max_weight=0.0, entropy=0.0, previous=0.0, first=0.0, self=0.0)
            copy, n, n_copy = 0.0, 0, 0
            for w, ids in zip(weights, windows):
                for t in range(2, len(ids)):
                    row = [float(w[layer, head, t, k]) for k in range(t + 1)]
                    acc["max_weight"] += max(row)
                    acc["entropy"] -= sum(x * math.log(x) for x in row if x > 0)
                    acc["previous"] += row[t - 1]
                    acc["first"] += row[0]
                    acc["self"] += row[t]
                    keys = {j + 1 for j in range(t) if ids[j] == ids[t]}
                    if keys:
                        copy += sum(row[k] for k in keys)
                        n_copy += 1
                    n += 1
            out.append({k: v / n for k, v in acc.items()} | {"copy": copy / n_copy})
    return out


def test_scores_equal_a_plain_loop_on_random_attention_over_two_windows():
    gen = torch.Generator().manual_seed(0)
    rnd = random.Random(0)
    windows = [[rnd.randrange(6) for _ in range(T)] for T in (12, 9)]  # 6 ids: many repeats, so copy is defined
    weights = []
    for ids in windows:
        T = len(ids)
        scores = torch.randn(2, 3, T, T, generator=gen) * 2
        weights.append(torch.softmax(scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf), -1))
    ours, ref = scores_from_weights(weights, windows), reference_scores(weights, windows)
    assert [(s["layer"], s["head"]) for s in ours] == [(l, h) for l in range(2) for h in range(3)]
    for s, r in zip(ours, ref):
        for k, v in r.items():
            assert s[k] == pytest.approx(v, abs=1e-9), k  # float64 sums of the same float32 weights
    assert ours[0]["queries"] == (12 - 2) + (9 - 2)


# --- heads: a real model ---

def test_head_scores_of_a_tiny_transformer_raw_and_wrapped():
    raw = tiny_model()
    wrapped = tiny_model(CorpusVocab(range(40), base_size=VOCAB))  # ids 40.. are "other" inside
    rnd = random.Random(1)
    windows = [[rnd.randrange(VOCAB) for _ in range(20)] for _ in range(3)]
    for model in (raw, wrapped):
        w = attention_weights(model, windows[0])
        assert w.shape == (2, 2, 20, 20)
        assert torch.allclose(w.sum(-1), torch.ones(2, 2, 20), atol=1e-5)  # each query's weights are a distribution
        scores = head_scores(model, windows)
        assert len(scores) == 2 * 2
        for s in scores:
            for k in ("max_weight", "previous", "first", "self", "copy"):
                assert -1e-6 <= s[k] <= 1 + 1e-6, (k, s[k])
            assert s["previous"] + s["first"] + s["self"] <= 1 + 1e-5
            assert isinstance(head_type(s), str)
        assert "| layer | head |" in heads_table(scores)
    inner = wrapped.model(wrapped.index[torch.tensor(windows[0])][:, None], return_attention=True)[1][:, 0]
    assert torch.equal(attention_weights(wrapped, windows[0]), inner.float())  # the wrapper maps ids, nothing else
    with pytest.raises(ValueError, match="block_size"):
        attention_weights(raw, list(range(33)))
    assert story_windows([[1] * 5, [2] * 30, [3] * 40], 2, 20) == [[2] * 20, [3] * 20]


# --- coherence: the measures of one sample ---

def test_distinct_n_and_repetition_on_hand_examples():
    assert distinct_n([1, 2, 1, 2, 1], 2) == 0.5  # (1,2) (2,1) (1,2) (2,1): 2 different of 4
    assert distinct_n([1, 2, 3, 4], 2) == 1.0
    assert repetition([1, 2, 3, 1, 2, 3, 1], 3) == pytest.approx(2 / 5)  # the 4th and 5th 3-grams were seen
    assert repetition([7, 7, 7, 7], 3) == 0.5  # (7,7,7) twice: the second repeats the first
    assert repetition([1, 2, 3, 4], 3) == 0.0
    assert math.isnan(distinct_n([1], 2)) and math.isnan(repetition([1, 2], 3))


def hand_loss(model, prompt, new) -> float:
    """Mean of -log p(next id) over the new tokens, from the model's logits of prompt + new in one forward pass."""
    seq = torch.tensor(list(prompt) + list(new))[:, None]  # (T, 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(seq)[:, 0].float(), dim=-1)  # (T, V)
    ts = range(len(prompt) - 1, len(seq) - 1)  # logits at t predict token t + 1, the new ones only
    return -sum(float(logp[t, seq[t + 1, 0]]) for t in ts) / len(ts)


def test_score_samples_equals_a_hand_loop_and_crops_long_prompts():
    model = tiny_model()
    samples = [Sample((3, 4, 5), (6, 7, 8, 9), 0, 0), Sample((10,), (11, 12), 1, 1),
               Sample(tuple(range(40, 70)), (1, 2, 3, 4, 5), None, 2)]  # 35 tokens > block 32: prompt cropped to 27
    scores = score_samples(model, samples)
    expected = [hand_loss(model, s.prompt[-(32 - len(s.new)):], s.new) for s in samples]
    assert scores == pytest.approx(expected, abs=1e-5)  # float32 logits, batched with padding vs alone
    with pytest.raises(ValueError, match="block_size"):
        score_samples(model, [Sample((1,), tuple(range(32)), 0, 0)])


class SpaceIds:
    """A stand-in tokenizer: "3 4 5" -> [3, 4, 5]; decode: 0 is ".", 1 the capitalised "A", any other i " wi"."""

    def encode_ordinary(self, text):
        return [int(x) for x in text.split()]

    def decode(self, ids):
        return "".join("." if i == 0 else "A" if i == 1 else f" w{i}" for i in ids)


def test_sample_grid_counts_seeds_and_deterministic_greedy():
    model = tiny_model()
    prompts = ["1 2 3", "4 5", "6"]
    grid = sample_grid(model, SpaceIds(), prompts, ("greedy", 0.5, 0.9), samples_per_prompt=2, new_tokens=6, seed=10)
    assert list(grid) == ["greedy", "p=0.5", "p=0.9"]
    assert len(grid["greedy"]) == 3 and len(grid["p=0.5"]) == len(grid["p=0.9"]) == 6
    assert all(len(s.new) == 6 for v in grid.values() for s in v)
    assert [s.seed for s in grid["p=0.9"]] == list(range(10, 16)) == [s.seed for s in grid["p=0.5"]]  # paired
    again = sample_grid(model, SpaceIds(), prompts, ("greedy",), new_tokens=6)
    assert again["greedy"] == grid["greedy"]
    assert list(grid["greedy"][1].new) == generate_tokens(model, [4, 5], 6)
    rows = measure_grid(model, grid)
    assert [(r.setting, r.n) for r in rows] == [("greedy", 3), ("p=0.5", 6), ("p=0.9", 6)]
    assert "p=0.9" in grid_table(rows)


def test_story_openings_take_the_first_sentence_and_the_real_continuation():
    # id 0 ends a sentence, id 1 starts one (SpaceIds); a story without 1 first was cut mid-sentence: skipped
    stories = [[1, 2, 0, 5, 6, 7, 8], [1, 2, 3], [9, 0, 4, 4, 4], [1, 0, 4, 4, 4, 4]]
    prompts, refs = story_openings(stories, SpaceIds(), 2, new_tokens=3)
    assert prompts == ["A w2.", "A."]
    assert [(r.prompt, r.new, r.prompt_index) for r in refs] == [((1, 2, 0), (5, 6, 7), 0), ((1, 0), (4, 4, 4), 1)]
    with pytest.raises(ValueError, match="only 2"):
        story_openings(stories, SpaceIds(), 3, new_tokens=3)


def test_summarise_and_the_tradeoff_plot():
    s = summarise([1.0, 2.0, 3.0, math.nan])
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
    assert s.high - s.mean == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)  # t(0.975, 2) = 4.303
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    model = tiny_model()
    grid = {"greedy": [Sample((1, 2), (3, 4, 5, 6), None, 0)], REFERENCE: [Sample((1, 2), (3, 3, 5, 6), None, 0)]}
    ax = plot_tradeoff(measure_grid(model, grid))
    assert "distinct-2" in ax.get_xlabel() and "nats" in ax.get_ylabel() and ax.get_title()
    assert {t.get_text() for t in ax.texts} == {"greedy", REFERENCE}
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
