"""Decoding: nucleus (top-p) sampling and text generation for every model."""
from __future__ import annotations

from pico_helpers.sample.nucleus import nucleus_probs, nucleus_probs_topk, nucleus_sampling
from pico_helpers.sample.generate import generate_text, generate_tokens

__all__ = ["nucleus_probs", "nucleus_probs_topk", "nucleus_sampling", "generate_text", "generate_tokens"]
