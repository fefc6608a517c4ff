"""The decoder-only Transformer (question 4): RMSNorm, causal multi-head attention, positional variants, KV cache.

Follows the model contract of models.py: ``model(idx)`` with ``idx`` (T, B) -> logits (T, B, V),
``hidden``/``head``, ``step`` (here with a KV cache), ``embedding_table``, ``block_size``.
Inside, tensors are batch-first (B, T, D), which is what the attention kernels want; the public
methods transpose at the door.

Used in 04_transformer.ipynb and 06_experiments.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["RMSNorm", "TransformerModel"]

POSITIONAL_MODES = ("learned", "sinusoidal", "rope", "none")
NORM_MODES = ("pre", "post")


# --- RMSNorm ---

class RMSNorm(nn.Module):
    """Root-mean-square normalisation: ``x / sqrt(mean(x**2, last dim) + eps) * weight``.

    Unlike LayerNorm there is no mean subtraction and no bias. ``weight`` (dim,) starts at ones.
    Half-precision inputs are normalised in float32 and cast back.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight).to(x.dtype)


# --- positional encodings ---

def sinusoidal_table(n_positions: int, dim: int) -> torch.Tensor:
    """(n_positions, dim) fixed encodings: even columns sin(p / 10000^(2i/dim)), odd columns cos(same)."""
    pos = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)  # (P, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (ceil(dim/2),)
    angles = pos * inv_freq  # (P, ceil(dim/2))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table


def rope_tables(n_positions: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (n_positions, head_dim // 2), of angle p * base^(-2i/head_dim) (pair i, position p)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim/2,)
    angles = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1) * inv_freq  # (P, head_dim/2)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, d) queries or keys; cos/sin (T, d/2) for their positions.

    We pair dimension i with dimension i + d/2 (the two halves of each head) and rotate each pair by
    its angle, so the dot product of a query at p and a key at s depends on p - s only.
    """
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, d/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# --- attention and blocks ---

def causal_mask(n_queries: int, n_keys: int, device) -> torch.Tensor:
    """(n_queries, n_keys) bool, True where attention is allowed; the queries are the LAST n_queries positions."""
    offset = n_keys - n_queries
    q_pos = torch.arange(n_queries, device=device).unsqueeze(1) + offset
    return torch.arange(n_keys, device=device).unsqueeze(0) <= q_pos


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with optional rotary positions and a key/value cache."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, rope: bool):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.rope = rope
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)  # a residual projection (scaled-down init)

    def forward(self, x, cos=None, sin=None, past_kv=None, return_attention=False):
        """x (B, T, D) -> (out (B, T, D), (keys, values) each (B, H, T_past + T, d_head), weights or None).

        ``past_kv``: the cache of the earlier positions, ``(key_buffer, value_buffer, T_past)`` with
        buffers (B, H, capacity, d_head) whose first T_past positions are filled; the T new keys and
        values are written after them, in place, and the returned keys/values are views of the buffers.
        ``return_attention``: also compute the weights explicitly, (B, H, T, T_past + T).
        """
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)  # (B, T, D) each
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past_kv is not None:  # an in-place write instead of torch.cat: no new allocation per token
            k_buf, v_buf, n_past = past_kv
            k_buf[:, :, n_past:n_past + T] = k
            v_buf[:, :, n_past:n_past + T] = v
            k, v = k_buf[:, :, :n_past + T], v_buf[:, :, :n_past + T]  # (B, H, T_past + T, d)
        n_keys = k.size(2)
        p = self.dropout if self.training else 0.0
        weights = None
        if return_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, T_keys)
            scores = scores.masked_fill(~causal_mask(T, n_keys, x.device), float("-inf"))
            weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            y = F.dropout(weights, p, self.training) @ v  # (B, H, T, d)
        elif n_keys == T:  # no cache: the usual square causal mask
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif T == 1:  # one new query after the cache: it may see every key
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:  # several new queries after a cache: is_causal would align the mask top-left, so spell it out
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, n_keys, x.device), dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D), heads side by side
        return self.proj(y), (k, v), weights

    def decode(self, x, k_buf, v_buf, n: int, cos=None, sin=None):
        """One new position per sequence, at inference: x (B, D) at position n -> (B, D).

        ``forward`` with T = 1 after a cache, the same kernels in the same order, without the T axis
        and the branches (at batch 1 each op costs microseconds of dispatch, more than its arithmetic).
        Writes this position's keys and values into ``k_buf``/``v_buf`` (B, H, capacity, d_head) at n.
        """
        B, D = x.shape
        q, k, v = self.qkv(x).view(B, 3, self.n_heads, self.head_dim).unbind(1)  # (B, H, d) each
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_buf[:, :, n] = k
        v_buf[:, :, n] = v
        y = F.scaled_dot_product_attention(q.unsqueeze(2), k_buf[:, :, :n + 1], v_buf[:, :, :n + 1])  # (B, H, 1, d)
        return self.proj(y.reshape(B, D))


class MLP(nn.Module):
    """Linear(D, ratio*D) -> GELU -> Linear(ratio*D, D), as in GPT-2."""

    def __init__(self, d_model: int, mlp_ratio: int):
        super().__init__()
        self.fc = nn.Linear(d_model, mlp_ratio * d_model, bias=False)
        self.proj = nn.Linear(mlp_ratio * d_model, d_model, bias=False)  # a residual projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.proj(F.gelu(self.fc(x)))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` for one position at inference, with ATen's own GELU kernel on the CPU.

        PyTorch hands a float32 GELU on the CPU to oneDNN, which spends ~7 us setting up each call:
        most of the MLP's time at one position. ATen's kernel takes ~1 us and agrees to ~1e-6.
        """
        h = self.fc(x)
        if h.device.type != "cpu" or not torch.backends.mkldnn.enabled:
            return self.proj(F.gelu(h))
        torch.backends.mkldnn.enabled = False
        try:
            h = F.gelu(h)
        finally:
            torch.backends.mkldnn.enabled = True
        return self.proj(h)


class Block(nn.Module):
    """Attention then MLP, each with a residual connection and RMSNorm (pre-norm or post-norm)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float, norm: str, rope: bool):
        super().__init__()
        self.norm = norm
        self.norm1 = RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, rope)
        self.norm2 = RMSNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos=None, sin=None, past_kv=None, return_attention=False):
        """x (B, T, D) -> (x (B, T, D), new (keys, values), attention weights or None)."""
        if self.norm == "pre":  # x + f(norm(x)): the residual stream itself is never normalised
            a, kv, w = self.attn(self.norm1(x), cos, sin, past_kv, return_attention)
            x = x + self.drop(a)
            x = x + self.drop(self.mlp(self.norm2(x)))
        else:  # post-norm (the original Transformer): norm(x + f(x))
            a, kv, w = self.attn(x, cos, sin, past_kv, return_attention)
            x = self.norm1(x + self.drop(a))
            x = self.norm2(x + self.drop(self.mlp(x)))
        return x, kv, w

    def decode(self, x, k_buf, v_buf, n: int, cos=None, sin=None):
        """``forward`` for one new position at inference (no dropout): x (B, D) at position n -> (B, D)."""
        if self.norm == "pre":
            x = x + self.attn.decode(self.norm1(x), k_buf, v_buf, n, cos, sin)
            return x + self.mlp.decode(self.norm2(x))
        x = self.norm1(x + self.attn.decode(x, k_buf, v_buf, n, cos, sin))
        return self.norm2(x + self.mlp.decode(x))


# --- the model ---

@dataclass
class KVState:
    """What ``TransformerModel.step`` carries between calls.

    tokens: (T_window, B) ids of the current window (at most block_size), needed to recompute the
        cache when the window slides.
    buffers: per block, (key_buffer, value_buffer) each (B, H, block_size, d_head), allocated once per
        window; position i of the window is at absolute position i, and each new token writes its keys
        and values into the next free position.
    filled: positions written into ``buffers`` so far, shared (a one-element list) by every state
        over the same buffers. If it exceeds this state's window, another step already extended these
        buffers from here, so stepping from this state again copies them first (a branch).
    """
    tokens: torch.Tensor
    buffers: list
    filled: list

    @property
    def kv(self) -> list:
        """Per block, this state's (keys, values), each (B, H, T_window, d_head): views of ``buffers``."""
        n = self.tokens.size(0)
        return [(k[:, :, :n], v[:, :, :n]) for k, v in self.buffers]


class TransformerModel(nn.Module):
    """A decoder-only, GPT-style Transformer with the course's sequence-first contract.

    token embedding (+ positions) -> n_blocks x [causal multi-head self-attention, MLP] with residual
    connections and RMSNorm -> final RMSNorm (pre-norm only) -> ``head`` (Linear(D, V), no bias).

    Args:
        vocab_size: number of token ids.
        d_model: width of the residual stream.
        n_heads: attention heads; must divide d_model (each head gets d_model // n_heads dims).
        n_blocks: number of Transformer blocks.
        block_size: maximum context; longer inputs to ``forward``/``hidden`` raise ValueError, and
            generation (``step``) crops the context to its last block_size tokens.
        positional: "learned" (an nn.Embedding(block_size, D) added to the tokens), "sinusoidal"
            (fixed sin/cos table added), "rope" (rotary: queries and keys of every head are rotated by
            their position) or "none" (only the causal mask tells positions apart).
        norm: "pre" (x + f(norm(x)), GPT-2/LLaMA) or "post" (norm(x + f(x)), the 2017 Transformer;
            no final norm then, the last block already ends with one).
        tie_weights: share one (V, D) matrix between the token embedding and the head.
        mlp_ratio: hidden width of the MLP in multiples of d_model.
        dropout: on attention weights, residual branches and the embeddings (0 = off).

    Initialisation: weights normal(0, 0.02), RMSNorm weights 1, and the two residual projections of
    each block (attention output, MLP output) at 0.02 / sqrt(2 * n_blocks) so the residual stream does
    not grow with depth at the start.

    KV cache rule (``step``): positions are absolute within the current window, 0 .. block_size-1.
    While the context fits in block_size tokens, each new token reuses the cached keys/values and only
    runs its own position. When a new token would overflow the window, the context is cropped to its
    last block_size tokens and the cache is recomputed from that window (positions restart at 0 for
    its first token). So the logits from ``step`` always equal ``model(context[-block_size:])[-1]``;
    the price is that, once the window is full, every further token costs a full recompute of
    block_size positions (as generation without a cache would).
    """

    def __init__(self, vocab_size: int = 50257, d_model: int = 256, n_heads: int = 4, n_blocks: int = 4,
                 block_size: int = 1024, positional: str = "learned", norm: str = "pre",
                 tie_weights: bool = False, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        if positional not in POSITIONAL_MODES:
            raise ValueError(f"positional must be one of {POSITIONAL_MODES}, got {positional!r}")
        if norm not in NORM_MODES:
            raise ValueError(f"norm must be 'pre' (x + f(norm(x))) or 'post' (norm(x + f(x))), got {norm!r}")
        if d_model % n_heads != 0:
            divisors = [h for h in range(1, min(d_model, 16) + 1) if d_model % h == 0]
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}: each head gets "
                             f"d_model // n_heads dimensions; n_heads could be one of {divisors}")
        if positional == "rope" and (d_model // n_heads) % 2:
            raise ValueError(f"rope rotates pairs of dimensions, so the head size d_model // n_heads must be "
                             f"even, got {d_model // n_heads}; change d_model or n_heads")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.positional = positional
        self.norm = norm

        self.token_embedding = nn.Embedding(vocab_size, d_model)
        if positional == "learned":
            self.pos_embedding = nn.Embedding(block_size, d_model)
        elif positional == "sinusoidal":  # buffers are not saved in state_dict: they are recomputed
            # Scaled to the token embeddings' init (std 0.02): the raw table's +-1 entries would drown them.
            self.register_buffer("pos_table", 0.02 * sinusoidal_table(block_size, d_model), persistent=False)
        elif positional == "rope":
            cos, sin = rope_tables(block_size, d_model // n_heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout, norm, positional == "rope")
                                    for _ in range(n_blocks))
        self.final_norm = RMSNorm(d_model) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self._init_weights()
        if tie_weights:
            self.head.weight = self.token_embedding.weight  # one Parameter, two uses

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.n_blocks))

    # --- the core, batch-first ---

    def _run(self, idx_bt: torch.Tensor, start: int = 0, past=None, return_attention: bool = False):
        """idx_bt (B, T) at positions start .. start+T-1 -> (x (B, T, D) after the final norm, kvs, attentions)."""
        T = idx_bt.size(1)
        positions = slice(start, start + T)
        x = self.token_embedding(idx_bt)  # (B, T, D)
        if self.positional == "learned":
            x = x + self.pos_embedding.weight[positions]  # (T, D) broadcast over B
        elif self.positional == "sinusoidal":
            x = x + self.pos_table[positions].to(x.dtype)
        cos = sin = None
        if self.positional == "rope":
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (T, d_head/2)
        x = self.drop(x)
        kvs, attns = [], []
        for i, block in enumerate(self.blocks):
            x, kv, w = block(x, cos, sin, None if past is None else past[i], return_attention)
            kvs.append(kv)
            attns.append(w)
        return self.final_norm(x), kvs, attns

    def _decode(self, ids_b: torch.Tensor, n: int, buffers) -> torch.Tensor:
        """``_run`` for one new position at inference: ids_b (B,) at position n -> x (B, D) after the final norm.

        Writes the position's keys and values into ``buffers`` (per block, (key_buffer, value_buffer)).
        """
        x = self.token_embedding(ids_b)  # (B, D)
        if self.positional == "learned":
            x = x + self.pos_embedding.weight[n]
        elif self.positional == "sinusoidal":
            x = x + self.pos_table[n].to(x.dtype)
        cos = sin = None
        if self.positional == "rope":
            cos, sin = self.rope_cos[n:n + 1], self.rope_sin[n:n + 1]  # (1, d_head/2)
        for block, (k_buf, v_buf) in zip(self.blocks, buffers):
            x = block.decode(x, k_buf, v_buf, n, cos, sin)
        return self.final_norm(x)

    def _check_length(self, idx: torch.Tensor):
        if idx.dim() != 2:
            raise ValueError(f"idx must be (seq_len, batch) token ids, got shape {tuple(idx.shape)}")
        if idx.size(0) > self.block_size:
            raise ValueError(f"sequence length {idx.size(0)} exceeds block_size={self.block_size}; crop the "
                             f"context to its last {self.block_size} tokens (generation does this itself) "
                             "or build the model with a larger block_size")

    # --- the public, sequence-first contract ---

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """(T, B) ids -> (T, B, d_model) final hidden states (after the final norm), T <= block_size."""
        self._check_length(idx)
        x, _, _ = self._run(idx.t())
        return x.transpose(0, 1)  # (T, B, D)

    def forward(self, idx: torch.Tensor, return_attention: bool = False):
        """(T, B) ids -> (T, B, vocab) logits; with ``return_attention`` also the attention weights.

        The weights are computed explicitly (softmax(q k^T / sqrt(d_head)) with the causal mask) instead
        of by the fused kernel, as a tensor (n_blocks, B, n_heads, T, T); the logits are the same.
        """
        self._check_length(idx)
        x, _, attns = self._run(idx.t(), return_attention=return_attention)
        logits = self.head(x).transpose(0, 1)  # (T, B, V)
        if return_attention:
            return logits, torch.stack(attns)
        return logits

    def step(self, idx_new: torch.Tensor, state: KVState | None = None):
        """Feed (T_new, B) new ids with the KV cache; return the last position's logits (B, vocab) and the state.

        ``state=None`` starts from scratch (a prompt of any length, cropped to block_size). See the
        class docstring for the rule past block_size: the result always equals
        ``model(context[-block_size:])[-1]``. Only the last position goes through the head.
        Meant for inference (under ``torch.no_grad()``): keys and values are written into preallocated
        buffers in place. A state may be stepped from more than once (branches); the second time, its
        buffers are copied first. One new token in eval mode (every generated token) takes
        ``_decode``, the same function in fewer ops; its logits agree with the general path to ~1e-6.
        """
        if state is not None and state.tokens.size(0) + idx_new.size(0) <= self.block_size:
            # fits: run only the new positions, after the cached ones
            n_past = state.tokens.size(0)
            buffers, filled = state.buffers, state.filled
            if filled[0] != n_past:  # these buffers were already extended from this state: branch off a copy
                buffers = [(k.clone(), v.clone()) for k, v in buffers]
                filled = [n_past]
            window = torch.cat([state.tokens, idx_new], dim=0)  # (T_past + T_new, B)
            if idx_new.size(0) == 1 and not self.training:  # the usual case: one token, a leaner path
                x = self._decode(idx_new[0], n_past, buffers)  # (B, D)
            else:
                x, _, _ = self._run(idx_new.t(), start=n_past, past=[(k, v, n_past) for k, v in buffers])
                x = x[:, -1]
            filled[0] = window.size(0)
            return self.head(x), KVState(window, buffers, filled)
        # no cache yet, or the window overflows: (crop and) compute the window from position 0
        context = idx_new if state is None else torch.cat([state.tokens, idx_new], dim=0)
        window = context[-self.block_size:]  # (T_w, B)
        x, kvs, _ = self._run(window.t())
        buffers = [(self._grow(k), self._grow(v)) for k, v in kvs]
        return self.head(x[:, -1]), KVState(window, buffers, [window.size(0)])

    def _grow(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d) keys or values -> a (B, H, block_size, d) buffer holding them in its first T positions."""
        buf = t.new_empty(t.size(0), t.size(1), self.block_size, t.size(3))
        buf[:, :, :t.size(2)] = t
        return buf

    def embedding_table(self) -> torch.Tensor:
        """(vocab, d_model) token embedding weights."""
        return self.token_embedding.weight
