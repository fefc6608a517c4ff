"""The generation rows: the KV cache against recomputing the context (two ways), and the corpus vocabulary's head."""
from __future__ import annotations

import torch

from benchmarks.baselines import starter_generate_tokens
from benchmarks.harness import Row, alternate, median, speed_row, transformer
from benchmarks.sizes import GPT2_VOCAB
from benchmarks.time_to_loss import side_configs, tinystories_files
from pico_helpers.data import CorpusVocabModel, load_corpus
from pico_helpers.sample import generate_tokens

__all__ = ["generation_rows", "gen_corpus_rows"]


def _cfg(sizes, vocab: str) -> str:
    return (f"{sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}{vocab}, untrained; "
            f"prompt {sizes.gen_prompt} tokens, {sizes.gen_new} new, greedy, batch 1")


def _head_note(model, sizes, device, times, same: bool) -> str:
    """How much of a cached token the head for one position takes: the floor no method can go below."""
    x = torch.randn(1, sizes.tf_d, device=device)
    with torch.inference_mode():  # the head for one position, as every method runs it once per new token
        head_times = alternate({"head": lambda: [model.head(x) for _ in range(sizes.gen_new)]}, device,
                               sizes.repeats, sizes.budget_s / 8)["head"]
    head_ms = median(head_times) / sizes.gen_new * 1e3
    cache_ms = median(times["cache"]) / sizes.gen_new * 1e3
    return (f"all three gave the same tokens: {'yes' if same else 'no'}; per new token the cache takes "
            f"{cache_ms:.2f} ms, of which {head_ms:.2f} ms is the {sizes.tf_d} x {sizes.vocab:,} head for one "
            "position (every method pays it), so no method can beat the starter's by more than "
            f"{median(times['starter']) / sizes.gen_new * 1e3 / head_ms:.1f}x here")


def generation_rows(sizes, device) -> list[Row]:
    """Greedy generation with the KV cache against recompute (last logits only) and the starter's loop."""
    model = transformer(sizes, sizes.vocab, device, block_size=sizes.gen_block)
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, sizes.vocab, (sizes.gen_prompt,), generator=g).tolist()
    fns = {"cache": lambda: generate_tokens(model, prompt, sizes.gen_new),
           "recompute": lambda: generate_tokens(model, prompt, sizes.gen_new, use_cache=False),
           "starter": lambda: starter_generate_tokens(model, prompt, sizes.gen_new)}
    same = len({tuple(fn()) for fn in fns.values()}) == 1
    times = alternate(fns, device, sizes.repeats, sizes.budget_s, warmup=0)  # the line above was the warm-up
    cfg = _cfg(sizes, f", vocab {sizes.vocab:,}")
    note = _head_note(model, sizes, device, times, same)
    common = (f"`generate_tokens` on one `TransformerModel` ({cfg}, block_size {sizes.gen_block} so the context "
              "is never cropped). Fast: `use_cache=True`, the KV cache: after the prompt, each token is the model's "
              "one forward pass with T = 1 and the `KVCache` (`model.next_logits`), its own position through the "
              "blocks and the head. The starter's speed depends on what ran before it in the process (it allocates "
              "a new (T, vocab) logits tensor for every token): run after the K-gram and Transformer rows in one "
              "process it measured faster, by an amount that varied from run to run, which is why each family here "
              "gets a fresh process. ")
    return [speed_row("gen_recompute", f"Generation of {sizes.gen_new} tokens ({cfg})", "recompute, last logits only",
                      "KV cache", sizes.gen_new, times["recompute"], times["cache"], 1.9,
                      common + "Baseline: `use_cache=False`, the whole context through the blocks for every "
                      "new token, but the head on the last position only.", note=note),
            speed_row("gen_starter", f"Generation of {sizes.gen_new} tokens ({cfg})",
                      "starter: recompute, all logits", "KV cache", sizes.gen_new, times["starter"],
                      times["cache"], 7, common + "Baseline: `starter_generate_tokens` in benchmarks/baselines.py, "
                      "the starter's way: the whole context through the model with logits for every position, "
                      "keeping the last.", note=note)]


def gen_corpus_rows(sizes, device) -> list[Row]:
    """Cached generation with GPT-2's vocabulary against the corpus vocabulary of the time-to-loss row's data."""
    train_path, val_path = tinystories_files(sizes.quick_mode)
    vocab = load_corpus(side_configs(sizes, train_path, val_path, device)["fast"]).vocab  # the time-to-loss row's
    full_model = transformer(sizes, GPT2_VOCAB, device, block_size=sizes.gen_block)
    # as build_model(name, config, corpus.vocab) returns it: GPT-2 ids in, logits over all GPT-2 ids out
    corpus_model = CorpusVocabModel(transformer(sizes, vocab.n_vocab, device, block_size=sizes.gen_block), vocab)
    corpus_model.to(device)
    g = torch.Generator().manual_seed(2)
    prompt = [vocab.ids[i] for i in torch.randint(0, len(vocab.ids), (sizes.gen_prompt,), generator=g).tolist()]
    fns = {"full": lambda: generate_tokens(full_model, prompt, sizes.gen_new),
           "corpus": lambda: generate_tokens(corpus_model, prompt, sizes.gen_new)}
    times = alternate(fns, device, sizes.repeats, sizes.budget_s)
    about = (f"`generate_tokens` with the KV cache ({_cfg(sizes, '')}), on two `TransformerModel`s that differ only "
             f"in their vocabulary. Baseline: GPT-2's {GPT2_VOCAB:,} ids. Fast: the corpus vocabulary of the "
             f"time-to-loss row's training data ({train_path.name}: {len(vocab.ids):,} ids plus \"other\"), the "
             "model wrapped in `CorpusVocabModel` as `build_model(name, config, corpus.vocab)` returns it, which "
             "maps each step's logits to all of GPT-2's ids before the choice: the ids in and out are GPT-2's on "
             "both sides. The head for one position is most of a cached token's cost, and it shrinks with the "
             "vocabulary. Report only.")
    return [speed_row("gen_corpus", f"Generation with the corpus vocabulary ({vocab.n_vocab:,} vs {GPT2_VOCAB:,} ids)",
                      f"full vocabulary ({GPT2_VOCAB:,})", f"corpus vocabulary ({vocab.n_vocab:,})", sizes.gen_new,
                      times["full"], times["corpus"], 0, about)]
