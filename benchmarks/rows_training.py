"""The training-step rows: the Transformer step (speed, memory), the LSTM's Adam, bf16 and the corpus vocabulary."""
from __future__ import annotations

import torch

from benchmarks.children import ROOT
from benchmarks.harness import (LEARNING_RATE, Row, alternate, bf16_autocast, bf16_reason, make_step, median,
                                speed_row, transformer)
from benchmarks.steps import build_step, default_adam_impl
from pico_helpers.config import TrainConfig
from pico_helpers.data import iterate_batches, load_corpus
from pico_helpers.training import make_optimizer, next_token_loss, use_bf16

__all__ = ["transformer_rows", "lstm_rows", "bf16_rows", "compact_rows"]


def _shape(sizes) -> str:
    return f"{sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}, block {sizes.tf_block}"


# --- Transformer step ---

def transformer_rows(sizes, device) -> list[Row]:
    """The Transformer step, full logits and unfused Adam against the fused loss and fused Adam: speed, then the
    memory row, which add_memory fills in from its subprocesses."""
    plain, tokens, _ = build_step("transformer:plain", sizes, device)
    fast, _, info = build_step("transformer:fast", sizes, device)
    times = alternate({"plain": plain, "fast": fast}, device, sizes.repeats, sizes.budget_s)
    cfg = f"{_shape(sizes)}, batch {sizes.tf_batch}, vocab {sizes.vocab:,}, fp32"
    fused_note = "" if info["fused"] else " (this torch refused fused=True: make_optimizer fell back to the default)"
    about = (f"One training step of a `TransformerModel` ({cfg}) on a random full-length batch: loss, "
             "zero_grad, backward, Adam step. Baseline: `model(idx)` builds the full (T, B, vocab) logits, "
             "`compute_next_token_loss` takes the cross-entropy, and `torch.optim.Adam(fused=False, "
             "foreach=False)` updates one parameter at a time. Fast: what training does, `next_token_loss` (the "
             "head and the cross-entropy fused, in row chunks, never holding all logits) and `make_optimizer` "
             f"(fused Adam){fused_note}. Two models with the same initial weights, one per side.")
    speed = speed_row("transformer_speed", f"Transformer training step ({cfg})", "full logits + CE + unfused Adam",
                      "fused head+CE (chunked) + fused Adam", tokens, times["plain"], times["fast"], 1.5, about)
    memory = Row("transformer_memory", f"Transformer training step: peak memory ({cfg})",
                 "full logits + CE + unfused Adam", "fused head+CE (chunked) + fused Adam", "MB",
                 target="<= 0.5x", about=("Peak extra memory of the same two steps, each measured in its own fresh "
                                          "process (see \"Peak memory\" below). Ratio = fast / baseline."))
    return [speed, memory]


# --- LSTM step: the optimizer ---

def lstm_rows(sizes, device) -> list[Row]:
    """The LSTM step with torch's default Adam against fused Adam; the optimizer step alone in the note."""
    default, tokens, info_default = build_step("lstm:default", sizes, device)
    fused, _, info = build_step("lstm:fused", sizes, device)
    model = info["model"]
    n_params = sum(p.numel() for p in model.parameters())
    n_vocab_side = model.embedding.weight.numel() + model.head.weight.numel()
    times = alternate({"default": default, "fused": fused}, device, sizes.repeats, sizes.budget_s)
    # The optimizer step alone, on the gradients the last step left behind: what fusing changes.
    opt_times = alternate({"default": info_default["optimizer"].step, "fused": info["optimizer"].step}, device,
                          sizes.repeats, sizes.budget_s / 4, warmup=0)
    opt_default, opt_fused = median(opt_times["default"]) * 1e3, median(opt_times["fused"]) * 1e3
    impl = default_adam_impl(device)
    cfg = (f"embed = hidden = {sizes.lstm_size}, seq {sizes.lstm_seq}, batch {sizes.lstm_batch}, "
           f"vocab {sizes.vocab:,}")
    about = (f"One training step of `LSTMSeqModel` ({cfg}), the same loss on both sides (`next_token_loss`, the "
             "training loss); only the optimizer differs. Baseline: `torch.optim.Adam(params, lr)` with no "
             f"implementation flag; on {device.type} this torch picks the {impl} implementation. Fast: "
             "`make_optimizer`, Adam with `fused=True`"
             + ("" if info["fused"] else " (refused here: it fell back to the default)") + ". The embedding and "
             f"the head hold {n_vocab_side / 1e6:.1f}M of the {n_params / 1e6:.1f}M parameters, and their "
             "gradients are dense, so every step updates all of them.")
    note = (f"optimizer.step() alone: default {opt_default:.3g} ms, fused {opt_fused:.3g} ms "
            f"({opt_default / opt_fused:.1f}x); the rest of the step is the same on both sides")
    return [speed_row("lstm", f"LSTM training step ({cfg})", f"Adam default ({impl})", "Adam fused=True",
                      tokens, times["default"], times["fused"], 1.5, about, note=note)]


# --- bf16 ---

def bf16_rows(sizes, device) -> list[Row]:
    """The fast Transformer step in float32 against what bf16=None (auto) picks here; the forced bf16 in the note."""
    fp32, tokens, info32 = build_step("transformer:fast", sizes, device)
    bf16, _, info16 = build_step("transformer:bf16", sizes, device)
    with torch.no_grad():  # same weights (same seed), same batch, before any step
        loss32 = float(next_token_loss(info32["model"], info32["idx"]))
        with bf16_autocast(device):
            loss16 = float(next_token_loss(info16["model"], info16["idx"]))
    auto = use_bf16(TrainConfig(), device)  # what training picks here with bf16=None, the default
    times = alternate({"fp32": fp32, "bf16": bf16}, device, sizes.repeats, sizes.budget_s)
    diff = abs(loss16 - loss32)
    forced = median(times["fp32"]) / median(times["bf16"])
    note = (f"auto chose {bf16_reason(TrainConfig(), device)}; bf16 against fp32 for this step: {forced:.2f}x; "
            f"loss fp32 {loss32:.5f}, bf16 {loss16:.5f}, |difference| {diff:.2e} ({diff / loss32:.1e} relative)")
    about = ("The fast Transformer step of the Transformer row, in float32 against what `TrainConfig(bf16=None)` "
             "(auto, the default) picks on this machine: on a CUDA GPU with bf16, the same step under "
             "`torch.autocast(bfloat16)` (matmuls in bf16, softmax and sums in float32); on a CPU float32 again "
             "(ratio ~1; `use_bf16` in training/setup.py says why). Report only. The note gives the bf16 step "
             "against float32 whatever auto chose, and compares the loss of both on the same batch with the same "
             "initial weights.")
    return [speed_row("bf16", f"bf16 autocast, Transformer step ({device.type})", "fp32 (fast path)",
                      f"auto: {'bf16 autocast' if auto else 'fp32'} (fast path)", tokens, times["fp32"],
                      times["bf16" if auto else "fp32"], 0, about, note=note)]


# --- the corpus vocabulary ---

def _compact_corpus(sizes, compact: bool, device):
    """3seqs with the corpus vocabulary or the full one: (corpus, the first compact_batches batches on device)."""
    path = ROOT / "input_files" / "3seqs.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; create it with `python -c \"from pico_helpers import "
                                "write_3seqs; write_3seqs()\"` from the repository root")
    config = TrainConfig(input_files=[str(path)], tinystories_weight=0.0, block_size=sizes.tf_block,
                         vocab="corpus" if compact else "full")
    corpus = load_corpus(config)
    batches = []
    for tokens, mask in iterate_batches(corpus.train, sizes.tf_batch, shuffle=True, seed=0):  # the same batches
        batches.append((tokens.to(device), mask.to(device)))  # GPT-2 ids on both sides
        if len(batches) == sizes.compact_batches:
            break
    return corpus, batches


def _compact_about(sizes, vocab_sizes: dict, n_tokens: int) -> str:
    return (f"Training steps of the same `TransformerModel` ({_shape(sizes)}, batch {sizes.tf_batch}) on the same "
            f"{sizes.compact_batches} batches of 3seqs ({n_tokens:,} real tokens), with the fast loss and fused Adam "
            f"on both sides. Baseline: GPT-2's {vocab_sizes[False]:,}-token vocabulary "
            f"(`TrainConfig(vocab=\"full\")`). Fast: the corpus vocabulary (`vocab=\"corpus\"`, the default), the "
            f"{vocab_sizes[True] - 1:,} ids 3seqs's training split uses plus one \"other\" class, the model "
            "wrapped in `CorpusVocabModel` as `build_model(name, config, corpus.vocab)` returns it, the loss still "
            "over all GPT-2 ids: the embedding, the head and their optimizer state shrink by that factor; the "
            "blocks do not change. Tokens/s counts real (non-padding) tokens. A third timing, the compact model's "
            "blocks alone (`hidden(ids).sum().backward()`, no head, loss or optimizer), shows the floor that a "
            "smaller vocabulary cannot go below (in the note): at this width the blocks, which also run over the "
            "padding of each batch, cost more than the vocabulary layers.")


def compact_rows(sizes, device) -> list[Row]:
    """Training steps on 3seqs with GPT-2's vocabulary against the corpus vocabulary; the blocks' floor in the note."""
    steps, vocab_sizes = {}, {}
    for compact in (False, True):
        corpus, batches = _compact_corpus(sizes, compact, device)
        raw = transformer(sizes, corpus.vocab_size, device)
        model = corpus.wrap(raw)  # GPT-2 ids in, a loss over all GPT-2 ids out
        optimizer = make_optimizer(model, LEARNING_RATE)

        def run(model=model, optimizer=optimizer, batches=batches):
            for tokens, mask in batches:
                make_step(model, optimizer, lambda: next_token_loss(model, tokens, mask))()

        steps["compact" if compact else "full"] = run
        vocab_sizes[compact] = corpus.vocab_size
    model_ids = [corpus.vocab.to_model(tokens) for tokens, _ in batches]  # (T, B) each: what the blocks read

    def blocks_only():  # the floor of the compact step: the blocks, forward and backward
        for ids in model_ids:
            raw.hidden(ids).sum().backward()
        raw.zero_grad(set_to_none=True)

    steps["blocks"] = blocks_only
    times = alternate(steps, device, sizes.repeats, sizes.budget_s)
    n_tokens = sum(int(mask.sum()) for _, mask in batches)  # the same sequences in both vocabularies
    positions = sum(tokens.numel() for tokens, _ in batches)
    full_ms, compact_ms, blocks_ms = (median(times[k]) * 1e3 for k in ("full", "compact", "blocks"))
    note = (f"the blocks alone (forward + backward over all {positions:,} positions, "
            f"{1 - n_tokens / positions:.0%} of them padding) take {blocks_ms:,.0f} ms of the compact run's "
            f"{compact_ms:,.0f} ms; the full-vocabulary run takes {full_ms:,.0f} ms, so no vocabulary could make "
            f"it more than {full_ms / blocks_ms:.1f}x faster here")
    return [speed_row("compact", f"Corpus vocabulary on 3seqs ({vocab_sizes[True]:,} vs {vocab_sizes[False]:,} ids)",
                      f"full vocabulary ({vocab_sizes[False]:,})", f"corpus vocabulary ({vocab_sizes[True]:,})",
                      n_tokens, times["full"], times["compact"], 10, _compact_about(sizes, vocab_sizes, n_tokens),
                      target=">= 10x (expected)", note=note)]
