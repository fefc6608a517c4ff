"""Sparse autoencoder: unit-norm decoder, recovery of a known sparse dictionary, resampling, metrics, splicing."""
import pytest
import torch
import torch.nn as nn

from pico_helpers.analysis.sae import (SparseAutoencoder, collect_activations, loss_recovered, sae_metrics,
                                       train_sae)
from pico_helpers.models.transformer import TransformerModel
from pico_helpers.training.losses import compute_next_token_loss

D, N_TRUE = 32, 64  # synthetic data: 64 true directions in 32 dimensions


@pytest.fixture(autouse=True, scope="module")
def _tiny_tensors_one_thread(one_thread):
    """Tiny tensors: one CPU thread is fastest, and immune to slowdowns when other jobs share the cores."""


def sparse_data(n: int = 8192, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, D) tokens, each a sum of 1-3 of N_TRUE random unit directions with coefficients in [0.5, 1.5];
    and the (N_TRUE, D) directions."""
    g = torch.Generator().manual_seed(seed)
    dirs = nn.functional.normalize(torch.randn(N_TRUE, D, generator=g), dim=1)
    n_active = torch.randint(1, 4, (n, 1), generator=g)
    rank = torch.rand(n, N_TRUE, generator=g).argsort(1).argsort(1)  # a random permutation per token
    coef = (rank < n_active) * (0.5 + torch.rand(n, N_TRUE, generator=g))  # (n, N_TRUE), 1-3 non-zeros a row
    return coef @ dirs, dirs


def tiny_model(seed: int = 0) -> TransformerModel:
    torch.manual_seed(seed)
    return TransformerModel(vocab_size=50, d_model=32, n_heads=2, n_blocks=2, block_size=16).eval()


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (12, 3), mask (12, 3)): three sequences of 12, 7 and 3 real tokens, right-padded with 0."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 50, (12, 3), generator=g)
    mask = torch.arange(12)[:, None] < torch.tensor([12, 7, 3])  # (T, B)
    return tokens.masked_fill(~mask, 0), mask


class StubSAE(nn.Module):
    """An 'SAE' whose reconstruction is its input (identity) or zeros: the two ends of loss recovered."""

    def __init__(self, zero: bool):
        super().__init__()
        self.zero = zero

    def forward(self, x):
        return (torch.zeros_like(x) if self.zero else x), x


# --- the autoencoder and its training ---

def test_shapes_scale_and_unit_norm_decoder_after_training():
    x = torch.randn(500, D) * 7 + 3
    sae, log = train_sae(x, 4 * D, steps=30, batch_size=64, seed=0)
    x_hat, f = sae(x)
    assert x_hat.shape == (500, D) and f.shape == (500, 4 * D) and (f >= 0).all()
    assert torch.equal(sae.decode(sae.encode(x)), x_hat)
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(4 * D), atol=1e-5)  # renormalised after every step
    assert ((x * sae.scale).pow(2).sum(1).mean() / D).item() == pytest.approx(1.0, rel=1e-4)
    assert len(log["loss"]) == len(log["mse"]) == len(log["l0"]) == 30


def test_parallel_gradient_is_removed():
    sae = SparseAutoencoder(D, 2 * D, generator=torch.Generator().manual_seed(0))
    sae(torch.randn(10, D, generator=torch.Generator().manual_seed(1)))[0].pow(2).sum().backward()
    before = sae.W_dec.grad.clone()
    sae.remove_parallel_grad_()
    along = (sae.W_dec * sae.W_dec.grad).sum(0)  # (F,) each column's gradient component along itself
    # float32: what is left is rounding, a few ulps of the gradient's own size
    assert along.abs().max() < 1e-5 * before.norm(dim=0).max() and not torch.allclose(before, sae.W_dec.grad)


@pytest.mark.parametrize("k, l1", [(None, 3.0), (3, 0.0)], ids=["relu-l1", "top3"])
def test_recovers_a_known_sparse_dictionary(k, l1):
    x, dirs = sparse_data()
    sae, _ = train_sae(x, 4 * D, k=k, l1=l1, steps=2000, batch_size=256, seed=0)
    best_cos = (dirs @ sae.W_dec.detach()).max(1).values  # (N_TRUE,) the closest decoder column to each direction
    assert (best_cos > 0.9).float().mean() >= 0.8
    assert sae_metrics(sae, x)["fve"] > 0.7


def test_top_k_keeps_at_most_k_features():
    x, _ = sparse_data(2048)
    sae, log = train_sae(x, 4 * D, k=5, steps=50, batch_size=256, seed=0)
    assert (sae.encode(x) > 0).sum(1).max() <= 5
    assert sae_metrics(sae, x)["l0"] <= 5 and max(log["l0"]) <= 5


def test_resampling_revives_dead_features():
    # 16x features, top-1 on data with 64 directions: most features never win a token and die
    x, _ = sparse_data(4096)
    args = dict(n_features=16 * D, k=1, steps=500, batch_size=256, seed=0)
    dead_without = sae_metrics(train_sae(x, resample_every=None, **args)[0], x)["dead_fraction"]
    sae, log = train_sae(x, resample_every=100, **args)
    assert dead_without > 0.25 and log["resampled"]
    assert sae_metrics(sae, x)["dead_fraction"] < 0.5 * dead_without


def test_deterministic_given_the_seed():
    x, _ = sparse_data(1024)
    runs = [train_sae(x, 16 * D, k=1, steps=40, batch_size=128, seed=s, resample_every=10) for s in (1, 1, 2)]
    assert runs[0][1]["resampled"]  # the resampling draws are seeded too
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()))
    assert runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0].W_dec, runs[2][0].W_dec)


def test_metrics_against_a_direct_count():
    sae = SparseAutoencoder(D, 8, generator=torch.Generator().manual_seed(0))
    x = torch.randn(300, D)
    m = sae_metrics(sae, x, batch_size=64)  # chunks of 64 must add up as one pass would
    x_hat, f = sae(x)
    active = (f > 0).float()  # (N, F)
    assert m["fve"] == pytest.approx(1 - ((x - x_hat) ** 2).sum().item() / ((x - x.mean(0)) ** 2).sum().item(),
                                     rel=1e-4)
    assert m["l0"] == pytest.approx(active.sum(1).mean().item(), rel=1e-5)
    assert torch.allclose(m["frequency"], active.mean(0))
    assert m["dead_fraction"] == (active.sum(0) == 0).float().mean().item()
    assert m["dense_fraction"] == (active.mean(0) > 0.1).float().mean().item()


# --- collecting and splicing on a TransformerModel ---

def reference_sites(model: TransformerModel, tokens: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``layer``'s output (T, B, D) and its MLP's GELU output (T, B, 4D), by running the blocks by hand."""
    x = model.token_embedding(tokens.t()) + model.pos_embedding.weight[:tokens.size(0)]  # (B, T, D)
    for block in model.blocks[:layer + 1]:
        x = x + block.attn(block.norm1(x))[0]
        hidden = block.mlp.gelu(block.mlp.fc(block.norm2(x)))  # (B, T, 4D)
        x = x + block.mlp.proj(hidden)
    return x.transpose(0, 1), hidden.transpose(0, 1)


@pytest.mark.parametrize("layer", [0, 1])
def test_collect_activations_keeps_real_tokens_in_order(layer):
    model = tiny_model()
    tokens, mask = padded_batch()
    resid = collect_activations(model, [(tokens, mask), (tokens, mask)], layer, "resid")
    mlp = collect_activations(model, [(tokens, mask)], layer, "mlp")
    with torch.no_grad():
        ref_resid, ref_mlp = reference_sites(model, tokens, layer)
    n_real = int(mask.sum())
    assert resid.shape == (2 * n_real, 32) and mlp.shape == (n_real, 128) and resid.dtype == torch.float32
    assert torch.allclose(resid[:n_real], ref_resid[mask], atol=1e-5)  # (T, B) order, padding left out
    assert torch.allclose(mlp, ref_mlp[mask], atol=1e-5)
    assert not model.blocks[layer]._forward_hooks and not model.blocks[layer].mlp.gelu._forward_hooks


@pytest.mark.parametrize("site", ["resid", "mlp"])
def test_loss_recovered_is_one_for_identity_and_zero_for_zeros(site):
    model = tiny_model()
    tokens, mask = padded_batch()
    with torch.no_grad():
        clean = compute_next_token_loss(model(tokens), tokens, mask).item()
    same = loss_recovered(model, StubSAE(zero=False), tokens, mask, layer=0, site=site)
    zero = loss_recovered(model, StubSAE(zero=True), tokens, mask, layer=0, site=site)
    assert same["clean"] == zero["clean"] == pytest.approx(clean, abs=1e-6)
    assert same["spliced"] == same["clean"] and same["fraction"] == 1.0
    assert zero["spliced"] == zero["zero_ablated"] != zero["clean"] and zero["fraction"] == 0.0
    with torch.no_grad():  # the hooks are gone: the model is untouched
        assert compute_next_token_loss(model(tokens), tokens, mask).item() == pytest.approx(clean, abs=1e-6)


def counting_model(steps: int = 60) -> tuple[TransformerModel, torch.Tensor, torch.Tensor]:
    """A tiny model trained on arithmetic sequences (t -> t + step mod 50), far better than the uniform guess;
    and a padded batch of such sequences (tokens (12, 3), mask (12, 3))."""
    model = tiny_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        start, stride = torch.randint(0, 50, (1, 16), generator=g), torch.randint(1, 4, (1, 16), generator=g)
        seq = (start + torch.arange(12)[:, None] * stride) % 50  # (12, 16)
        opt.zero_grad()
        compute_next_token_loss(model(seq), seq).backward()
        opt.step()
    _, mask = padded_batch()
    tokens = (torch.tensor([3, 10, 40]) + torch.arange(12)[:, None] * torch.tensor([1, 2, 3])) % 50  # (12, 3)
    return model.eval(), tokens.masked_fill(~mask, 0), mask


def test_a_trained_sae_splices_in_and_a_custom_loss_is_used():
    model, tokens, mask = counting_model()
    acts = collect_activations(model, [(tokens, mask)] * 4, layer=1)
    sae, _ = train_sae(acts, 4 * 32, k=8, steps=100, batch_size=64, seed=0)
    calls = []

    def loss_fn(m, t, pad):
        calls.append(1)
        return compute_next_token_loss(m(t), t, pad)

    result = loss_recovered(model, sae, tokens, mask, layer=1, loss_fn=loss_fn)
    assert len(calls) == 3 and result["zero_ablated"] > result["clean"] + 1  # the model has learnt something
    assert 0.9 < result["fraction"] < 1.1  # 128 features for 27 tokens: a near-perfect reconstruction


def test_errors_name_the_allowed_values():
    model = tiny_model()
    tokens, mask = padded_batch()
    with pytest.raises(ValueError, match="site must be one of"):
        collect_activations(model, [(tokens, mask)], 0, site="attn")
    with pytest.raises(ValueError, match=r"layer must be a block index in \[0, 2\)"):
        loss_recovered(model, StubSAE(zero=False), tokens, mask, layer=2)
    with pytest.raises(ValueError, match="k must be None"):
        SparseAutoencoder(D, 8, k=9)
