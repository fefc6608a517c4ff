"""`python -m tools.probe_long_run CHANGES --runs FOLDER`: one probe for LONG_RUN (pico_helpers/presets.py).

Trains the trained Transformer of 04-06 with some of its settings changed, in a runs folder of its own, and prints its
validation loss at each epoch's end. Each row of README.md's table "How LONG_RUN was chosen" is one such run, e.g.

    PICO_TINYSTORIES=../shared/data/tinystories_train_sample.txt \\
    PICO_TINYSTORIES_VALID=../shared/data/tinystories_valid_sample.txt \\
    .venv/bin/python -m tools.probe_long_run '{"embed_size": 128, "learning_rate": 2e-3, "epochs": 6}' \\
        --runs /tmp/probe-d128 --threads 1

(one thread each, so two probes share a 2-core CPU). A probe that stops resumes with the same command."""
from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("changes", help='JSON object of TrainConfig fields set on top of LONG_RUN, e.g. '
                                        '\'{"embed_size": 256, "epochs": 5}\'')
    parser.add_argument("--runs", required=True, help="folder of this probe's run (not runs/, which the workbook loads)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    try:
        changes = json.loads(args.changes)
    except json.JSONDecodeError as err:
        parser.error(f"CHANGES must be a JSON object such as '{{\"epochs\": 5}}': {err}")
    if not isinstance(changes, dict):
        parser.error("CHANGES must be a JSON object such as '{\"epochs\": 5}'")

    import torch

    from pico_helpers.presets import long_config, trained_transformer

    if args.threads:
        torch.set_num_threads(args.threads)
    base = long_config(quick=False)
    unknown = sorted(set(changes) - set(base.to_dict()))
    if unknown:
        parser.error(f"not TrainConfig fields: {', '.join(unknown)}; choose from {', '.join(base.to_dict())}")
    try:
        config = base.replace(**{**changes, "output_dir": args.runs})  # FOLDER/kvcache_transformer_long/
    except ValueError as err:  # names the bad value and a valid one
        parser.error(str(err))
    history = trained_transformer(verbose=False, config=config).history
    print(f"{changes} on top of LONG_RUN: {history.n_params:,} parameters, {history.tokens_seen:,} tokens, "
          f"{history.train_time_s:.0f} s of steps")
    for epoch, (train_loss, val) in enumerate(zip(history.epoch_train_loss, history.epoch_val_loss), start=1):
        print(f"epoch {epoch}: train mean {train_loss:.3f}, validation {val:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
