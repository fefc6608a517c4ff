"""A sparse autoencoder on a Transformer's activations: train it, measure it, splice it back in (monosemanticity)."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from pico_helpers.training.losses import compute_next_token_loss

__all__ = ["SparseAutoencoder", "train_sae", "sae_metrics", "top_activations", "feature_purity", "collect_activations",
           "loss_recovered"]

SITES = ("resid", "mlp")


# --- the autoencoder ---

class SparseAutoencoder(nn.Module):
    """x (N, d_model) -> features f = act(W_enc (x * scale - b_dec) + b_enc) (N, n_features) -> W_dec f + b_dec.
    Decoder columns (one per feature, (d_model,)) are kept unit-norm, so a feature's size lives in f alone.
    Args: d_model, n_features (4-16 x d_model is usual). k: None = ReLU (train with an L1 penalty); an int = keep
        the k largest pre-activations per token (top-k). scale: the scalar that normalises raw inputs; encode and
        decode take and give raw activations. generator: seeds the random decoder (None: torch's global one)."""

    def __init__(self, d_model: int, n_features: int, k: int | None = None, scale: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if k is not None and not 1 <= k <= n_features:
            raise ValueError(f"k must be None (ReLU) or an int in [1, n_features={n_features}], got {k!r}")
        self.d_model, self.n_features, self.k = d_model, n_features, k
        W_dec = torch.randn(d_model, n_features, generator=generator)  # (D, F)
        self.W_dec = nn.Parameter(nn.functional.normalize(W_dec, dim=0))
        self.W_enc = nn.Parameter(self.W_dec.detach().t().clone())  # (F, D): tied at the start
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(d_model))  # subtracted before encoding, added after decoding
        self.register_buffer("scale", torch.tensor(float(scale)))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Raw x (N, D) -> pre-activations (N, F), before ReLU or top-k."""
        return (x * self.scale - self.b_dec) @ self.W_enc.t() + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw x (N, D) -> non-negative feature activations (N, F)."""
        pre = self.pre_acts(x)
        if self.k is None:
            return torch.relu(pre)
        top = pre.topk(self.k, dim=-1)  # values, indices: (N, k) each
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Features f (N, F) -> reconstruction (N, D) in raw units."""
        return (f @ self.W_dec.t() + self.b_dec) / self.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw x (N, D) -> (reconstruction (N, D), feature activations (N, F))."""
        if x.dim() != 2 or x.shape[1] != self.d_model:
            raise ValueError(f"x must be (N, d_model={self.d_model}) activations, got shape {tuple(x.shape)}")
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Before the optimizer step: drop the part of each column's gradient that would only change its norm."""
        if self.W_dec.grad is not None:
            self.W_dec.grad -= self.W_dec * (self.W_dec * self.W_dec.grad).sum(0, keepdim=True)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """After the optimizer step: scale every decoder column back to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=0, keepdim=True).clamp(min=1e-8)


# --- training ---

def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """Yield ``steps`` index tensors (<= batch_size,) walking through seeded shuffles of range(n), epoch by epoch."""
    order, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos >= n:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos:pos + batch_size]
        pos += batch_size


@torch.no_grad()
def _resample_dead(sae: SparseAutoencoder, opt: torch.optim.Adam, acts: torch.Tensor, dead: torch.Tensor,
                   gen: torch.Generator) -> None:
    """Point each dead feature (``dead`` (F,) bool) at an input the SAE reconstructs worst; reset its Adam state.
    Decoder column = that input's normalised residual; encoder row = that direction times the alive rows' mean norm
    (x 0.2 for ReLU, x 1 for top-k)."""
    sample = acts[torch.randperm(len(acts), generator=gen)[:16384].to(acts.device)]  # (n, D) raw
    residual = (sample - sae(sample)[0]) * sae.scale  # (n, D) in normalised units
    idx = dead.nonzero().squeeze(1)  # (n_dead,)
    worst = residual.pow(2).sum(1).topk(min(len(idx), len(sample))).indices  # (<= n_dead,)
    direction = nn.functional.normalize(residual[worst[torch.arange(len(idx)) % len(worst)]], dim=1)  # (n_dead, D)
    alive_norm = sae.W_enc[~dead].norm(dim=1).mean() if (~dead).any() else torch.tensor(1.0)
    # ReLU: small, so a new feature does not upset the others; top-k: full size, or it never wins a top-k place
    sae.W_dec[:, idx] = direction.t()
    sae.W_enc[idx] = (0.2 if sae.k is None else 1.0) * alive_norm * direction
    sae.b_enc[idx] = 0.0
    for param, rows in ((sae.W_enc, idx), (sae.b_enc, idx), (sae.W_dec, (slice(None), idx))):
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in opt.state.get(param, {}):
                opt.state[param][moment][rows] = 0.0


@torch.enable_grad()  # trains even when called under torch.no_grad()
def train_sae(acts: torch.Tensor, n_features: int, k: int | None = None, l1: float = 5.0, steps: int = 1000,
              batch_size: int = 4096, lr: float = 1e-3, seed: int = 0, resample_every: int | None = 250,
              on_step=None) -> tuple[SparseAutoencoder, dict]:
    """Train a SparseAutoencoder on ``acts`` with Adam; deterministic given ``seed``.
    Loss per token, on inputs scaled so that their mean squared norm is D: ||x - x_hat||^2 + l1 * sum(f) (the L1
    term only for ReLU, k None). Every ``resample_every`` steps (None: never) features that never fired since the
    last check are re-initialised toward the worst-reconstructed inputs.
    Args: acts (N, D) activations (the SAE lives on their device). n_features, k as in SparseAutoencoder.
        on_step: None, or called as on_step(step, log) after every step (a progress bar).
    Returns (sae, log): log has per-step lists "loss", "mse" (per dimension, normalised units), "l0", and
        "resampled", a list of (step, number of features resampled)."""
    if acts.dim() != 2 or len(acts) == 0:
        raise ValueError(f"acts must be a non-empty (N, D) tensor of activations, got shape {tuple(acts.shape)}")
    if resample_every is not None and resample_every < 1:
        raise ValueError(f"resample_every must be a positive number of steps or None, got {resample_every!r}")
    acts = acts.float()
    gen = torch.Generator().manual_seed(seed)  # the decoder, the batch order and the resampling draws
    D = acts.shape[1]
    scale = math.sqrt(D / acts.pow(2).sum(1).mean().item())  # mean ||x * scale||^2 = D
    sae = SparseAutoencoder(D, n_features, k, scale, generator=gen).to(acts.device)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0) * scale)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    fired = torch.zeros(n_features, dtype=torch.bool, device=acts.device)
    log = {"loss": [], "mse": [], "l0": [], "resampled": []}
    for step, idx in enumerate(_batches(len(acts), batch_size, steps, gen), start=1):
        x = acts[idx.to(acts.device)]  # (B, D)
        x_hat, f = sae(x)  # (B, D), (B, F)
        sq_err = ((x_hat - x) * sae.scale).pow(2).sum(1).mean()
        loss = sq_err + (l1 * f.sum(1).mean() if k is None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad_()
        opt.step()
        sae.normalize_decoder_()
        fired |= (f > 0).any(0)
        log["loss"].append(loss.item())
        log["mse"].append(sq_err.item() / D)
        log["l0"].append((f > 0).sum(1).float().mean().item())
        if on_step is not None:
            on_step(step, log)
        if resample_every and step % resample_every == 0 and step < steps:
            if (~fired).any():
                log["resampled"].append((step, int((~fired).sum())))
                _resample_dead(sae, opt, acts, ~fired, gen)
            fired.zero_()
    return sae, log


# --- measures ---

@torch.no_grad()
def sae_metrics(sae: SparseAutoencoder, acts: torch.Tensor, batch_size: int = 8192) -> dict:
    """How well and how sparsely ``sae`` codes ``acts`` (N, D). Returns a dict:
    fve: 1 - sum ||x - x_hat||^2 / sum ||x - mean||^2; l0: mean active features per token; dead_fraction: never
    active here; dense_fraction: active on > 10 % of tokens; frequency: (F,) share of tokens each feature fires on."""
    acts = acts.float().to(sae.W_dec.device)
    err = torch.zeros((), device=acts.device)
    counts = torch.zeros(sae.n_features, device=acts.device)  # (F,) tokens each feature fires on
    for chunk in acts.split(batch_size):
        x_hat, f = sae(chunk)
        err += (chunk - x_hat).pow(2).sum()
        counts += (f > 0).sum(0)
    total = (acts - acts.mean(0)).pow(2).sum()
    freq = (counts / len(acts)).cpu()
    return {"fve": 1 - (err / total).item(), "l0": freq.sum().item(),  # mean L0 = sum of the frequencies
            "dead_fraction": (freq == 0).float().mean().item(), "dense_fraction": (freq > 0.1).float().mean().item(),
            "frequency": freq}


@torch.no_grad()
def top_activations(features, acts: torch.Tensor, n: int = 20, batch_size: int = 8192
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each feature's ``n`` strongest activations over the rows of ``acts``, in one pass of chunks.
    Args: features: (b, D) -> (b, F) non-negative activations, e.g. ``sae.encode``, or ``torch.relu`` to read the
        model's own units (MLP neurons) as features. acts: (N, D).
    Returns (values (n, F) descending, rows (n, F) indices into acts, counts (F,) rows where the feature is > 0);
        a feature active on fewer than n rows has zeros at the end of its column."""
    values = rows = counts = None
    for start in range(0, len(acts), batch_size):
        f = features(acts[start:start + batch_size].float())  # (b, F)
        idx = torch.arange(start, start + len(f), device=f.device)[:, None].expand_as(f)  # (b, F)
        counts = (f > 0).sum(0) if counts is None else counts + (f > 0).sum(0)
        if values is not None:
            f, idx = torch.cat([values, f]), torch.cat([rows, idx])
        top = f.topk(min(n, len(f)), dim=0)  # (<= n, F)
        values, rows = top.values, idx.gather(0, top.indices)
    if values is None:
        raise ValueError("acts is empty: give at least one (N, D) row")
    return values.cpu(), rows.cpu(), counts.cpu()


def feature_purity(values: torch.Tensor, rows: torch.Tensor, token_ids: torch.Tensor,
                   next_ids: torch.Tensor | None = None) -> dict:
    """How much one token explains each feature's top activations (an automatic, rough interpretability score).
    Args: values, rows (n, F) from top_activations; token_ids (N,) the token at each row; next_ids (N,) the token
        after it (-1: none). Returns dict "token" (F,): the share of the feature's positive top activations on its
        most common token; "next" (F,): the same for the token that follows (a row with none counts against it);
        "mode" (F,) that most common token
        id (-1 for a dead feature). Dead features (no positive activation) get NaN."""
    out = {"token": torch.full((values.shape[1],), float("nan")), "next": torch.full((values.shape[1],), float("nan")),
           "mode": torch.full((values.shape[1],), -1, dtype=torch.long)}
    for f in range(values.shape[1]):
        r = rows[:, f][values[:, f] > 0]
        if len(r) == 0:
            continue
        for key, ids in (("token", token_ids), ("next", next_ids)):
            if ids is None:
                continue
            seen = ids[r]
            seen = seen[seen >= 0]
            if len(seen):
                mode, count = torch.unique(seen, return_counts=True)
                out[key][f] = count.max().item() / len(r)
                if key == "token":
                    out["mode"][f] = mode[count.argmax()]
    return out


# --- activations of a TransformerModel: collect and splice ---

@contextlib.contextmanager
def _site_hook(model: nn.Module, layer: int, site: str, fn):
    """While inside, call ``fn(h)`` on the site's output h (B, T, D_site); a tensor it returns replaces h.
    site "resid": block ``layer``'s output (x, attention) -> x (B, T, D); "mlp": its GELU output (B, T, 4D)."""
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES} (residual stream or MLP hidden layer), got {site!r}")
    n = len(model.blocks)
    if not 0 <= layer < n:
        raise ValueError(f"layer must be a block index in [0, {n}) for this {n}-block model, got {layer}")
    block = model.blocks[layer]

    def hook(module, inputs, output):
        h = output[0] if site == "resid" else output
        new = fn(h)
        if new is None:
            return None
        return (new, *output[1:]) if site == "resid" else new

    handle = (block if site == "resid" else block.mlp.gelu).register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        handle.remove()
        model.train(was_training)


def collect_activations(model: nn.Module, batches, layer: int, site: str = "resid") -> torch.Tensor:
    """The activations at one site for every real token of ``batches``, as (N, D_site) float32 on the CPU.
    Args: model, a TransformerModel. batches: iterable of (tokens (T, B), mask (T, B) bool, True = real) or of
        bare (T, B) tokens (all real). layer: block index. site: "resid" (block output, D) or "mlp" (GELU, 4D).
    Rows run over positions t, then sequences b, within each batch."""
    found, out = [], []
    run = getattr(model, "hidden", model)  # the hidden states suffice: no need for the (T, B, V) logits
    with _site_hook(model, layer, site, found.append):
        for batch in batches:
            tokens, mask = batch if isinstance(batch, (tuple, list)) else (batch, None)
            run(tokens)
            h = found.pop().transpose(0, 1)  # (T, B, D_site)
            h = h.reshape(-1, h.shape[-1]) if mask is None else h[mask.to(h.device)]  # (n_real, D_site)
            out.append(h.float().cpu())
    if not out:
        raise ValueError("batches was empty: give at least one (tokens, mask) batch")
    return torch.cat(out)


def _default_loss(model, tokens, mask):
    return compute_next_token_loss(model(tokens), tokens, mask)


def loss_recovered(model: nn.Module, sae: nn.Module, tokens: torch.Tensor, mask: torch.Tensor | None, layer: int,
                   site: str = "resid", loss_fn=None) -> dict:
    """How much of the model's loss survives replacing one site by the SAE's reconstruction.
    Args: tokens (T, B) ids, mask (T, B) bool or None; layer, site as in collect_activations; sae maps (N, D_site) to
        (reconstruction, features). loss_fn(model, tokens, mask) -> scalar; default compute_next_token_loss(model(...)).
    Returns dict(clean, zero_ablated, spliced, fraction = (zero_ablated - spliced) / (zero_ablated - clean))."""
    loss_fn = loss_fn or _default_loss

    def splice(h):  # (B, T, D_site) -> the SAE's reconstruction, same shape
        return sae(h.reshape(-1, h.shape[-1]).float())[0].reshape(h.shape).to(h.dtype)

    losses = {}
    for name, fn in (("clean", lambda h: None), ("zero_ablated", torch.zeros_like), ("spliced", splice)):
        with _site_hook(model, layer, site, fn):
            losses[name] = float(loss_fn(model, tokens, mask))
    gap = losses["zero_ablated"] - losses["clean"]
    losses["fraction"] = (losses["zero_ablated"] - losses["spliced"]) / gap if gap != 0 else float("nan")
    return losses
