"""pico-llm from the command line: the course starter's flags, our training engine.

    python pico.py --block_size 32 --tinystories_weight 0.0 --input_files input_files/3seqs.txt \
        --prompt "0 1 2 3 4" --max_steps_per_epoch 200

Trains each model named by --models in turn, prints the starter's kinds of lines (device, vocab size,
sequences loaded, partial average loss, end-of-epoch averages with validation loss, final samples),
and saves each run's loss figure, history and checkpoint under --output_dir.
"""
from __future__ import annotations

import argparse
import sys

from pico_helpers.config import MODEL_NAMES, TrainConfig


def parse_args(argv=None) -> argparse.Namespace:
    """The starter's flags with its defaults, plus ours (epochs, batch size, learning rate, ...)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train pico-llm models (K-gram MLP, LSTM, Transformer).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # --- the starter's flags ---
    p.add_argument("--input_files", nargs="*", default=None, help="local text files, one example per non-empty line")
    p.add_argument("--tinystories_weight", type=float, default=d.tinystories_weight,
                   help="probability of drawing an example from TinyStories; 0 skips TinyStories")
    p.add_argument("--max_steps_per_epoch", type=int, default=None, help="end each epoch after N steps")
    p.add_argument("--num_inner_mlp_layers", type=int, default=d.num_inner_mlp_layers)
    p.add_argument("--kgram_k", type=int, default=d.kgram_k)
    p.add_argument("--kgram_chunk_size", type=int, default=d.kgram_chunk_size,
                   help="time steps per slice in the K-gram forward (memory knob; 0 = all at once)")
    p.add_argument("--block_size", type=int, default=d.block_size)
    p.add_argument("--embed_size", type=int, default=d.embed_size)
    p.add_argument("--prompt", type=str, default=d.prompt)
    p.add_argument("--device_id", type=str, default="cuda:0",
                   help="torch device; falls back (with a message) when it is missing; 'auto' = cuda > mps > cpu")
    p.add_argument("--monosemantic_enabled", action="store_true",
                   help="annotate generated tokens with their nearest neighbours in embedding space")
    # --- ours ---
    p.add_argument("--models", nargs="+", default=["lstm_seq"], choices=MODEL_NAMES, help="models to train, in turn")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--learning_rate", type=float, default=d.learning_rate)
    p.add_argument("--test_fraction", type=float, default=d.test_fraction, help="held-out validation fraction")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--output_dir", type=str, default=d.output_dir, help="runs are saved in OUTPUT_DIR/<model>/")
    p.add_argument("--tinystories_path", type=str, default=None,
                   help="local raw TinyStories file (else $PICO_TINYSTORIES, else the HuggingFace hub)")
    p.add_argument("--tinystories_stories", type=int, default=d.tinystories_stories, help="stories to use")
    p.add_argument("--kgram_input_mode", choices=["one_hot", "embedding"], default=d.kgram_input_mode)
    p.add_argument("--n_heads", type=int, default=d.n_heads)
    p.add_argument("--n_blocks", type=int, default=d.n_blocks)
    p.add_argument("--positional", choices=["learned", "sinusoidal", "rope", "none"], default=d.positional)
    p.add_argument("--norm", choices=["pre", "post"], default=d.norm)
    p.add_argument("--tie_weights", action="store_true", help="share the Transformer's embedding and unembedding")
    p.add_argument("--compact_vocab", action="store_true",
                   help="train over the corpus's own token ids only (losses not comparable with full vocab)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bfloat16 autocast: auto = on for CUDA GPUs that support it, off on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the models (falls back to eager)")
    p.add_argument("--no_resume", action="store_true",
                   help="start afresh even if OUTPUT_DIR/<model>/ holds a matching checkpoint (it is moved aside)")
    p.add_argument("--sample_every_s", type=float, default=d.sample_every_s, help="seconds between samples; 0 = off")
    p.add_argument("--log_every", type=int, default=d.log_every, help="steps between partial-average lines")
    p.add_argument("--new_tokens", type=int, default=20, help="tokens in each final sample")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Map the parsed flags onto a TrainConfig."""
    return TrainConfig(
        input_files=args.input_files or [], tinystories_weight=args.tinystories_weight,
        tinystories_path=args.tinystories_path, tinystories_stories=args.tinystories_stories,
        block_size=args.block_size, test_fraction=args.test_fraction, compact_vocab=args.compact_vocab,
        embed_size=args.embed_size, kgram_k=args.kgram_k, kgram_chunk_size=args.kgram_chunk_size,
        kgram_input_mode=args.kgram_input_mode, num_inner_mlp_layers=args.num_inner_mlp_layers,
        n_heads=args.n_heads, n_blocks=args.n_blocks, positional=args.positional, norm=args.norm,
        tie_weights=args.tie_weights, batch_size=args.batch_size, epochs=args.epochs,
        learning_rate=args.learning_rate, max_steps_per_epoch=args.max_steps_per_epoch, seed=args.seed,
        device_id=args.device_id, bf16={"auto": None, "on": True, "off": False}[args.bf16],
        compile=args.compile, log_every=args.log_every, sample_every_s=args.sample_every_s,
        prompt=args.prompt, output_dir=args.output_dir)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from pico_helpers.data import load_corpus
    from pico_helpers.sample import generate_text
    from pico_helpers.models import build_model
    from pico_helpers.training import pick_device, train

    device = pick_device(config.device_id)
    print(f"Using device: {device}")
    try:
        corpus = load_corpus(config)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Vocab size: {corpus.vocab_size}")
    print(f"Sequences loaded: {corpus.sources['tinystories']:,} from TinyStories, "
          f"{corpus.sources['files']:,} from input files")
    print(f"Data: {corpus.description}")
    for name in args.models:
        model = build_model(name, config, corpus.vocab_size)
        print(f"\n=== Training {name} ===")
        history = train(model, corpus, config, name=name, resume=not args.no_resume)
        print(f"[{name}] final samples ({args.new_tokens} new tokens each):")
        for label, top_p in (("greedy", None), ("top-p 0.95", 0.95), ("top-p 1.0", 1.0)):
            try:
                text, annotated = generate_text(model, corpus.enc, config.prompt, args.new_tokens, top_p=top_p,
                                                seed=config.seed, monosemantic=args.monosemantic_enabled)
            except ValueError as err:
                print(f"  {label}: (no sample: {err})")
                continue
            print(f"  {label}: {text!r}")
            if args.monosemantic_enabled:
                print(f"  {label} annotated: {annotated}")
        folder = f"{config.output_dir}/{name}"
        print(f"[{name}] saved: loss figure {history.get('figure')}, history {folder}/history.json, "
              f"checkpoint {folder}/checkpoint.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
