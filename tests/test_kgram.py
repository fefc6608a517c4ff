"""KGramMLPSeqModel against a slow reference that builds real one-hot vectors, plus small training runs."""
import math

import pytest
import torch
import torch.nn.functional as F

from pico_helpers.models import KGramMLPSeqModel

V, K, E = 30, 3, 16  # tiny sizes: the reference loops in Python

# float32 throughout. The model and the reference add the same non-zero products (the one-hot matmul's
# other k*V - k products are exact zeros) in a different order, so they differ by rounding only:
# ~1e-7 relative. 1e-5 absolute / 1e-4 relative is far above that and far below any real bug.
ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(autouse=True, scope="module")
def _tiny_tensors_one_thread(one_thread):
    """Tiny tensors: one CPU thread is fastest, and immune to slowdowns when other jobs share the cores."""


# --- reference: Python loops over batch and positions, real one-hot vectors ---

def window_ids(idx, b, t, k, window):
    """The k token ids (oldest first) that position t of sequence b sees, left-padded with 0."""
    positions = range(t - k + 1, t + 1) if window == "aligned" else range(t - k, t)
    return [int(idx[s, b]) if s >= 0 else 0 for s in positions]


def reference_forward(model, idx):
    """(T, B) ids -> (T, B, V) logits, one position at a time, with the model's own layers."""
    T, B = idx.shape
    out = torch.empty(T, B, model.vocab_size)
    for b in range(B):
        for t in range(T):
            ids = window_ids(idx, b, t, model.k, model.window)
            if model.input_mode == "one_hot":
                x = torch.cat([F.one_hot(torch.tensor(i), model.vocab_size).float() for i in ids])  # (k*V,)
            else:
                x = torch.cat([model.embedding.weight[i] for i in ids])  # (k*E,)
            h = model.inner(F.silu(model.first(x)))  # (E,)
            out[t, b] = model.head(h)
    return out


def make_model(input_mode, window, chunk_size=0, seed=0):
    torch.manual_seed(seed)
    return KGramMLPSeqModel(V, K, E, num_inner_layers=2, chunk_size=chunk_size, input_mode=input_mode,
                            window=window)


MODES = ["one_hot", "embedding"]
WINDOWS = ["aligned", "starter"]


# --- exactness against the reference ---

@pytest.mark.parametrize("input_mode", MODES)
@pytest.mark.parametrize("window", WINDOWS)
def test_forward_and_gradients_match_one_hot_loop(input_mode, window):
    model = make_model(input_mode, window)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, V, (7, 3), generator=g)  # T=7 > k, so windows both pad and slide
    weights = torch.randn(7, 3, V, generator=g)  # a loss that reaches every logit with its own weight
    params = list(model.parameters())

    ours = model(idx)
    ref = reference_forward(model, idx)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)

    grads_ours = torch.autograd.grad((ours * weights).sum(), params)
    grads_ref = torch.autograd.grad((ref * weights).sum(), params)
    for (name, _), a, b in zip(model.named_parameters(), grads_ours, grads_ref):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_windows_are_the_documented_tokens():
    # Position 0 of "aligned" sees [pad, pad, token 0]; "starter" sees only pads at position 0.
    idx = torch.tensor([[5], [6], [7], [8]])
    assert window_ids(idx, 0, 0, 3, "aligned") == [0, 0, 5]
    assert window_ids(idx, 0, 3, 3, "aligned") == [6, 7, 8]
    assert window_ids(idx, 0, 0, 3, "starter") == [0, 0, 0]
    assert window_ids(idx, 0, 3, 3, "starter") == [5, 6, 7]
    # And the model agrees: changing token t changes logits at t for "aligned", not for "starter".
    for window, changes in (("aligned", True), ("starter", False)):
        model = make_model("embedding", window)
        other = idx.clone()
        other[2, 0] = 9
        differs = not torch.allclose(model(idx)[2], model(other)[2])
        assert differs == changes, window


@pytest.mark.parametrize("input_mode", MODES)
def test_chunk_size_does_not_change_outputs(input_mode):
    idx = torch.randint(0, V, (10, 2), generator=torch.Generator().manual_seed(2))
    outs = [make_model(input_mode, "aligned", chunk_size=c)(idx) for c in (1, 3, 0, None, 100)]
    for out in outs[1:]:
        # Same arithmetic per position; only the matmul shapes differ (possible last-bit differences).
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("input_mode", MODES)
@pytest.mark.parametrize("window", WINDOWS)
def test_next_logits_equals_forward_last(input_mode, window):
    model = make_model(input_mode, window)
    idx = torch.randint(0, V, (9, 2), generator=torch.Generator().manual_seed(3))
    full = model(idx)
    logits, state = model.next_logits(idx[:4])  # a prompt of 4 tokens
    torch.testing.assert_close(logits, full[3], atol=1e-6, rtol=1e-6)
    for t in range(4, 9):  # then one token at a time
        logits, state = model.next_logits(idx[t:t + 1], state)
        torch.testing.assert_close(logits, full[t], atol=1e-6, rtol=1e-6)
    assert state.shape == (K, 2)
    logits, _ = model.next_logits(idx[:1])  # a one-token prompt: the window is mostly padding
    torch.testing.assert_close(logits, full[0], atol=1e-6, rtol=1e-6)


def test_embedding_table_shapes_and_one_hot_slot():
    for input_mode in MODES:
        assert make_model(input_mode, "aligned").embedding_table().shape == (V, E)
    model = make_model("one_hot", "aligned")
    # Row v of the table is what the first layer adds when token v sits in the most recent slot.
    x = torch.zeros(K * V)
    x[(K - 1) * V + 4] = 1.0
    torch.testing.assert_close(model.first(x) - model.first.bias, model.embedding_table()[4])


def test_bad_arguments_raise_teaching_errors():
    with pytest.raises(ValueError, match="input_mode"):
        KGramMLPSeqModel(V, K, E, input_mode="onehot")
    with pytest.raises(ValueError, match="window"):
        KGramMLPSeqModel(V, K, E, window="shifted")
    with pytest.raises(ValueError, match="k"):
        KGramMLPSeqModel(V, 0, E)


# --- small training runs ---

def train(model, batch_fn, steps, lr=1e-2, seed=0):
    """Plain Adam, next-token cross-entropy; ``batch_fn(g)`` -> (idx (T, B), mask (T-1, B) of counted targets)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx, mask = batch_fn(g)
        logits = model(idx)[:-1]  # (T-1, B, V): logits at t predict token t+1
        loss = F.cross_entropy(logits[mask], idx[1:][mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        idx, mask = batch_fn(torch.Generator().manual_seed(seed + 1), batch=512)  # fresh data
        return F.cross_entropy(model(idx)[:-1][mask], idx[1:][mask]).item()


def counting_batch(g, batch=32, T=12, vocab=20):
    """Counting runs s, s+1, ..., s+T-1 with a random start: every next token is determined."""
    start = torch.randint(0, vocab - T + 1, (1, batch), generator=g)
    idx = start + torch.arange(T).unsqueeze(1)  # (T, B)
    return idx, torch.ones(T - 1, batch, dtype=torch.bool)


def pairs_batch(g, batch=32, T=12, vocab=16):
    """Pairs (x, x+1 mod vocab) with x uniform: counted targets are the x+1, which follow from x alone."""
    x = torch.randint(0, vocab, (T // 2, batch), generator=g)
    idx = torch.stack([x, (x + 1) % vocab], dim=1).reshape(T, batch)  # x0, x0+1, x1, x1+1, ...
    mask = torch.zeros(T - 1, batch, dtype=torch.bool)
    mask[0::2] = True  # logits at even t (which hold an x) predict x+1
    return idx, mask


@pytest.mark.parametrize("input_mode", MODES)
def test_learns_counting(input_mode):
    torch.manual_seed(0)
    model = KGramMLPSeqModel(20, k=3, embed_size=32, num_inner_layers=1, chunk_size=0, input_mode=input_mode)
    loss = train(model, counting_batch, steps=200)
    assert loss < 0.05, loss  # deterministic targets: a perfect model reaches 0


def test_aligned_beats_starter_when_next_depends_on_current():
    # The next token is x+1 where x is the current token, drawn independently of everything before it.
    # "aligned" sees x and can reach ~0 loss; "starter" never sees x, so the best it can do is a uniform
    # guess: log(16) = 2.77 nats. Fresh evaluation data keeps it from doing better by memorising.
    losses = {}
    for window in WINDOWS:
        torch.manual_seed(0)
        model = KGramMLPSeqModel(16, k=3, embed_size=32, num_inner_layers=1, chunk_size=0,
                                 input_mode="embedding", window=window)
        losses[window] = train(model, pairs_batch, steps=200)
    assert losses["aligned"] < 0.05, losses
    assert losses["starter"] > 0.9 * math.log(16), losses
