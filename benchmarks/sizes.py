"""Every size of the benchmark in one dataclass, BenchSizes, with its quick() smoke-test variant."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BenchSizes", "GPT2_VOCAB"]

GPT2_VOCAB = 50257


@dataclass(frozen=True)
class BenchSizes:
    """Every size of the benchmark; ``BenchSizes.quick()`` is the smoke-test variant."""

    vocab: int = GPT2_VOCAB
    # K-gram MLP, one-hot input
    kgram_k: int = 3
    kgram_hidden: int = 128
    kgram_seq: int = 32
    kgram_batch: int = 16
    # Transformer training step (also the bf16 and compact-vocabulary rows)
    tf_layers: int = 4
    tf_heads: int = 4
    tf_d: int = 128
    tf_block: int = 128
    tf_batch: int = 16
    # LSTM training step
    lstm_size: int = 1024  # embed = hidden
    lstm_seq: int = 32
    lstm_batch: int = 16
    # generation
    gen_prompt: int = 16
    gen_new: int = 200
    gen_block: int = 256  # >= gen_prompt + gen_new: no cropping, the cache is never recomputed
    # top-p
    top_p: float = 0.95
    topp_calls: int = 100  # tokens drawn per timed run
    topp_scale: float = 8.0  # logits ~ N(0, scale^2): peaked, nucleus of a few dozen tokens
    # compact vocabulary
    compact_batches: int = 4  # 3seqs batches per timed run
    # time to loss (benchmarks/time_to_loss.py), on the Transformer's shape above
    ttl_budget_s: float = 180.0  # training seconds per side, on each side's own clock
    ttl_points: int = 10  # validation points per side, one every tenth of the budget (and one at 0 s)
    ttl_val_stories: int = 160  # held-out stories scored at each point
    ttl_stories: int = 100_000  # training stories to load (all of the shared sample)
    # timing
    repeats: int = 5  # alternating rounds (at most)
    budget_s: float = 40.0  # per family: no new round starts once this is spent (at least one round runs)
    quick_mode: bool = False

    @classmethod
    def quick(cls) -> "BenchSizes":
        """Tiny sizes and 2 rounds: every row runs in a fraction of a second (the test uses this)."""
        return cls(vocab=1000, kgram_hidden=16, kgram_seq=4, kgram_batch=2, tf_layers=1, tf_heads=2, tf_d=16,
                   tf_block=16, tf_batch=2, lstm_size=32, lstm_seq=8, lstm_batch=2, gen_prompt=4, gen_new=8,
                   gen_block=16, topp_calls=5, compact_batches=1, repeats=2, budget_s=5.0,
                   ttl_budget_s=2.0, ttl_val_stories=4, ttl_stories=120, quick_mode=True)
