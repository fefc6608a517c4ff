"""`make bench`: each fast path timed against a plain baseline, a fresh process per family; writes BENCHMARKS.md."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.children import ONE_PREFIX, ROOT, run_children
from benchmarks.harness import Row, error_rows
from benchmarks.memory import add_memory, measure_peak_memory
from benchmarks.report import busy_warning, cpu_seconds, format_table, machine_info, others_share, write_report
from benchmarks.rows_generation import gen_corpus_rows, generation_rows
from benchmarks.rows_kgram import kgram_rows
from benchmarks.rows_sampling import topp_rows
from benchmarks.rows_time_to_loss import time_to_loss_rows
from benchmarks.rows_training import bf16_rows, compact_rows, lstm_rows, transformer_rows
from benchmarks.sizes import BenchSizes

__all__ = ["ROW_KEYS", "FAMILIES", "run_family", "run_benchmark", "build_parser", "main"]

# Row keys in table order, and the families that produce them (--only takes family names).
ROW_KEYS = ("time_to_loss", "kgram", "transformer_speed", "transformer_memory", "lstm", "gen_recompute",
            "gen_starter", "gen_corpus", "topp", "compact", "bf16")
FAMILIES = {"time_to_loss": ("time_to_loss",), "kgram": ("kgram",),
            "transformer": ("transformer_speed", "transformer_memory"), "lstm": ("lstm",),
            "generation": ("gen_recompute", "gen_starter", "gen_corpus"), "topp": ("topp",), "compact": ("compact",),
            "bf16": ("bf16",)}
RUNNERS = {"time_to_loss": time_to_loss_rows, "kgram": kgram_rows, "transformer": transformer_rows,
           "lstm": lstm_rows, "generation": lambda s, d: generation_rows(s, d) + gen_corpus_rows(s, d),
           "topp": topp_rows, "compact": compact_rows, "bf16": bf16_rows}


# --- the run ---

def run_family(family: str, sizes: BenchSizes, device) -> list[Row]:
    """The rows of one family, measured in this process (error rows if it fails)."""
    try:
        return RUNNERS[family](sizes, device)
    except Exception as err:  # one broken row must not hide the others
        traceback.print_exc()
        return error_rows(FAMILIES[family], err)


def run_benchmark(sizes: BenchSizes, device, args, families=None, log=print) -> list[Row]:
    """Run the chosen families (default all), each in a fresh subprocess, then the memory subprocesses.

    Each row runs its baseline and fast path in turn (A B A B ...) in one process, after an untimed warm-up round,
    and compares the medians. A fresh process per family means no row depends on which rows ran before it (what
    earlier rows left behind in the process moved the starter's generation speed by up to 40% in our runs); one
    family at a time, since two at once would share the cores. Peak memory is measured in a fresh subprocess per
    variant (``--one NAME``, see memory.py). Returns the rows in table order.
    """
    families = families or list(FAMILIES)
    timeout_s = 300.0 + 3 * sizes.ttl_budget_s  # rounds stop after budget_s; time to loss trains two sides
    rows: list[Row] = []
    for family in families:
        t0 = time.perf_counter()
        log(f"[bench] {family} (a fresh process) ...", flush=True)
        result = run_children([family], args, timeout_s, workers=1, flag="--family")[family]
        if "rows" in result:
            rows += [Row(**r) for r in result["rows"]]
        else:
            rows += error_rows(FAMILIES[family], RuntimeError(result.get("error", "no result")))
        log(f"[bench] {family} done in {time.perf_counter() - t0:.1f} s", flush=True)
    add_memory(rows, args, sizes, log)
    return sorted(rows, key=lambda r: ROW_KEYS.index(r.key))


# --- command line ---

def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.bench``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds: a smoke run of a few seconds")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda[:N]")
    parser.add_argument("--out", type=Path, default=None,
                        help="report to write (default: BENCHMARKS.md at the repository root; "
                             "build/BENCHMARKS.quick.md with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated families to run, of: {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one step's peak memory
    parser.add_argument("--family", default=None, help=argparse.SUPPRESS)  # internal: one family's rows
    return parser


def _pick_device(name: str) -> torch.device:
    if name in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def _families(only: str | None) -> list[str] | None:
    """--only's families, checked; None for all."""
    if not only:
        return None
    families = [f.strip() for f in only.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"--only: unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    return families


def _child(args, sizes: BenchSizes, device) -> None:
    """What a subprocess does: one step's peak memory (--one) or one family's rows (--family), as a JSON line."""
    if args.one:
        result = measure_peak_memory(args.one, sizes, device)
    else:
        if args.family not in FAMILIES:
            raise SystemExit(f"--family: unknown family {args.family!r}; choose from {', '.join(FAMILIES)}")
        result = {"rows": [asdict(r) for r in run_family(args.family, sizes, device)]}
    print(ONE_PREFIX + json.dumps(result), flush=True)


def _note_load(info: dict, t0: float, cpu0) -> float:
    """Record the load at the end and other processes' CPU share in ``info``; return the run's seconds."""
    total = time.perf_counter() - t0
    if hasattr(os, "getloadavg"):
        info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    share = others_share(cpu0, cpu_seconds(), total, info.get("cores") or 1)
    if share is not None:
        info["others_cpu_share"] = share
        info["other_processes_cpu"] = f"{share:.1%} of the machine's CPU time during the run"
    return total


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, as a subprocess, one measurement); print the table, write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _pick_device(args.device)
    args.device_name = str(device)
    sizes = BenchSizes.quick() if args.quick else BenchSizes()
    if args.one or args.family:
        _child(args, sizes, device)
        return 0
    families = _families(args.only)
    info = machine_info(device)
    print(f"[bench] {'quick' if args.quick else 'full'} run on {device} ({info['cpu']}, {info['cores']} cores, "
          f"{info['threads']} torch threads, torch {info['torch']}, load {info.get('load_start', 'n/a')})", flush=True)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    rows = run_benchmark(sizes, device, args, families)
    total = _note_load(info, t0, cpu0)
    print()
    print(format_table(rows))
    for r in rows:
        if r.note:
            print(f"  {r.key}: {r.note}")
    out = args.out or (ROOT / "build" / "BENCHMARKS.quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    write_report(out, rows, info, total, sizes, argv)
    if busy_warning(info):
        print(f"\n[bench] warning: {busy_warning(info)}")
    print(f"\n[bench] {total:.0f} s in all; report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
