"""Tests for pico_helpers.training.losses against a plain full-logits cross-entropy written here."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pico_helpers.training.losses import chunk_rows, compute_next_token_loss, fused_linear_cross_entropy, next_token_loss

# float32 tolerances: the fused path and the reference add the same terms in a different order
# (chunked sums, in-place log-softmax), so results differ by a few float32 ulps of the largest
# partial sums: ~1e-6 relative. 1e-5 relative / 1e-6 absolute leaves a safe margin.
RTOL, ATOL = 1e-5, 1e-6


# --- an independent reference and a tiny model ---

class TinyModel(nn.Module):
    """embedding -> linear + tanh -> head: just enough to follow the hidden/head contract."""

    def __init__(self, vocab_size: int, d: int = 16, bias: bool = True, tied: bool = False):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, d)
        self.mix = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab_size, bias=bias)
        if tied:
            self.head.weight = self.embedding.weight  # one Parameter, two uses

    def hidden(self, idx):
        return torch.tanh(self.mix(self.embedding(idx)))  # (T, B, d)

    def forward(self, idx):
        return self.head(self.hidden(idx))  # (T, B, V)


def reference_loss(logits, tokens, pad_mask=None):
    """Loop over every (t, b): the logits at t score token t+1; keep pairs whose target is real."""
    T, B, _ = logits.shape
    terms = []
    for t in range(T - 1):
        for b in range(B):
            if pad_mask is None or bool(pad_mask[t + 1, b]):
                terms.append(F.cross_entropy(logits[t, b].float()[None], tokens[t + 1, b][None]))
    if not terms:
        return logits.sum() * 0.0
    return torch.stack(terms).mean()


def grads(tensors):
    out = [None if x.grad is None else x.grad.clone() for x in tensors]
    for x in tensors:
        x.grad = None
    return out


def random_padding(T, B, gen):
    """Right padding with random lengths, one sequence all padding and one full length."""
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = 0  # all padding
    lengths[-1] = T
    return torch.arange(T)[:, None] < lengths[None, :]  # (T, B) True = real


def assert_params_match(model, loss_fn, ref_fn):
    params = [p for p in model.parameters()]  # tied weights appear once here
    loss = loss_fn()
    loss.backward()
    got = grads(params)
    ref = ref_fn()
    ref.backward()
    want = grads(params)
    torch.testing.assert_close(loss, ref, rtol=RTOL, atol=ATOL)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL)


# --- fused function against full logits ---

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000, None])  # 7 does not divide N = 50; 1000 > N; None: default
def test_fused_matches_full_logits(bias, chunk_size):
    gen = torch.Generator().manual_seed(0)
    N, D, V = 50, 16, 1000
    h = torch.randn(N, D, generator=gen).requires_grad_()
    w = (torch.randn(V, D, generator=gen) * 0.5).requires_grad_()
    b = (torch.randn(V, generator=gen) * 0.5).requires_grad_() if bias else None
    t = torch.randint(V, (N,), generator=gen)
    leaves = [x for x in (h, w, b) if x is not None]

    loss = fused_linear_cross_entropy(h, w, b, t, chunk_size)
    loss.backward()
    got = grads(leaves)
    logits = h @ w.T + (b if bias else 0.0)  # (N, V), the plain path
    ref = F.cross_entropy(logits, t)
    ref.backward()
    want = grads(leaves)

    torch.testing.assert_close(loss, ref, rtol=RTOL, atol=ATOL)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=RTOL, atol=ATOL)


def test_default_chunks_grow_with_width():
    # max(128, D // 2) rows: 128 for the small models, taller chunks where grad_W is large.
    assert [chunk_rows(d) for d in (16, 128, 256, 512, 1024)] == [128, 128, 128, 256, 512]
    gen = torch.Generator().manual_seed(2)
    N, D, V = 700, 600, 300  # default chunks of 300 rows: two full, one partial
    h = torch.randn(N, D, generator=gen).requires_grad_()
    w = (torch.randn(V, D, generator=gen) * 0.05).requires_grad_()
    t = torch.randint(V, (N,), generator=gen)
    loss = fused_linear_cross_entropy(h, w, None, t)
    loss.backward()
    got = grads([h, w])
    ref = F.cross_entropy(h @ w.T, t)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=RTOL, atol=ATOL)
    for g, r in zip(got, grads([h, w])):
        torch.testing.assert_close(g, r, rtol=RTOL, atol=ATOL)


def test_fused_full_gpt2_vocab():
    gen = torch.Generator().manual_seed(1)
    N, D, V = 6, 8, 50257
    h = torch.randn(N, D, generator=gen).requires_grad_()
    w = (torch.randn(V, D, generator=gen) * 0.3).requires_grad_()
    b = (torch.randn(V, generator=gen) * 0.3).requires_grad_()
    t = torch.tensor([0, 1, 50256, 25000, 50256, 7])
    loss = fused_linear_cross_entropy(h, w, b, t, chunk_size=4)  # chunks of 4 + 2
    loss.backward()
    got = grads([h, w, b])
    ref = F.cross_entropy(h @ w.T + b, t)
    ref.backward()
    want = grads([h, w, b])
    torch.testing.assert_close(loss, ref, rtol=RTOL, atol=ATOL)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=RTOL, atol=ATOL)


def test_backward_scales_by_grad_output():
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(10, 4, generator=gen).requires_grad_()
    w = torch.randn(30, 4, generator=gen).requires_grad_()
    t = torch.randint(30, (10,), generator=gen)
    fused_linear_cross_entropy(h, w, None, t, 3).backward()
    once = grads([h, w])
    (3.0 * fused_linear_cross_entropy(h, w, None, t, 3)).backward()
    thrice = grads([h, w])
    for a, b in zip(once, thrice):
        torch.testing.assert_close(3.0 * a, b, rtol=RTOL, atol=ATOL)


def test_float64_stays_float64():
    # float64 inputs keep float64 softmax and sums, so the match is near-exact.
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(9, 5, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.randn(40, 5, generator=gen, dtype=torch.float64).requires_grad_()
    t = torch.randint(40, (9,), generator=gen)
    loss = fused_linear_cross_entropy(h, w, None, t, 4)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, F.cross_entropy(h @ w.T, t), rtol=1e-12, atol=1e-12)


# --- next_token_loss on a model ---

@pytest.mark.parametrize("bias", [True, False])
def test_next_token_loss_with_padding(bias):
    gen = torch.Generator().manual_seed(4)
    T, B, V = 9, 5, 1000
    torch.manual_seed(4)
    model = TinyModel(V, bias=bias)
    tokens = torch.randint(V, (T, B), generator=gen)
    pad_mask = random_padding(T, B, gen)
    tokens[~pad_mask] = 0  # padded with id 0, a real GPT-2 id: only the mask tells them apart
    assert (~pad_mask[1:]).sum() > 10  # many targets are masked
    assert_params_match(
        model,
        lambda: next_token_loss(model, tokens, pad_mask, chunk_size=5),  # N is not a multiple of 5 here
        lambda: reference_loss(model(tokens), tokens, pad_mask),
    )


def test_next_token_loss_without_mask_equals_compute_next_token_loss():
    torch.manual_seed(5)
    model = TinyModel(100)
    tokens = torch.randint(100, (7, 3))
    assert_params_match(
        model,
        lambda: next_token_loss(model, tokens, chunk_size=4),
        lambda: compute_next_token_loss(model(tokens), tokens),
    )


def test_tied_weights_get_both_gradients():
    torch.manual_seed(6)
    T, B, V = 8, 4, 200
    model = TinyModel(V, tied=True)
    assert model.head.weight is model.embedding.weight
    tokens = torch.randint(V, (T, B))
    pad_mask = random_padding(T, B, torch.Generator().manual_seed(6))
    # the shared Parameter's gradient = head part (from the fused Function) + embedding part
    assert_params_match(
        model,
        lambda: next_token_loss(model, tokens, pad_mask, chunk_size=3),
        lambda: reference_loss(model(tokens), tokens, pad_mask),
    )


def test_all_padding_gives_zero_with_gradient():
    torch.manual_seed(7)
    model = TinyModel(50)
    tokens = torch.randint(50, (6, 3))
    pad_mask = torch.zeros(6, 3, dtype=torch.bool)
    pad_mask[0] = True  # only the first token is real: no real target anywhere
    for loss in (next_token_loss(model, tokens, pad_mask),
                 compute_next_token_loss(model(tokens), tokens, pad_mask)):
        assert loss.item() == 0.0
        loss.backward()
        for p in model.parameters():
            assert p.grad is None or (torch.isfinite(p.grad).all() and (p.grad == 0).all())
        model.zero_grad(set_to_none=True)
    # a single time step has no (position, next token) pair at all
    one_step = torch.randint(50, (1, 3))
    assert next_token_loss(model, one_step).item() == 0.0
    assert compute_next_token_loss(model(one_step), one_step).item() == 0.0


# --- evaluation mode ---

def _count_matmuls(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name in ("aten::mm", "aten::addmm", "aten::addmm_"))


def test_no_grad_gives_same_value_and_skips_gradient_work():
    torch.manual_seed(8)
    T, B, V = 10, 4, 300
    model = TinyModel(V)
    tokens = torch.randint(V, (T, B))
    pad_mask = random_padding(T, B, torch.Generator().manual_seed(8))
    with_grad = next_token_loss(model, tokens, pad_mask, chunk_size=4)
    with torch.no_grad():
        no_grad = next_token_loss(model, tokens, pad_mask, chunk_size=4)
    with torch.inference_mode():
        inference = next_token_loss(model, tokens, pad_mask, chunk_size=4)
    assert not no_grad.requires_grad and not inference.requires_grad
    # the same arithmetic on the same rows, so the values are identical
    assert no_grad.item() == with_grad.item() == inference.item()
    # with grad each chunk runs 3 matmuls (logits, grad_h, grad_W); without, only the logits one
    h = torch.randn(20, 8, requires_grad=True)
    w = torch.randn(30, 8, requires_grad=True)
    t = torch.randint(30, (20,))
    n_grad = _count_matmuls(lambda: fused_linear_cross_entropy(h, w, None, t, 5))
    with torch.no_grad():
        n_eval = _count_matmuls(lambda: fused_linear_cross_entropy(h, w, None, t, 5))
    assert n_eval == 4 and n_grad == 12


# --- bf16 autocast on CPU ---

def test_bf16_autocast_cpu():
    torch.manual_seed(9)
    T, B, V = 12, 4, 1000
    model = TinyModel(V, d=32)
    tokens = torch.randint(V, (T, B))
    pad_mask = random_padding(T, B, torch.Generator().manual_seed(9))
    ref = reference_loss(model(tokens), tokens, pad_mask)  # float32
    ref.backward()
    ref_grads = grads(list(model.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = next_token_loss(model, tokens, pad_mask, chunk_size=7)
    assert loss.dtype == torch.float32  # the softmax and the sums stay float32
    loss.backward()
    # bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2%); hidden states, weights and
    # logits (|z| ~ 1) are each rounded once and the errors average out over the rows, so the loss
    # (~ln 1000 = 6.9) moves by ~1e-3 (measured <= 6e-4 over 5 seeds); 1e-2 leaves a 15x margin.
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-2)
    for p, r in zip(model.parameters(), ref_grads):
        assert p.grad is not None and p.grad.dtype == p.dtype and torch.isfinite(p.grad).all()
        # bf16 gradients are within about 0.5% of the float32 ones (measured over 5 seeds; the
        # bias gradient, built in float32 from the float32 softmax, is closer still); 2% is the bound
        rel = (p.grad - r).norm() / r.norm()
        assert rel < 0.02, f"relative gradient error {rel:.4f}"


# --- the plain reference loss ---

def test_compute_next_token_loss_ignores_padding():
    gen = torch.Generator().manual_seed(10)
    T, B, V = 8, 4, 60
    logits = torch.randn(T, B, V, generator=gen)
    tokens = torch.randint(V, (T, B), generator=gen)
    pad_mask = random_padding(T, B, gen)
    base = compute_next_token_loss(logits, tokens, pad_mask)
    torch.testing.assert_close(base, reference_loss(logits, tokens, pad_mask), rtol=RTOL, atol=ATOL)
    # logits whose target is padding (or that have no target: the last step) must not matter
    no_target = torch.ones(T, B, dtype=torch.bool)
    no_target[:-1] = ~pad_mask[1:]
    changed = logits.clone()
    changed[no_target] = 1e4 * torch.randn(int(no_target.sum()), V, generator=gen)
    assert compute_next_token_loss(changed, tokens, pad_mask).item() == base.item()
    # and the padded token ids themselves do not matter either
    retokened = tokens.clone()
    retokened[~pad_mask] = torch.randint(V, (int((~pad_mask).sum()),), generator=gen)
    assert compute_next_token_loss(logits, retokened, pad_mask).item() == base.item()


def test_errors_say_what_to_fix():
    model = TinyModel(20)
    tokens = torch.randint(20, (5, 2))
    with pytest.raises(ValueError, match="pad_mask must have the shape"):
        next_token_loss(model, tokens, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        compute_next_token_loss(model(tokens), tokens, torch.ones(5, 2))
    with pytest.raises(ValueError, match="chunk_size"):
        next_token_loss(model, tokens, chunk_size=0)


# --- position_losses: the loss of every prediction, "other" charged as evaluate charges it ---

# Lines that share most words; each also holds one word of its own, so whichever lines the split holds out, the
# validation data has ids training never saw (the corpus vocabulary's "other"). Lengths vary, so batches pad.
UNIQUE_WORDS = ["zebra", "piano", "volcano", "saxophone", "glacier", "lantern", "harbor", "meteor",
                "walrus", "cathedral", "kettle", "tornado", "violin", "pyramid", "falcon", "orchid"]


@pytest.fixture(scope="module")
def unseen_corpus(tmp_path_factory):
    from pico_helpers.config import TrainConfig
    from pico_helpers.data import load_corpus

    path = tmp_path_factory.mktemp("unseen") / "lines.txt"
    lines = [f"the cat sat on the mat with a {word}" + " and the dog ran" * (i % 4)
             for i, word in enumerate(UNIQUE_WORDS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = TrainConfig.quick(input_files=[str(path)], test_fraction=0.25, embed_size=16, n_heads=2, n_blocks=1)
    return config, load_corpus(config)


@pytest.mark.parametrize("name", ["kvcache_transformer", "lstm_seq"])
def test_position_losses_charge_other_like_evaluate(unseen_corpus, name):
    from pico_helpers import build_model, collate, evaluate, position_losses

    config, corpus = unseen_corpus
    vocab = corpus.vocab
    val = [corpus.val[i] for i in range(len(corpus.val))]  # GPT-2 ids
    assert len(val) == 4 and len({len(s) for s in val}) > 1  # batches with padding
    tokens, mask = collate(val)  # (T, 4)
    unseen = (vocab.to_model(tokens)[1:] == vocab.other_id) & mask[1:]
    assert unseen.sum() >= 4, "the validation targets include ids training never saw"
    model = build_model(name, config, vocab)  # GPT-2 ids in, 50,257 logits out
    losses = position_losses(model, tokens, mask, batch_size=3)  # two forward batches: 3 and 1 sequences
    assert losses.shape == (tokens.shape[0] - 1, 4)
    assert torch.equal(losses.isnan(), ~mask[1:])  # NaN exactly where the target is padding
    mean = losses[mask[1:]].mean().item()
    # float32 losses of ~10.8 nats summed in another order (and the fused loss's chunks): ~1e-6; 1e-5 is the bound
    assert mean == pytest.approx(evaluate(model, corpus.val, config), rel=1e-5)
    assert mean == pytest.approx(next_token_loss(model, tokens, mask).item(), rel=1e-5)
    # independent reference: each target scored from its own prefix alone, through CorpusVocab's plain mapping
    raw = model.model
    with torch.no_grad():
        for t in range(tokens.shape[0] - 1):
            for b in range(tokens.shape[1]):
                if not mask[t + 1, b]:
                    continue
                prefix = tokens[:t + 1, b:b + 1]  # (t+1, 1) GPT-2 ids, all real (right padding)
                # (t+1, 1, 50257), the softmax in float64: in float32 a sum over 50,257 terms is itself ~4e-5 off
                logits = vocab.full_logits(raw(vocab.to_model(prefix)).double())
                want = -torch.log_softmax(logits[t, 0], dim=-1)[tokens[t + 1, b]].float()
                # float32 logits from a shorter input (other matmul shapes): ~1e-6 apart; 1e-5 relative is the bound
                torch.testing.assert_close(losses[t, b], want, rtol=1e-5, atol=1e-5)
    assert losses[unseen].min() > vocab.other_correction  # an unseen target pays at least log(n_other)
