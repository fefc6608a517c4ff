"""Nucleus (top-p) sampling: exact support and probabilities against a Python loop, ties, the top-k fast path
against the plain full sort, draws; and generation: with the cache and without, for every model, against the
starter's loop."""
import math

import pytest
import torch

from benchmarks.baselines import starter_generate_tokens
from pico_helpers.models import KGramMLPSeqModel, LSTMSeqModel, TransformerModel
from pico_helpers.sample import generate_tokens
from pico_helpers.sample import nucleus as sampling
from pico_helpers.sample.nucleus import REACH_TOL, TOP_K, nucleus_probs, nucleus_probs_topk, nucleus_sampling

# Renormalised probabilities are one float32 division away from the reference's float64 ones.
RTOL = 1e-6


def reference_probs(logits, p, temperature=1.0):
    """Obviously-correct nucleus for one row: a Python loop over the sorted float32 probabilities.

    The probabilities come from the same float32 softmax as the module (the cut must see the same numbers);
    the rest is written out: accumulate in sorted order until p is reached (within REACH_TOL), take that
    token's probability as the threshold, keep every token at or above it, renormalise.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1).tolist()
    if p >= 1.0:
        return torch.tensor(probs, dtype=torch.float64)
    total, thresh = 0.0, None
    for q in sorted(probs, reverse=True):
        total += q
        if total >= p - REACH_TOL:
            thresh = q
            break
    if thresh is None:  # never reached through rounding: keep everything
        thresh = min(probs)
    kept = [q if q >= thresh else 0.0 for q in probs]
    mass = sum(sorted(kept, reverse=True))
    return torch.tensor([q / mass for q in kept], dtype=torch.float64)


def logits_of(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64)).float()


def check_against_reference(logits, p, temperature=1.0):
    """nucleus_probs against the loop; the fast path against nucleus_probs, bit for bit (the same cut)."""
    got = nucleus_probs(logits, p, temperature)
    want = reference_probs(logits, p, temperature)
    assert torch.equal(got > 0, want > 0), f"support differs for p={p}"
    torch.testing.assert_close(got.double(), want, rtol=RTOL, atol=0.0)
    assert torch.equal(nucleus_probs_topk(logits, p, temperature), got)
    return got


def assert_draws_follow(ids, expected, n):
    """``ids``: n draws from one row; ``expected``: its (V,) nucleus probabilities. Nothing outside the nucleus,
    and each kept token's count is Binomial(n, q): 6 standard deviations either side fails with probability
    ~2e-9 per token, so the bound holds for any seed and never flakes; the seed only makes the run repeatable."""
    counts = torch.bincount(ids, minlength=expected.numel()).double()
    assert counts[expected == 0].sum() == 0, "a token outside the nucleus was drawn"
    for q, c in zip(expected[expected > 0].tolist(), counts[expected > 0].tolist()):
        sigma = math.sqrt(n * q * (1 - q))
        assert abs(c - n * q) <= 6 * sigma, (q, c / n)


# --- hand-made distributions ---

@pytest.mark.parametrize("p, support", [
    (0.3, [0]),          # the top token alone already has 0.5
    (0.5, [0]),          # p equal to the first cumulative sum
    (0.8, [0, 1]),       # p equal to the second cumulative sum (0.5 + 0.3): reached, two tokens
    (0.81, [0, 1, 2]),   # just past it: the third token is needed
    (1.0, [0, 1, 2]),
])
def test_support_and_renormalisation(p, support):
    probs = [0.5, 0.3, 0.2]
    got = check_against_reference(logits_of(probs), p)
    assert (got > 0).nonzero().flatten().tolist() == support
    mass = sum(probs[i] for i in support)
    expected = torch.tensor([probs[i] / mass if i in support else 0.0 for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-7)  # float32 softmax of log(probs)


@pytest.mark.parametrize("probs, p, support", [
    ([0.4, 0.2, 0.2, 0.2], 0.5, [0, 1, 2, 3]),  # cut lands on a 0.2: all three 0.2s stay
    ([0.4, 0.2, 0.2, 0.2], 0.4, [0]),
    ([0.3, 0.3, 0.2, 0.1, 0.1], 0.2, [0, 1]),  # the top two tie: both kept even for a tiny nucleus
    ([0.3, 0.3, 0.2, 0.1, 0.1], 0.7, [0, 1, 2]),
    ([0.3, 0.3, 0.2, 0.1, 0.1], 0.85, [0, 1, 2, 3, 4]),
    ([0.1, 0.3, 0.1, 0.3, 0.2], 0.35, [1, 3]),  # same, shuffled
])
def test_ties_at_the_boundary_are_all_kept(probs, p, support):
    got = check_against_reference(logits_of(probs), p)
    assert (got > 0).nonzero().flatten().tolist() == support


def test_result_does_not_depend_on_token_order():
    torch.manual_seed(1)
    logits = torch.randint(-3, 3, (300,)).float()  # many exact ties
    for p in (0.1, 0.5, 0.9, 0.99):
        perm = torch.randperm(300)
        shuffled, plain = nucleus_probs(logits[perm], p), nucleus_probs(logits, p)[perm]
        assert torch.equal(shuffled > 0, plain > 0)
        # The softmax adds exp(logits) in another order, so values may differ in the last float32 bits.
        torch.testing.assert_close(shuffled, plain, rtol=1e-6, atol=0.0)


def test_p_one_is_the_full_softmax():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(nucleus_probs(logits, 1.0), torch.softmax(logits, dim=-1))
    assert torch.equal(nucleus_probs_topk(logits, 1.0), torch.softmax(logits, dim=-1))


def test_tiny_p_is_greedy():
    logits = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    got = nucleus_probs(logits, 1e-9)
    assert got.nonzero().flatten().tolist() == [int(logits.argmax())]
    assert got.max().item() == 1.0
    gen = torch.Generator().manual_seed(0)
    assert all(int(nucleus_sampling(logits, 1e-9, generator=gen)) == int(logits.argmax()) for _ in range(20))
    tied = torch.tensor([1.0, 3.0, 0.0, 3.0])  # two maxima: a tiny nucleus keeps both, half each
    torch.testing.assert_close(nucleus_probs(tied, 1e-9), torch.tensor([0.0, 0.5, 0.0, 0.5]))
    assert torch.equal(nucleus_probs_topk(tied, 1e-9), nucleus_probs(tied, 1e-9))


def test_temperature_is_applied_before_the_cut():
    logits = torch.randn(2000, generator=torch.Generator().manual_seed(3)) * 2
    for t in (0.5, 2.0):  # dividing by 0.5 or 2 is exact in floating point
        assert torch.equal(nucleus_probs(logits, 0.9, temperature=t), nucleus_probs(logits / t, 0.9))
        check_against_reference(logits, 0.9, t)
    # A hotter softmax spreads the mass, so the same p needs at least as many tokens.
    sizes = [int((nucleus_probs(logits, 0.9, temperature=t) > 0).sum()) for t in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1], sizes


def test_random_rows_match_the_loop_reference():
    gen = torch.Generator().manual_seed(5)
    for scale in (0.5, 2.0, 6.0):
        logits = torch.randn(700, generator=gen) * scale
        for p in (0.05, 0.5, 0.9, 0.95):
            check_against_reference(logits, p)


# --- the top-k fast path against the plain full sort ---

def spy_on_fallback(monkeypatch):
    """Record the rows of every call the fast path hands to the plain full sort (its fallback)."""
    calls = []
    real = sampling.nucleus_probs

    def spy(logits, *args, **kwargs):
        calls.append(logits.reshape(-1, logits.shape[-1]).shape[0])
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(sampling, "nucleus_probs", spy)
    return calls


def test_plain_nucleus_matches_the_loop_reference_on_longer_rows():
    # nucleus_probs, the plain sort-and-cumsum, is the reference the fast path is compared with below.
    gen = torch.Generator().manual_seed(9)
    for scale in (0.5, 3.0, 8.0):
        logits = torch.randn(2000, generator=gen) * scale
        for p in (0.05, 0.5, 0.9, 1.0):
            check_against_reference(logits, p)


def test_fast_path_equals_full_sort_on_the_gpt2_vocabulary(monkeypatch):
    calls = spy_on_fallback(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    for scale in (5.0, 6.0, 8.0, 12.0):  # peaked enough for the nucleus to fit in the top TOP_K
        logits = torch.randn(50257, generator=gen) * scale
        for p in (0.1, 0.5, 0.9, 0.95):
            calls.clear()
            got = nucleus_probs_topk(logits, p)
            assert calls == [], f"scale {scale} p {p} should not need the full sort"
            assert torch.equal(got, nucleus_probs(logits, p))  # bit for bit


@pytest.mark.parametrize("case", ["flat", "nucleus_larger_than_k", "tie_straddles_k", "tie_ends_at_k",
                                  "never_reaches_p"])
def test_fallback_cases_equal_full_sort(monkeypatch, case):
    # Rows the top k cannot settle sort the whole vocabulary; the distribution is the full sort's, bit for bit.
    V = 3000
    logits = torch.full((V,), -5.0)
    p = 0.9
    if case == "flat":
        logits = torch.zeros(V)
        p = 0.999
    elif case == "nucleus_larger_than_k":
        logits[: 3 * TOP_K] = torch.linspace(4.0, 3.0, 3 * TOP_K)
    elif case == "tie_straddles_k":
        # 100 distinct tokens on top, then 200 tokens of one equal value around position TOP_K:
        # the cut lands in the tied block, which continues past the candidates.
        logits[:100] = torch.linspace(6.0, 5.0, 100)
        logits[100:300] = 4.0
    elif case == "tie_ends_at_k":  # the tied block ends exactly at the last candidate: the nucleus is TOP_K
        logits[:100] = torch.linspace(6.0, 5.0, 100)
        logits[100:TOP_K] = 4.0
        p = float(torch.softmax(logits, -1)[:110].double().sum())  # lands inside the tied block
    elif case == "never_reaches_p":
        logits = torch.randn(V, generator=torch.Generator().manual_seed(2))
        p = 1.0 - 1e-9  # the float32 probabilities may sum to a hair under 1: keep everything then
    calls = spy_on_fallback(monkeypatch)
    got = nucleus_probs_topk(logits, p)
    assert calls == [1]
    assert torch.equal(got, nucleus_probs(logits, p))
    check_against_reference(logits, p)
    if case == "tie_ends_at_k":
        assert int((got > 0).sum()) == TOP_K
    if case in ("tie_straddles_k", "tie_ends_at_k"):
        assert int((got > 0).sum()) >= TOP_K and got[TOP_K - 1] == got[100]  # the whole tied block is kept
    ids = nucleus_sampling(logits.expand(500, V), p, generator=torch.Generator().manual_seed(0))
    assert (got[ids] > 0).all(), "a token outside the nucleus was drawn"


def test_large_nucleus_on_the_gpt2_vocabulary_equals_full_sort():
    # Flat enough that the nucleus holds hundreds to tens of thousands of tokens, as a trained model's often does.
    gen = torch.Generator().manual_seed(8)
    for scale, p in ((2.5, 0.5), (2.5, 0.9), (3.0, 0.95), (4.0, 0.9), (1.0, 0.9)):  # ~500 to ~30,000 tokens
        logits = torch.randn(50257, generator=gen) * scale
        got = nucleus_probs_topk(logits, p)
        assert int((got > 0).sum()) > TOP_K
        assert torch.equal(got, nucleus_probs(logits, p))
    check_against_reference(logits, p)  # the last, ~30,000 tokens, against the loop too


@pytest.mark.parametrize("path", ["fast", "fallback"])
def test_draws_follow_nucleus_probs_on_both_paths(monkeypatch, path):
    # nucleus_sampling draws from all V columns of the cut distribution: never outside the nucleus, each kept
    # token as often as nucleus_probs says. "fast": 73 tokens, within the top TOP_K; "fallback": 156.
    V = 1000
    logits = torch.randn(V, generator=torch.Generator().manual_seed(10)) * 0.5
    logits[:200] += torch.linspace(10.0, 4.0, 200) if path == "fast" else 7.0 + torch.linspace(0.5, 0.0, 200)
    expected = nucleus_probs(logits, 0.9).double()
    kept = int((expected > 0).sum())
    assert (kept < TOP_K) == (path == "fast") and kept > 50, kept
    calls = spy_on_fallback(monkeypatch)
    n, gen, ids = 20_000, torch.Generator().manual_seed(0), []
    for _ in range(n // 1000):  # 1000 rows at a time: (1000, V) probabilities
        ids.append(nucleus_sampling(logits.expand(1000, -1), 0.9, generator=gen))
    assert (calls == []) == (path == "fast")
    assert_draws_follow(torch.cat(ids), expected, n)


# --- batches ---

def test_batch_rows_match_single_rows(monkeypatch):
    gen = torch.Generator().manual_seed(4)
    rows = torch.stack([torch.randn(2000, generator=gen) * 8, torch.zeros(2000), torch.randn(2000, generator=gen) * 4])
    calls = spy_on_fallback(monkeypatch)
    batch = nucleus_probs_topk(rows, 0.9)
    assert calls == [3], "the flat row needs the full sort, and then the batch is sorted at once"
    for i in range(3):
        assert torch.equal(batch[i], nucleus_probs_topk(rows[i], 0.9))
        assert torch.equal(batch[i], nucleus_probs(rows[i], 0.9))
    calls.clear()
    assert torch.equal(nucleus_probs_topk(rows[[0, 2]], 0.9), batch[[0, 2]]) and calls == []  # peaked: the top k
    ids = nucleus_sampling(rows, 0.9, generator=torch.Generator().manual_seed(0))
    assert ids.shape == (3,) and ids.dtype == torch.long
    assert all(batch[i, ids[i]] > 0 for i in range(3))
    one = nucleus_sampling(rows[0], 0.9, generator=torch.Generator().manual_seed(0))
    assert one.shape == () and one.dtype == torch.long


# --- argument errors ---

@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan"), "0.9", True])
def test_bad_p_is_refused(p):
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got"):
        nucleus_probs(torch.zeros(5), p)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got"):
        nucleus_probs_topk(torch.zeros(5), p)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        nucleus_sampling(torch.zeros(5), p)


def test_error_message_names_the_value():
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 1\.5"):
        nucleus_sampling(torch.zeros(5), 1.5)


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_refused(t):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got"):
        nucleus_sampling(torch.zeros(5), 0.9, temperature=t)


def test_bad_shapes_and_nan_logits_are_refused():
    with pytest.raises(ValueError, match=r"shape \(V,\) or \(B, V\)"):
        nucleus_probs(torch.zeros(2, 3, 4), 0.9)
    with pytest.raises(ValueError, match="NaN"):
        nucleus_sampling(torch.tensor([0.0, float("nan"), 1.0]), 0.9)
    with pytest.raises(ValueError, match="NaN"):
        nucleus_probs(torch.full((500,), float("-inf")), 0.9)


# --- draws ---

@pytest.mark.parametrize("V", [50, 1000])  # 50: fewer than TOP_K tokens, topk takes them all; 1000: more
def test_draw_frequencies_match_the_nucleus(V):
    # Four tokens hold 0.97 of the mass and the top three 0.9; with p = 0.95 the nucleus is those four.
    head = [0.4, 0.3, 0.2, 0.07]
    tail = (1.0 - sum(head)) / (V - 4)
    logits = logits_of(head + [tail] * (V - 4))
    expected = nucleus_probs(logits, 0.95).double()
    assert int((expected > 0).sum()) == 4
    n = 20_000
    ids = nucleus_sampling(logits.expand(n, V), 0.95, generator=torch.Generator().manual_seed(0))
    assert_draws_follow(ids, expected, n)


def test_single_row_draws_are_seeded_and_leave_the_global_rng_alone():
    logits = torch.randn(3000, generator=torch.Generator().manual_seed(7)) * 3

    def draws(seed):
        gen = torch.Generator().manual_seed(seed)
        return [int(nucleus_sampling(logits, 0.95, generator=gen)) for _ in range(200)]

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = draws(0)
    assert torch.equal(torch.rand(1), before), "sampling with a generator must not touch the global RNG"
    assert a == draws(0)
    assert a != draws(1)
    support = set(nucleus_probs(logits, 0.95).nonzero().flatten().tolist())
    assert set(a) <= support


def test_p_one_draws_from_the_whole_distribution():
    # 3 tokens at 1/3 each after the softmax; p = 1 must sample all of them.
    ids = nucleus_sampling(torch.zeros(3000, 3), 1.0, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(ids, minlength=3).double()
    sigma = math.sqrt(3000 * (1 / 3) * (2 / 3))
    assert all(abs(c - 1000) <= 6 * sigma for c in counts.tolist())  # 6 sigma: never flakes


def test_logits_that_require_grad_are_accepted():
    # A student may pass a model's raw output.
    logits = (torch.randn(50257, generator=torch.Generator().manual_seed(6)) * 8).requires_grad_()
    probs = nucleus_probs(logits, 0.9)
    assert not probs.requires_grad and torch.equal(probs, nucleus_probs(logits.detach(), 0.9))
    fast = nucleus_probs_topk(logits, 0.9)
    assert not fast.requires_grad and torch.equal(fast, probs)
    nucleus_sampling(logits, 0.9, generator=torch.Generator().manual_seed(0))


# --- generation ---

GEN_V = 60


def tiny_models():
    """One small model of each kind, with random weights large enough for varied greedy continuations."""
    torch.manual_seed(0)
    models = {"kgram": KGramMLPSeqModel(GEN_V, k=3, embed_size=16, num_inner_layers=1, input_mode="embedding"),
              "lstm": LSTMSeqModel(GEN_V, 16, 16),
              "transformer": TransformerModel(GEN_V, 16, 2, 2, block_size=8)}
    with torch.no_grad():
        for model in models.values():
            for param in model.parameters():
                param.normal_(0.0, 0.5)
    return models


@pytest.mark.parametrize("name", ["kgram", "lstm", "transformer"])
@pytest.mark.parametrize("top_p", [None, 0.9])
def test_generation_with_and_without_the_cache_gives_the_same_tokens(name, top_p):
    # 20 new tokens after 5: past the Transformer's block_size 8, so its window slides and its cache is
    # recomputed; the K-gram window and the LSTM state slide as well. The starter's loop agrees (greedy).
    model = tiny_models()[name]
    prompt = [1, 5, 7, 2, 9]
    cached = generate_tokens(model, prompt, 20, top_p=top_p, seed=3)
    assert len(cached) == 20 and all(0 <= i < GEN_V for i in cached)
    assert cached == generate_tokens(model, prompt, 20, top_p=top_p, seed=3, use_cache=False)
    if top_p is None:
        assert cached == starter_generate_tokens(model, prompt, 20)
        assert len(set(cached)) > 1  # the check is not vacuous: the continuation varies


def test_generation_is_seeded_restores_training_mode_and_refuses_an_empty_prompt():
    model = tiny_models()["transformer"].train()
    a = generate_tokens(model, [3, 4], 15, top_p=1.0, seed=0)
    assert a == generate_tokens(model, [3, 4], 15, top_p=1.0, seed=0)
    assert a != generate_tokens(model, [3, 4], 15, top_p=1.0, seed=1)
    assert model.training  # put back in training mode after generating in eval mode
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_tokens(model, [], 5)


@pytest.mark.parametrize("top_p", [None, 0.9])
def test_generation_refuses_a_diverged_model(top_p):
    # a model trained with too high a learning rate: greedy would otherwise print '!!!!' (argmax of NaN is id 0)
    model = LSTMSeqModel(vocab_size=50, embed_size=8, hidden_size=8)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        generate_tokens(model, [1, 2, 3], max_new_tokens=3, top_p=top_p)
