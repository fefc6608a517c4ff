"""The decoder-only Transformer (question 4): RMSNorm, causal attention, positional variants, KV cache.
Inside, tensors are batch-first (B, T, D), as the attention kernels want. Used in 04_transformer and 06_experiments."""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["KVCache", "RMSNorm", "TransformerModel"]

POSITIONAL_MODES = ("learned", "sinusoidal", "rope", "none")


# --- RMSNorm ---

class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2, last dim) + eps) * weight``: LayerNorm without mean or bias; half precision in float32."""

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
    """Rotate (B, H, T, d) queries or keys by their positions' cos/sin (T, d/2): dimension i pairs with i + d/2.
    Each pair turns by its angle, so a query at p . a key at s depends only on p - s."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, d/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# --- the KV cache ---

@dataclass
class KVCache:
    """Keys and values of every block for the positions seen so far (``TransformerModel.new_cache``).
    keys, values: per block, (B, H, block_size, d_head) buffers, filled up to ``pos``; ids: (block_size, B)."""
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    ids: torch.Tensor
    pos: int = 0

    @property
    def tokens(self) -> torch.Tensor:
        """(pos, B) ids of the cached positions."""
        return self.ids[:self.pos]

    def copy(self) -> "KVCache":
        """An independent copy: ``next_logits`` updates a cache in place, so copy it to continue two ways from one state."""
        return KVCache([k.clone() for k in self.keys], [v.clone() for v in self.values], self.ids.clone(), self.pos)


# --- attention and blocks ---

def causal_mask(n_queries: int, n_keys: int, device) -> torch.Tensor:
    """(n_queries, n_keys) bool, True where attention is allowed; the queries are the LAST n_queries positions."""
    q_pos = torch.arange(n_queries, device=device).unsqueeze(1) + (n_keys - n_queries)  # (n_queries, 1)
    return torch.arange(n_keys, device=device).unsqueeze(0) <= q_pos


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with optional rotary positions and a key/value cache."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, rope: bool):
        super().__init__()
        self.n_heads, self.head_dim, self.rope, self.dropout = n_heads, d_model // n_heads, rope, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)  # a residual projection (scaled-down init)

    def forward(self, x, cos=None, sin=None, cache: KVCache | None = None, layer: int = 0,
                return_attention: bool = False):
        """x (B, T, D) -> (out (B, T, D), attention weights (B, H, T, n_keys) or None).
        cos, sin: (T, d_head/2) rotary tables (rope only). cache, layer: the T positions follow ``cache.pos``
        cached ones, written into block ``layer``'s buffers. return_attention: compute the weights explicitly."""
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, d): q, k, v, split into heads
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, T, d) each
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # write in place after the cached positions, then read them all back
            end = cache.pos + T
            cache.keys[layer][:, :, cache.pos:end], cache.values[layer][:, :, cache.pos:end] = k, v
            k, v = cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end]  # (B, H, pos + T, d)
        n_keys = k.size(2)
        p = self.dropout if self.training else 0.0
        weights = None
        if return_attention:  # softmax(q k^T / sqrt(d_head)) with the causal mask, spelled out
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, n_keys)
            scores = scores.masked_fill(~causal_mask(T, n_keys, x.device), float("-inf"))
            weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            y = F.dropout(weights, p, self.training) @ v  # (B, H, T, d)
        else:  # the fused kernel. is_causal aligns its mask top-left, right only without a cache; after one,
            mask = causal_mask(T, n_keys, x.device) if 1 < T < n_keys else None  # a single query sees every key
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=T == n_keys)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D), heads side by side
        return self.proj(y), weights


class Block(nn.Module):
    """Attention, then an MLP (D -> ratio*D -> GELU -> D, as GPT-2's); each with a residual and an RMSNorm."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float, norm: str, rope: bool):
        super().__init__()
        self.norm, self.norm1 = norm, RMSNorm(d_model)  # norm: "pre" or "post"
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, rope)
        self.norm2 = RMSNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict(fc=nn.Linear(d_model, mlp_ratio * d_model, bias=False), gelu=nn.GELU(),
                                             proj=nn.Linear(mlp_ratio * d_model, d_model, bias=False)))  # (B, T, D)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos=None, sin=None, cache: KVCache | None = None, layer: int = 0,
                return_attention: bool = False):
        """x (B, T, D) -> (x (B, T, D), attention weights or None); the other args as in CausalSelfAttention."""
        if self.norm == "pre":  # x + f(norm(x)): the residual stream itself is never normalised
            a, w = self.attn(self.norm1(x), cos, sin, cache, layer, return_attention)
            x = x + self.drop(a)
            x = x + self.drop(self.mlp(self.norm2(x)))
        else:  # post-norm (the original Transformer): norm(x + f(x))
            a, w = self.attn(x, cos, sin, cache, layer, return_attention)
            x = self.norm1(x + self.drop(a))
            x = self.norm2(x + self.drop(self.mlp(x)))
        return x, w


# --- the model ---

class TransformerModel(nn.Module):
    """A decoder-only, GPT-style Transformer with the course's sequence-first contract.
    Residual projections start at 0.02 / sqrt(2 * n_blocks), so the stream does not grow with depth. ``next_logits``
    crops an overflowing context to its last block_size tokens and recomputes the cache, so its logits always
    equal ``model(context[-block_size:])[-1]``.
    Args: vocab_size, d_model, n_heads (must divide d_model), n_blocks, mlp_ratio (MLP width / d_model), dropout.
        block_size: maximum context; ``forward`` refuses longer inputs.
        positional: "learned", "sinusoidal", "rope" or "none" (only the causal mask tells positions apart).
        norm: "pre" (x + f(norm(x)), GPT-2) or "post" (norm(x + f(x)), the 2017 Transformer, no final norm).
        tie_weights: share one (V, D) matrix between the token embedding and the head."""

    def __init__(self, vocab_size: int = 50257, d_model: int = 256, n_heads: int = 4, n_blocks: int = 4,
                 block_size: int = 1024, positional: str = "learned", norm: str = "pre",
                 tie_weights: bool = False, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        if positional not in POSITIONAL_MODES:
            raise ValueError(f"positional must be one of {POSITIONAL_MODES}, got {positional!r}")
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' (x + f(norm(x))) or 'post' (norm(x + f(x))), got {norm!r}")
        if d_model % n_heads != 0:
            divisors = [h for h in range(1, min(d_model, 16) + 1) if d_model % h == 0]
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}: each head gets "
                             f"d_model // n_heads dimensions; n_heads could be one of {divisors}")
        if positional == "rope" and (d_model // n_heads) % 2:
            raise ValueError(f"rope rotates pairs of dimensions, so the head size d_model // n_heads must be "
                             f"even, got {d_model // n_heads}; change d_model or n_heads")
        if not isinstance(block_size, int) or block_size < 1 or n_blocks < 1:
            raise ValueError(f"block_size and n_blocks must be positive integers, got {block_size!r}, {n_blocks!r}")
        self.vocab_size, self.d_model, self.n_heads, self.n_blocks = vocab_size, d_model, n_heads, n_blocks
        self.block_size, self.positional, self.norm = block_size, positional, norm
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        if positional == "learned":
            self.pos_embedding = nn.Embedding(block_size, d_model)
        elif positional == "sinusoidal":  # scaled to the embeddings' std 0.02, or its +-1 entries drown them
            self.register_buffer("pos_table", 0.02 * sinusoidal_table(block_size, d_model), persistent=False)
        elif positional == "rope":  # buffers are not saved in state_dict: they are recomputed
            cos, sin = rope_tables(block_size, d_model // n_heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout, norm, positional == "rope")
                                    for _ in range(n_blocks))
        self.final_norm = RMSNorm(d_model) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        for module in self.modules():  # normal(0, 0.02), as GPT-2; no layer has a bias
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_blocks))
        if tie_weights:
            self.head.weight = self.token_embedding.weight  # one Parameter, two uses

    def run_blocks(self, idx: torch.Tensor, cache: KVCache | None, return_attention: bool):
        """idx (T, B) -> (x (B, T, D) after the final norm, per-block attention weights or Nones)."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (seq_len, batch) token ids, got shape {tuple(idx.shape)}")
        T, start = idx.size(0), 0 if cache is None else cache.pos
        if start + T > self.block_size:
            raise ValueError(f"sequence length {start + T} ({start} cached) exceeds block_size={self.block_size}; crop "
                             f"the context to its last {self.block_size} tokens (as next_logits() does) or raise block_size")
        if cache is not None and cache.ids.size(1) != idx.size(1):
            raise ValueError(f"the cache holds {cache.ids.size(1)} sequences but idx has {idx.size(1)}")
        positions = slice(start, start + T)  # absolute positions of the new tokens
        x = self.token_embedding(idx.t())  # (B, T, D)
        if self.positional in ("learned", "sinusoidal"):
            table = self.pos_embedding.weight if self.positional == "learned" else self.pos_table  # (block_size, D)
            x = x + table[positions].to(x.dtype)  # (T, D) broadcast over B
        rope = self.positional == "rope"  # then cos, sin (T, d_head/2) of the new positions
        cos, sin = (self.rope_cos[positions], self.rope_sin[positions]) if rope else (None, None)
        x = self.drop(x)
        attns = []
        for layer, block in enumerate(self.blocks):
            x, w = block(x, cos, sin, cache, layer, return_attention)
            attns.append(w)
        if cache is not None:  # every block has written its keys and values: these positions are cached
            cache.ids[positions] = idx
            cache.pos += T
        return self.final_norm(x), attns

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty KVCache for ``batch_size`` sequences, in the dtype attention computes in (autocast's if on)."""
        w = self.token_embedding.weight
        dtype = torch.get_autocast_dtype(w.device.type) if torch.is_autocast_enabled(w.device.type) else w.dtype
        shape = (batch_size, self.n_heads, self.block_size, self.d_model // self.n_heads)
        buffers = [torch.empty(shape, dtype=dtype, device=w.device) for _ in range(2 * self.n_blocks)]
        ids = torch.zeros(self.block_size, batch_size, dtype=torch.long, device=w.device)
        return KVCache(buffers[:self.n_blocks], buffers[self.n_blocks:], ids)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(T, B) ids -> (T, B, d_model) final hidden states; ``head`` makes them logits.
        With a ``cache`` the T positions follow the cached ones and ``cache.pos`` advances by T."""
        return self.run_blocks(idx, cache, return_attention=False)[0].transpose(0, 1)  # (T, B, D)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, return_attention: bool = False):
        """(T, B) ids -> (T, B, vocab) logits; ``cache`` as in ``hidden``.
        ``return_attention``: also the weights (n_blocks, B, n_heads, T, cached + T), computed explicitly."""
        x, attns = self.run_blocks(idx, cache, return_attention)
        logits = self.head(x).transpose(0, 1)  # (T, B, V)
        return (logits, torch.stack(attns)) if return_attention else logits

    def next_logits(self, idx_new: torch.Tensor, state: KVCache | None = None):
        """Feed (T_new, B) new ids after ``state``; return the last position's logits (B, vocab) and the cache.
        ``state=None`` starts a new cache; it is updated in place (``copy()`` it to continue two ways)."""
        if state is None or state.pos + idx_new.size(0) > self.block_size:
            context = idx_new if state is None else torch.cat([state.tokens, idx_new])  # (T, B)
            state, idx_new = self.new_cache(idx_new.size(1)), context[-self.block_size:]
        h = self.hidden(idx_new, state)  # (T_new, B, D)
        return self.head(h[-1]), state

    def embedding_table(self) -> torch.Tensor:
        """(vocab, d_model) token embedding weights."""
        return self.token_embedding.weight
