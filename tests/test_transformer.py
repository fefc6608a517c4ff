"""TransformerModel and RMSNorm: formula, causality, attention maps, KV cache against full recompute, training."""
import math

import pytest
import torch
import torch.nn.functional as F

from pico_helpers.models.transformer import (KVCache, RMSNorm, TransformerModel, apply_rope, causal_mask,
                                             rope_tables, sinusoidal_table)

V, D, H, N_BLOCKS, BLOCK = 40, 32, 4, 2, 8
POSITIONAL = ["learned", "sinusoidal", "rope", "none"]
NORMS = ["pre", "post"]


@pytest.fixture(autouse=True, scope="module")
def _tiny_tensors_one_thread(one_thread):
    """Tiny tensors: one CPU thread is fastest, and immune to slowdowns when other jobs share the cores."""


def make_model(positional="learned", norm="pre", block_size=BLOCK, seed=0, **kw):
    """A tiny model with large random weights.

    At the default init (std 0.02) the logits are all close to 0 and a bug would move them by little;
    with std 0.3 everywhere the logits are O(1) and the attention far from uniform, so a leak from the
    future or a wrong position shows up clearly.
    """
    torch.manual_seed(seed)
    model = TransformerModel(V, D, H, N_BLOCKS, block_size, positional=positional, norm=norm, **kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or "final_norm" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.3)
    return model.eval()


# Logits are O(1) (see make_model). Two float32 computations of the same logits through different kernel
# shapes (fused causal attention vs explicit mask vs one query over a cache) differ by rounding, ~1e-6.
# 1e-4 leaves a wide margin; a real bug (a wrong position, a leaked token) moves logits by ~0.1 or more.
ATOL, RTOL = 1e-4, 1e-4


# --- RMSNorm ---

def test_rmsnorm_matches_hand_computation():
    norm = RMSNorm(3, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.tensor([[3.0, 4.0, 0.0], [1.0, -1.0, 1.0]])
    # Row 0: mean of squares (9 + 16 + 0) / 3 = 25/3; row 1: 1. Divide by the root, times the weight.
    rms = torch.tensor([[math.sqrt(25 / 3 + 1e-6)], [math.sqrt(1 + 1e-6)]])
    expected = x / rms * torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(norm(x), expected)
    assert torch.equal(RMSNorm(5).weight, torch.ones(5))  # the weight starts at ones
    # Scale invariance (up to eps): the normalised vector does not depend on the input's size.
    torch.testing.assert_close(norm(100 * x), norm(x), atol=1e-5, rtol=1e-5)


# --- positional encodings ---

def test_rope_scores_depend_on_relative_position_only():
    cos, sin = rope_tables(32, 8)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)  # (B, H, T, d)

    def score(p, s):  # the query at position p, the key at position s
        return (apply_rope(q, cos[p:p + 1], sin[p:p + 1]) * apply_rope(k, cos[s:s + 1], sin[s:s + 1])).sum()

    torch.testing.assert_close(score(5, 2), score(20, 17))  # same offset, same score
    assert abs(score(5, 2) - score(5, 4)) > 1e-3  # another offset, another score
    torch.testing.assert_close(apply_rope(q, cos[9:10], sin[9:10]).norm(), q.norm())  # a rotation
    torch.testing.assert_close(apply_rope(q, cos[:1], sin[:1]), q)  # position 0 is not rotated


def test_sinusoidal_table_values():
    table = sinusoidal_table(10, 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(table[:, 0], torch.sin(torch.arange(10.0)))  # frequency 1
    torch.testing.assert_close(table[3, 5], torch.cos(torch.tensor(3 / 10000 ** (4 / 6))))


# --- causality and attention maps ---

@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("norm", NORMS)
def test_causal_future_tokens_never_change_past_logits(positional, norm):
    model = make_model(positional, norm)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, V, (BLOCK, 2), generator=g)
    base = model(idx)
    for t in range(BLOCK - 1):
        changed = idx.clone()
        changed[t + 1:] = torch.randint(0, V, (BLOCK - t - 1, 2), generator=g)
        out = model(changed)
        torch.testing.assert_close(out[: t + 1], base[: t + 1], atol=ATOL, rtol=RTOL)
    # And the test can see a change: changing token 0 does change the logits at the last position.
    changed = idx.clone()
    changed[0] = (idx[0] + 1) % V
    assert (model(changed)[-1] - base[-1]).abs().max() > 1e-2


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("norm", NORMS)
def test_return_attention_same_logits_and_valid_weights(positional, norm):
    model = make_model(positional, norm)
    idx = torch.randint(0, V, (BLOCK, 3), generator=torch.Generator().manual_seed(2))
    logits, attn = model(idx, return_attention=True)
    assert attn.shape == (N_BLOCKS, 3, H, BLOCK, BLOCK)
    torch.testing.assert_close(logits, model(idx), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(attn.sum(-1), torch.ones(N_BLOCKS, 3, H, BLOCK))  # each row is a distribution
    above = torch.triu(torch.ones(BLOCK, BLOCK, dtype=torch.bool), diagonal=1)
    assert torch.all(attn[..., above] == 0)  # nothing attends to the future, exactly
    assert torch.all(attn[..., 0, 0] == 1)  # the first position can only attend to itself


# --- KV cache against full recompute ---

def full_recompute_logits(model, context):
    """The obviously-correct reference: the cropped context through the whole model, last position."""
    return model(context[-model.block_size:])[-1]  # (B, V)


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("prompt_len", [3, 11])  # 11 > block_size 8: the prompt itself is cropped
@torch.no_grad()
def test_kv_cache_greedy_matches_full_recompute_past_block_size(positional, prompt_len):
    model = make_model(positional)
    prompt = torch.randint(0, V, (prompt_len, 2), generator=torch.Generator().manual_seed(3))

    # Greedy generation twice: with next_logits() and with a full recompute of the cropped context.
    ctx_cache, ctx_full = prompt.clone(), prompt.clone()
    logits, state = model.next_logits(prompt)
    for _ in range(20):  # 20 new tokens with block_size 8: the window slides many times
        ref = full_recompute_logits(model, ctx_full)
        torch.testing.assert_close(logits, ref, atol=ATOL, rtol=RTOL)
        ctx_full = torch.cat([ctx_full, ref.argmax(-1, keepdim=True).t()])
        nxt = logits.argmax(-1, keepdim=True).t()  # (1, B)
        ctx_cache = torch.cat([ctx_cache, nxt])
        logits, state = model.next_logits(nxt, state)
        assert isinstance(state, KVCache) and state.pos <= BLOCK and state.tokens.size(0) == state.pos
    assert torch.equal(ctx_cache, ctx_full)
    assert torch.equal(state.tokens, ctx_cache[-BLOCK:])


@pytest.mark.parametrize("positional", POSITIONAL)
@torch.no_grad()
def test_kv_cache_several_new_tokens_at_once(positional):
    # next_logits() with T_new > 1 after a cache: once while the window still fits, once when it overflows.
    model = make_model(positional)
    ids = torch.randint(0, V, (14, 2), generator=torch.Generator().manual_seed(4))
    logits, state = model.next_logits(ids[:2])
    torch.testing.assert_close(logits, full_recompute_logits(model, ids[:2]), atol=ATOL, rtol=RTOL)
    logits, state = model.next_logits(ids[2:6], state)  # 2 cached + 4 new = 6 <= 8: incremental
    torch.testing.assert_close(logits, full_recompute_logits(model, ids[:6]), atol=ATOL, rtol=RTOL)
    logits, state = model.next_logits(ids[6:7], state)
    torch.testing.assert_close(logits, full_recompute_logits(model, ids[:7]), atol=ATOL, rtol=RTOL)
    logits, state = model.next_logits(ids[7:14], state)  # 7 + 7 = 14 > 8: crop and recompute
    torch.testing.assert_close(logits, full_recompute_logits(model, ids[:14]), atol=ATOL, rtol=RTOL)
    assert torch.equal(state.tokens, ids[6:14])


@pytest.mark.parametrize("positional", POSITIONAL)
def test_bfloat16_autocast_forward_and_cache(positional):
    model = make_model(positional)
    ids = torch.randint(0, V, (6, 2), generator=torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids).float().sum().backward()
        logits, state = model.next_logits(ids[:4])
        logits, state = model.next_logits(ids[4:], state)
        ref = full_recompute_logits(model, ids)
    # bfloat16 keeps ~3 significant digits and the two paths round differently: a loose bound.
    torch.testing.assert_close(logits.float(), ref.float(), atol=0.1, rtol=0.05)


def test_hidden_head_contract_and_length_error():
    model = make_model()
    idx = torch.randint(0, V, (BLOCK, 2), generator=torch.Generator().manual_seed(5))
    assert model.hidden(idx).shape == (BLOCK, 2, D)
    torch.testing.assert_close(model.head(model.hidden(idx)), model(idx))
    assert model.embedding_table().shape == (V, D)
    assert model.block_size == BLOCK and model.vocab_size == V
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(BLOCK + 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size"):
        model.hidden(torch.zeros(BLOCK + 1, 2, dtype=torch.long))


def test_tie_weights_shares_the_parameter():
    tied = TransformerModel(V, D, H, N_BLOCKS, BLOCK, tie_weights=True)
    untied = TransformerModel(V, D, H, N_BLOCKS, BLOCK)
    assert tied.head.weight is tied.token_embedding.weight
    n = lambda m: sum(p.numel() for p in m.parameters())  # parameters() lists a shared one once
    assert n(untied) - n(tied) == V * D
    # A gradient step through the head moves the embedding table too.
    tied(torch.zeros(2, 1, dtype=torch.long)).sum().backward()
    assert tied.token_embedding.weight.grad is not None


def test_bad_arguments_raise_teaching_errors():
    with pytest.raises(ValueError, match="divisible"):
        TransformerModel(V, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="positional"):
        TransformerModel(V, D, H, positional="absolute")
    with pytest.raises(ValueError, match="norm"):
        TransformerModel(V, D, H, norm="sandwich")
    with pytest.raises(ValueError, match="even"):
        TransformerModel(V, d_model=12, n_heads=4, positional="rope")  # head size 3


# --- training ---

def counting_batch(g, batch=32, T=16):
    """3seqs-like lines: counting by 1 or by 2 from a random start. From position 1 on, the next token is
    determined by the last two; a model that ignores the context (a bigram) is stuck at ~log 2 nats there."""
    step = 1 + torch.randint(0, 2, (1, batch), generator=g)
    start = torch.randint(0, V - 2 * (T - 1), (1, batch), generator=g)
    return start + step * torch.arange(T).unsqueeze(1)  # (T, B)


@pytest.mark.parametrize("positional,norm", [(p, "pre") for p in POSITIONAL] + [("learned", "post")])
def test_learns_counting_sequences(positional, norm):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = TransformerModel(V, D, H, N_BLOCKS, block_size=16, positional=positional, norm=norm)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        idx = counting_batch(g)
        loss = F.cross_entropy(model(idx)[:-1].reshape(-1, V), idx[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        idx = counting_batch(torch.Generator().manual_seed(1), batch=256)  # fresh data
        # Skip the prediction from position 0: with one token seen, the step (1 or 2) is a coin flip.
        held_out = F.cross_entropy(model(idx)[1:-1].reshape(-1, V), idx[2:].reshape(-1)).item()
    assert held_out < 0.1, held_out


@torch.no_grad()
def test_kv_cache_branches_via_an_explicit_copy():
    # next_logits() updates the cache in place; two continuations from one state copy it first. Each branch must
    # see only its own keys and values, and the first must be intact after the second ran.
    model = make_model("learned")
    ids = torch.randint(0, V, (5, 2), generator=torch.Generator().manual_seed(7))
    _, state = model.next_logits(ids[:3])
    branch = state.copy()
    a, b = ids[3:4], ids[4:5]
    logits_a, state_a = model.next_logits(a, state)
    logits_b, state_b = model.next_logits(b, branch)
    assert state_a is state and state_b is branch  # updated in place
    torch.testing.assert_close(logits_a, full_recompute_logits(model, torch.cat([ids[:3], a])), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(logits_b, full_recompute_logits(model, torch.cat([ids[:3], b])), atol=ATOL, rtol=RTOL)
    logits_a2, _ = model.next_logits(b, state_a)  # the first branch is intact after the second one
    torch.testing.assert_close(logits_a2, full_recompute_logits(model, torch.cat([ids[:3], a, b])),
                               atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("norm", NORMS)
@torch.no_grad()
def test_cache_equals_recompute(positional, norm):
    # forward with a cache, one token at a time and several at once (T = 1 and T > 1 after a cache, which
    # needs the offset causal mask), against the whole sequence without one: the same logits at every
    # position, and the cache holds the same keys and values as one pass over the sequence writes.
    model = make_model(positional, norm)
    ids = torch.randint(0, V, (BLOCK, 2), generator=torch.Generator().manual_seed(8))
    full = model(ids)  # (BLOCK, 2, V), no cache
    cache = model.new_cache(2)
    pieces = [ids[:3], ids[3:4], ids[4:7], ids[7:8]]
    logits = torch.cat([model(piece, cache) for piece in pieces])  # (BLOCK, 2, V)
    torch.testing.assert_close(logits, full, atol=ATOL, rtol=RTOL)
    assert cache.pos == BLOCK and torch.equal(cache.tokens, ids)
    one_pass = model.new_cache(2)
    torch.testing.assert_close(model.hidden(ids, one_pass), model.hidden(ids), atol=ATOL, rtol=RTOL)
    for k1, k2, v1, v2 in zip(cache.keys, one_pass.keys, cache.values, one_pass.values):
        torch.testing.assert_close(k1, k2, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(v1, v2, atol=ATOL, rtol=RTOL)
    # With a cache, the attention weights cover the cached keys too, and still never the future.
    cache = model.new_cache(2)
    model(ids[:5], cache)
    logits, attn = model(ids[5:], cache, return_attention=True)
    assert attn.shape == (N_BLOCKS, 2, H, BLOCK - 5, BLOCK)
    torch.testing.assert_close(logits, full[5:], atol=ATOL, rtol=RTOL)
    assert torch.all(attn[..., ~causal_mask(BLOCK - 5, BLOCK, "cpu")] == 0)


@torch.no_grad()
def test_cache_refuses_overflow_and_a_wrong_batch():
    model = make_model()
    cache = model.new_cache(2)
    model(torch.zeros(BLOCK - 1, 2, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(2, 2, dtype=torch.long), cache)  # 7 cached + 2 new > 8
    with pytest.raises(ValueError, match="sequences"):
        model(torch.zeros(1, 3, dtype=torch.long), cache)
    assert cache.pos == BLOCK - 1  # a refused call leaves the cache as it was


def test_dropout_from_the_config_acts_in_training_only():
    from pico_helpers.config import TrainConfig
    from pico_helpers.models import build_model

    config = TrainConfig.quick(embed_size=D, n_heads=H, n_blocks=N_BLOCKS, block_size=BLOCK, dropout=0.5)
    model = build_model("kvcache_transformer", config, V)
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.5}
    x = torch.randint(0, V, (BLOCK, 2))
    model.train()
    assert not torch.equal(model(x), model(x))  # a different mask each call
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig.quick(dropout=1.0)
