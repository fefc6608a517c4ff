"""pico-llm from the command line: the course starter's flags, our training engine.

    python pico.py --block_size 32 --tinystories_weight 0.0 --input_files input_files/3seqs.txt \
        --prompt "0 1 2 3 4" --max_steps_per_epoch 200

Trains each model named by --models in turn, prints the starter's kinds of lines (device, vocab size,
sequences loaded, partial average loss, end-of-epoch averages with validation loss, final samples),
and saves each run's loss figure, history and checkpoint under --output_dir.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from pico_helpers.config import MODEL_NAMES, TrainConfig, field_kind

SWITCH = {"auto": None, "on": True, "off": False}  # flags of the fields that are True, False or None (auto)


def parse_args(argv=None) -> argparse.Namespace:
    """One flag per TrainConfig field (its name, default and help), plus four flags that are not config."""
    p = argparse.ArgumentParser(description="Train pico-llm models (K-gram MLP, LSTM, Transformer).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        kind, optional = field_kind(f)
        flag, meta = "--" + f.name, {**f.metadata, "help": f.metadata["help"].replace("%", "%%")}  # argparse %-formats
        if kind is list:
            p.add_argument(flag, nargs="*", default=[], help=meta["help"])
        elif kind is bool and optional:
            p.add_argument(flag, choices=list(SWITCH), default="auto", help=meta["help"])
        elif kind is bool:  # a switch that is on by default is turned off with --no-<name>
            p.add_argument(flag, action=argparse.BooleanOptionalAction if f.default else "store_true",
                           default=f.default, help=meta["help"])
        else:  # the starter's --device_id defaults to cuda:0 (with a fallback message), TrainConfig's to auto
            p.add_argument(flag, type=kind, default=meta.get("cli_default", f.default), choices=meta["choices"],
                           help=meta["help"])
    p.add_argument("--models", nargs="+", default=["lstm_seq"], choices=MODEL_NAMES, help="models to train, in turn")
    p.add_argument("--monosemantic_enabled", action="store_true",
                   help="annotate generated tokens with their strongest sparse-autoencoder features when an SAE is "
                        "saved for the run (OUTPUT_DIR/<model>/sae.pt, made by trained_sae(..., folder=...)), else "
                        "with their nearest neighbours in embedding space")
    p.add_argument("--no_resume", action="store_true",
                   help="start afresh: an earlier run in OUTPUT_DIR/<model>/ is moved aside unread")
    p.add_argument("--new_tokens", type=int, default=20, help="tokens in each final sample (at most 100,000)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the parsed flags (auto/on/off become None/True/False); a ValueError names a bad value."""
    values = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name)
        values[f.name] = SWITCH[value] if field_kind(f) == (bool, True) else value
    return TrainConfig(**values)


def _env_int(name: str, low: int, high: int | None, default: str | None = None) -> int:
    """The integer in environment variable ``name`` (torchrun sets it), in low..high; else a ValueError saying so."""
    text = os.environ.get(name, default)
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < low or (high is not None and value > high):
        span = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {span} (torchrun sets it), got {text!r}: start the run with "
                         "torchrun --nproc_per_node=N pico.py ..., or unset RANK and WORLD_SIZE to train in one "
                         "process")
    return value


def init_torchrun(config: TrainConfig):
    """Under torchrun (RANK and WORLD_SIZE set): join the process group and return this rank's device; else None.

    The device is cuda:LOCAL_RANK when CUDA is available and --device_id is not cpu, else the CPU; the backend nccl
    on CUDA, gloo on the CPU, or $PICO_DIST_BACKEND. --batch_size is the global batch, split over the processes.
    run() then trains with train_data_parallel (pico_helpers/runs/distributed.py); only rank 0 prints and writes.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    import torch
    import torch.distributed as dist

    from pico_helpers.training.setup import check_device_id

    check_device_id(config.device_id)  # the same devices as one process: a typo is not quietly replaced by cuda
    world = _env_int("WORLD_SIZE", 1, None)
    _env_int("RANK", 0, world - 1)
    local_rank = _env_int("LOCAL_RANK", 0, None, default="0")
    backend = os.environ.get("PICO_DIST_BACKEND")
    if backend is not None and not (backend in dist.Backend.backend_list and dist.is_backend_available(backend)):
        usable = [b for b in ("gloo", "nccl", "mpi", "ucc") if dist.is_backend_available(b)]
        raise ValueError(f"PICO_DIST_BACKEND {backend!r} is not a torch.distributed backend of this torch: use "
                         f"{' or '.join(usable) or 'none (torch.distributed has no backend here)'}, or unset it "
                         "(nccl on CUDA, gloo on the CPU)")
    cuda = torch.cuda.is_available() and config.device_id != "cpu"
    if config.batch_size % world:
        raise ValueError(f"--batch_size {config.batch_size} is the global batch, split over {world} processes: use a "
                         f"multiple of {world} (for example --batch_size {world * max(1, config.batch_size // world)})")
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # the other ranks print nothing; their errors still reach stderr
    return device


def run(args: argparse.Namespace) -> None:
    """Load the data, build every model (so a bad shape stops before any training), train each, print samples."""
    from pico_helpers.data import load_corpus
    from pico_helpers.models import build_model
    from pico_helpers.runs.distributed import is_main, train_data_parallel
    from pico_helpers.sample.generate import MAX_NEW_TOKENS
    from pico_helpers.training import pick_device, train

    config = config_from_args(args)
    if not 1 <= args.new_tokens <= MAX_NEW_TOKENS:  # checked now, not after training
        raise ValueError(f"--new_tokens must be an integer >= 1 and at most {MAX_NEW_TOKENS:,}, got {args.new_tokens} "
                         "(for example --new_tokens 20)")
    torchrun_device = init_torchrun(config)
    device = torchrun_device or pick_device(config.device_id)
    print(f"Using device: {device}")
    config = config.replace(device_id=str(device))  # train() then uses it without repeating the fallback message
    try:
        corpus = load_corpus(config)
    except RuntimeError as err:  # TinyStories unreachable; the message says what to do
        raise ValueError(str(err)) from None
    print(f"Vocab size: {corpus.vocab_size}")
    print(f"Sequences loaded: {corpus.sources['tinystories']:,} from TinyStories, "
          f"{corpus.sources['files']:,} from input files")
    print(f"Data: {corpus.description}")
    models = {name: build_model(name, config, corpus.vocab) for name in args.models}
    done = []  # models trained to the end (and saved): a Ctrl-C after that must not say "nothing was saved"
    try:
        for name, model in models.items():
            print(f"\n=== Training {name} ===")
            if torchrun_device is not None:  # several processes, each on its share of every batch
                history = train_data_parallel(model, corpus, config, name=name, resume=not args.no_resume)
            else:
                history = train(model, corpus, config, name=name, resume=not args.no_resume)
            done.append(name)
            if not is_main():  # torchrun: rank 0 alone samples and reports
                continue
            final_samples(args, config, name, model, corpus, history)
    except KeyboardInterrupt as err:
        if str(err) or not done:  # train() said what it saved, or nothing was trained yet
            raise
        raise KeyboardInterrupt(f"{', '.join(done)} trained and saved in {config.output_dir}/; the same command "
                                "loads it and goes on") from None


def final_samples(args: argparse.Namespace, config, name: str, model, corpus, history) -> None:
    """The starter's three samples (greedy, top-p 0.95, top-p 1.0), annotated if --monosemantic_enabled: with the
    features of an SAE saved for this very run (its run id), else with embedding neighbours."""
    from pico_helpers.sample import generate_text

    sae = None
    if args.monosemantic_enabled:
        from pico_helpers.analysis.sae_runs import saved_sae

        sae, note = saved_sae(f"{config.output_dir}/{name}", history.run_id)
        print(f"[{name}] {note}")
    print(f"[{name}] final samples ({args.new_tokens} new tokens each):")
    for label, top_p in (("greedy", None), ("top-p 0.95", 0.95), ("top-p 1.0", 1.0)):
        try:
            text, annotated = generate_text(model, corpus.enc, config.prompt, args.new_tokens, top_p=top_p,
                                            seed=config.seed, monosemantic=args.monosemantic_enabled, sae=sae)
        except ValueError as err:
            print(f"  {label}: (no sample: {err})")
            continue
        print(f"  {label}: {text!r}")
        if args.monosemantic_enabled:
            print(f"  {label} annotated: {annotated}")
    folder = f"{config.output_dir}/{name}"
    print(f"[{name}] saved: loss figure {history.figure}, history {folder}/history.json, "
          f"checkpoint {folder}/checkpoint.pt")


def main(argv=None) -> int:
    """Run pico.py; every bad value and a Ctrl-C end in one line on stderr and a non-zero exit code."""
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as err:  # OSError: a missing or unreadable input file
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # train() says what it saved; a Ctrl-C before any step carries no message
        from pico_helpers.runs.distributed import is_main

        if is_main():  # torchrun: rank 0 speaks for all
            print(f"interrupted: {err}" if str(err) else
                  "interrupted before training started: nothing was saved; the same command starts again",
                  file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules and sys.modules["torch.distributed"].is_initialized():
            sys.modules["torch.distributed"].destroy_process_group()  # torchrun: leave the process group
    return 0


if __name__ == "__main__":
    sys.exit(main())
