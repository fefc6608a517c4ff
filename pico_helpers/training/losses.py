"""Next-token cross-entropy: the plain reference on full logits and the fused chunked path training uses.

Logits at t predict the token at t+1; a pair counts only when its TARGET is real (``pad_mask`` True).
The fused path never holds all (N, V) logits (3.3 GB in float32 for V = 50,257 and 16 x 1024 tokens): per
row chunk it computes logits, loss and right away the gradients; backward only scales them. Used in 03_lstm.ipynb;
the loss at each position is analysis/positions.py's."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["compute_next_token_loss", "next_token_loss", "fused_linear_cross_entropy", "FusedLinearCrossEntropy",
           "DEFAULT_CHUNK_SIZE", "chunk_rows"]

# Rows per chunk trade memory against traffic: a chunk holds its (rows, V) logits (26 MB for 128 rows at
# V = 50,257), but every chunk also reads and writes the whole (V, D) grad_W and pays a launch, so very short
# chunks pay both many times. max(128, D // 2) rows keeps one chunk's logits at most half the size of grad_W.
DEFAULT_CHUNK_SIZE = 128


def chunk_rows(d_model: int) -> int:
    """The default rows per chunk of the fused loss for hidden size ``d_model``: max(128, d_model // 2)."""
    return max(DEFAULT_CHUNK_SIZE, d_model // 2)


# --- checks ---

def _check_tokens(tokens: torch.Tensor, pad_mask: torch.Tensor | None) -> None:
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (seq_len, batch) token ids, got shape {tuple(tokens.shape)}")
    if tokens.dtype != torch.long:
        raise ValueError(f"tokens must be torch.long ids, got {tokens.dtype}; use tokens.long()")
    if pad_mask is not None:
        if pad_mask.shape != tokens.shape:
            raise ValueError(f"pad_mask must have the shape of tokens {tuple(tokens.shape)}, got {tuple(pad_mask.shape)}")
        if pad_mask.dtype != torch.bool:
            raise ValueError(f"pad_mask must be bool (True = real token), got {pad_mask.dtype}; use mask.bool()")


# --- plain reference ---

def compute_next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, pad_mask: torch.Tensor | None = None
                            ) -> torch.Tensor:
    """Mean next-token cross-entropy from full logits (the course's loss, padding left out); 0 if no pair counts.

    Args:
        logits: (T, B, V) scores; logits[t] predict tokens[t+1]. tokens: (T, B) long token ids.
        pad_mask: optional (T, B) bool, True where the token is real (a pair counts if its target is real)."""
    _check_tokens(tokens, pad_mask)
    if logits.dim() != 3 or logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits must be (seq_len, batch, vocab) matching tokens {tuple(tokens.shape)}, "
                         f"got {tuple(logits.shape)}")
    V = logits.shape[-1]
    pred = logits[:-1].reshape(-1, V)  # (N_all, V) with N_all = (T-1)*B
    if pred.dtype in (torch.float16, torch.bfloat16):
        pred = pred.float()  # softmax in float32, as autocast would do
    target = tokens[1:].reshape(-1)  # (N_all,)
    per_pair = F.cross_entropy(pred, target, reduction="none")  # (N_all,)
    keep = torch.ones_like(target, dtype=torch.bool) if pad_mask is None else pad_mask[1:].reshape(-1)  # real target
    # where() rather than multiply: a padded pair's loss never enters, not even as 0 * inf.
    total = torch.where(keep, per_pair, torch.zeros_like(per_pair)).sum()
    return total / keep.sum().clamp(min=1).to(total.dtype)


# --- fused linear + cross-entropy ---

class FusedLinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i @ W^T + b, target_i) in row chunks, gradients in forward; call fused_linear_cross_entropy."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk_size, compute_dtype, need_h, need_w, need_b):
        (N, D), V = h.shape, weight.shape[0]
        with torch.autocast(device_type=h.device.type, enabled=False):  # dtypes are explicit below
            # softmax and sums in float32 (float64 only if the inputs are float64)
            acc_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
            low_precision = compute_dtype != acc_dtype  # bf16 / fp16 matmuls
            w_c = weight.to(compute_dtype)  # (V, D)
            b_acc = None if bias is None else bias.to(acc_dtype)  # (V,)
            grad_h = torch.empty_like(h) if need_h else None  # (N, D)
            grad_w = None  # (V, D) acc_dtype, written by the first chunk (no zero fill of V*D values)
            grad_b = torch.zeros(V, device=h.device, dtype=acc_dtype) if need_b else None
            loss_sum = torch.zeros((), device=h.device, dtype=acc_dtype)
            inv_n = 1.0 / max(N, 1)
            for start in range(0, N, chunk_size):
                h_c = h[start:start + chunk_size].to(compute_dtype)  # (n, D)
                t_c = targets[start:start + chunk_size].unsqueeze(1)  # (n, 1)
                z = h_c @ w_c.t()  # (n, V) logits, the only V-wide tensor of the chunk
                if low_precision:
                    z = z.to(acc_dtype)
                if b_acc is not None:
                    z += b_acc
                # log-softmax in place: z - max, exp, sum; loss_i = log(sum_i) - (z_i[t_i] - max_i)
                z -= z.amax(dim=1, keepdim=True)
                z_target = z.gather(1, t_c)  # (n, 1)
                z.exp_()
                denom = z.sum(dim=1, keepdim=True)  # (n, 1)
                loss_sum += (denom.log() - z_target).sum()
                if not (need_h or need_w or need_b):
                    continue
                # dL/dz = (softmax - onehot) / N, built in place in z
                z *= inv_n / denom
                z.scatter_add_(1, t_c, torch.full_like(z_target, -inv_n))
                g = z.to(compute_dtype) if low_precision else z  # (n, V)
                if need_h:
                    grad_h[start:start + chunk_size] = g @ w_c  # (n, D)
                if need_w:
                    if low_precision:
                        part = (g.t() @ h_c).to(acc_dtype)  # (V, D) low-precision product, summed in acc_dtype
                        grad_w = part if grad_w is None else grad_w.add_(part)
                    elif grad_w is None:
                        grad_w = g.t() @ h_c  # (V, D)
                    else:
                        grad_w.addmm_(g.t(), h_c)  # (V, D)
                if need_b:
                    grad_b += z.sum(dim=0)  # (V,)
        if need_w and grad_w is None:  # N == 0: no chunk ran
            grad_w = torch.zeros(V, D, device=h.device, dtype=acc_dtype)
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                              None if grad_b is None else grad_b.to(bias.dtype))
        return loss_sum * inv_n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = lambda g: None if g is None else g * grad_out.to(g.dtype)  # noqa: E731
        return scale(grad_h), scale(grad_w), scale(grad_b), None, None, None, None, None, None


def fused_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               targets: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Scalar mean cross-entropy of ``h @ weight.T + bias`` against ``targets`` without all the logits at once.

    Under autocast the matmuls run in its dtype, softmax and sums in float32; without grad only the loss is computed.

    Args:
        h: (N, D) hidden states. weight: (V, D) head weight (may be tied). bias: (V,) or None.
        targets: (N,) long ids in [0, V).
        chunk_size: rows per chunk; None: ``chunk_rows(D)``. Extra memory: one chunk's float32 logits
            (chunk_size * V * 4 bytes) plus the (V, D) grad_W and (N, D) grad_h kept for backward."""
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(f"h must be (N, D) and weight (V, D) with the same D, got {tuple(h.shape)} and "
                         f"{tuple(weight.shape)}")
    if targets.shape != (h.shape[0],):
        raise ValueError(f"targets must be ({h.shape[0]},) to match h, got {tuple(targets.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},) to match weight, got {tuple(bias.shape)}")
    if chunk_size is None:
        chunk_size = chunk_rows(h.shape[1])
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (rows per chunk) or None, got {chunk_size!r}")
    device_type = h.device.type
    compute_dtype = (torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type)
                     else torch.promote_types(h.dtype, weight.dtype))
    grad_on = torch.is_grad_enabled()
    need_h = grad_on and h.requires_grad
    need_w = grad_on and weight.requires_grad
    need_b = grad_on and bias is not None and bias.requires_grad
    return FusedLinearCrossEntropy.apply(h, weight, bias, targets, chunk_size, compute_dtype, need_h, need_w, need_b)


# --- the training loss ---

def next_token_loss(model: nn.Module, tokens: torch.Tensor, pad_mask: torch.Tensor | None = None,
                    chunk_size: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on ``tokens``: what training minimises and evaluation reports.

    The same number three ways: the model's own ``next_token_loss`` if it defines one (CorpusVocabModel adds the
    "other" charge, the data-parallel wrapper splits the batch); the fused head if the model offers the fast path
    (``hidden`` and an ``nn.Linear`` ``head``), which never holds (T, B, V) logits; else ``model(tokens)``.
    Args: tokens: (T, B) long ids; pad_mask: optional (T, B) bool, True = real token; chunk_size: fused rows."""
    _check_tokens(tokens, pad_mask)
    if hasattr(model, "next_token_loss"):
        return model.next_token_loss(tokens, pad_mask, chunk_size)
    if not (hasattr(model, "hidden") and isinstance(getattr(model, "head", None), nn.Linear)):
        return compute_next_token_loss(model(tokens), tokens, pad_mask)
    h = model.hidden(tokens)  # (T, B, D)
    rows = h[:-1].reshape(-1, h.shape[-1])  # (N_all, D), row t*B+b predicts tokens[t+1, b]
    targets = tokens[1:].reshape(-1)  # (N_all,)
    if pad_mask is not None:
        keep = pad_mask[1:].reshape(-1)  # (N_all,) True = real target
        rows, targets = rows[keep], targets[keep]  # (N, D), (N,)
    return fused_linear_cross_entropy(rows, model.head.weight, model.head.bias, targets, chunk_size)
