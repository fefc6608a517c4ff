"""`make gpu-check`: what only a CUDA machine can show, one summary line per check."""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH_OUT = "build/BENCHMARKS.gpu.md"
SUMMARY_OUT = ROOT / "build" / "gpu-check.txt"
# The data-parallel test of issue 13 part 1; the check runs it with nccl once it exists.
TORCHRUN_TEST = "tests/test_torchrun.py"

CHECKS = [
    ("cuda tests", "pytest -m cuda: the tests that need a CUDA GPU"),
    ("train <model> bf16", "one short training of each model (kgram_mlp_seq, lstm_seq, kvcache_transformer) "
                           "with bf16 autocast and the fused loss; the loss must fall and stay finite"),
    ("fused loss", "the fused output layer + cross-entropy against the plain loss: value and gradients"),
    ("kv cache", "greedy generation with the KV cache / recurrent state equals full recompute, token for "
                 "token, and the last-position logits agree"),
    ("bench --quick", f"python -m benchmarks.bench --quick --device cuda --out {BENCH_OUT}"),
    ("torchrun nccl", f"with more than one GPU visible: {TORCHRUN_TEST} with the nccl backend"),
]


# --- the checks: each returns (status, detail), status one of PASS / FAIL / SKIP ---

def check_cuda_tests(device: torch.device) -> tuple[str, str]:
    """Every test marked ``cuda`` (pytest exits 5 when none is collected)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode == 5:
        return "SKIP", "no test is marked cuda yet (pytest collected none)"
    return ("PASS" if done.returncode == 0 else "FAIL"), last


def _quick_config(device: torch.device, output_dir: str):
    from pico_helpers import TrainConfig

    # The full GPT-2 vocabulary (vocab="full"), so the fused loss runs over all 50,257 columns; lr 1e-2 as
    # in tests/test_training.py, so that 30 steps are enough to see every model's loss fall.
    return TrainConfig.quick(output_dir=output_dir, device_id=str(device), bf16=True, epochs=1, vocab="full",
                             max_steps_per_epoch=30, log_every=0, learning_rate=1e-2)


def check_training(name: str, device: torch.device, corpus, output_dir: str) -> tuple[str, str]:
    """Train ``name`` for 30 steps with bf16 autocast; its loss must be finite and fall."""
    from pico_helpers import build_model, train

    cfg = _quick_config(device, output_dir)
    model = build_model(name, cfg, corpus.vocab)
    t0 = time.perf_counter()
    history = train(model, corpus, cfg, name=f"gpu_check_{name}")
    seconds = time.perf_counter() - t0
    losses = [float("nan") if x is None else float(x) for x in history.step_loss]
    bf16 = history.bf16
    where = next(model.parameters()).device
    first, last = losses[0], sum(losses[-5:]) / len(losses[-5:])
    detail = f"{len(losses)} steps on {where}, bf16 {bf16}, loss {first:.2f} -> {last:.2f}, {seconds:.1f} s"
    ok = where.type == device.type and bf16 is True and all(map(math.isfinite, losses)) and last < first - 0.5
    return ("PASS" if ok else "FAIL"), detail


def check_fused_loss(device: torch.device, corpus) -> tuple[str, str]:
    """The fused loss and the plain loss over full logits agree on ``device`` (float32, so no autocast)."""
    from pico_helpers import build_model, compute_next_token_loss, next_token_loss

    cfg = _quick_config(device, "unused")
    model = build_model("kvcache_transformer", cfg, corpus.vocab).to(device)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, corpus.vocab_size, (cfg.block_size, 8), generator=gen).to(device)  # (T, B)
    pad_mask = torch.ones_like(tokens, dtype=torch.bool)
    pad_mask[-5:, :3] = False  # three sequences end early
    grads = []
    values = []
    for loss_fn in (lambda: next_token_loss(model, tokens, pad_mask),
                    lambda: compute_next_token_loss(model(tokens), tokens, pad_mask)):
        model.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        values.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    # float32 sums over 50,257 logits in a different order: agreement to ~1e-6 relative is expected.
    value_diff = abs(values[0] - values[1]) / abs(values[1])
    grad_diff = ((grads[0] - grads[1]).abs().max() / grads[1].abs().max()).item()
    ok = value_diff < 1e-4 and grad_diff < 1e-3
    return ("PASS" if ok else "FAIL"), f"loss {values[0]:.6f} vs {values[1]:.6f}, max grad diff {grad_diff:.1e} (relative)"


def check_kv_cache(device: torch.device, corpus, output_dir: str) -> tuple[str, str]:
    """Greedy generation through ``model.next_logits`` (KV cache / recurrent state) equals recomputing the context."""
    from pico_helpers import MODEL_NAMES, build_model, generate_tokens, train

    cfg = _quick_config(device, output_dir)
    prompt = corpus.enc.encode_ordinary(cfg.prompt)
    n_new = cfg.block_size + 8  # past block_size, so the cropped window is compared too
    parts, ok = [], True
    for name in MODEL_NAMES:
        model = build_model(name, cfg, corpus.vocab)
        train(model, corpus, cfg, name=f"gpu_check_{name}")  # loads the run trained above
        model.to(device).eval()
        cached = generate_tokens(model, prompt, max_new_tokens=n_new, use_cache=True)
        recomputed = generate_tokens(model, prompt, max_new_tokens=n_new, use_cache=False)
        same = sum(a == b for a, b in zip(cached, recomputed))
        # The last step's logits both ways: the prompt, then one token at a time through the cache, against
        # one forward pass over the same (cropped) context.
        with torch.inference_mode():
            ids = torch.tensor(prompt + cached[:-1], device=device).unsqueeze(1)  # (T, 1)
            step_logits, state = model.next_logits(ids[:len(prompt)], None)  # (1, V)
            for t in range(len(prompt), ids.shape[0]):
                step_logits, state = model.next_logits(ids[t:t + 1], state)
            block = getattr(model, "block_size", None)
            full = model(ids if block is None else ids[-block:])[-1]  # (1, V)
        logit_diff = (step_logits.float() - full.float()).abs().max().item()
        # float32 on the GPU: one-token and whole-window matmuls reduce in different orders (~1e-5).
        ok &= cached == recomputed and logit_diff < 1e-3
        parts.append(f"{name} {same}/{n_new} equal, logits within {logit_diff:.0e}")
    return ("PASS" if ok else "FAIL"), "; ".join(parts)


def check_bench(device: torch.device) -> tuple[str, str]:
    """The benchmark's quick mode on ``device``; its report goes to build/."""
    out = BENCH_OUT if device.type == "cuda" else "build/BENCHMARKS.gpu-check-cpu.md"
    cmd = [sys.executable, "-m", "benchmarks.bench", "--quick", "--device", str(device), "--out", out]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        return "FAIL", f"exit {done.returncode}: {tail[0]}"
    return "PASS", f"report in {out} ({seconds:.0f} s)"


def check_torchrun(device: torch.device) -> tuple[str, str]:
    """The data-parallel test with nccl, when more than one GPU is visible and the test exists."""
    n_gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if n_gpus < 2:
        return "SKIP", f"needs more than one GPU, {n_gpus} visible"
    if not (ROOT / TORCHRUN_TEST).is_file():
        return "SKIP", f"{TORCHRUN_TEST} does not exist yet (issue 13 part 1: torchrun data-parallel training)"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TORCHRUN_TEST]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PICO_DIST_BACKEND": "nccl"})
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return ("PASS" if done.returncode == 0 else "FAIL"), f"{n_gpus} GPUs: {last}"


# --- driver ---

def run_checks(device: torch.device) -> list[tuple[str, str, str]]:
    """Run every check on ``device``; return (check, status, detail) rows. A check that raises is a FAIL."""
    from pico_helpers import MODEL_NAMES, load_corpus

    rows = []

    def record(label, fn, *args):
        try:
            status, detail = fn(*args)
        except Exception as err:  # one broken check must not hide the others
            traceback.print_exc()
            status, detail = "FAIL", f"{type(err).__name__}: {err}"
        rows.append((label, status, detail))
        print(f"[gpu-check] {status:4}  {label:30} {detail}", flush=True)

    record("cuda tests", check_cuda_tests, device)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as out:
        corpus = load_corpus(_quick_config(device, out))
        for name in MODEL_NAMES:
            record(f"train {name} bf16", check_training, name, device, corpus, out)
        record("fused loss", check_fused_loss, device, corpus)
        record("kv cache = recompute", check_kv_cache, device, corpus, out)
    record("bench --quick", check_bench, device)
    record("torchrun nccl", check_torchrun, device)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the checks on CUDA (or ``--device``); without CUDA print what would run and exit 0.

    On a CUDA GPU it runs the tests marked ``cuda``, one short training of each model with bf16 autocast and the
    fused loss, the fused loss against the plain loss, KV-cache generation against full recompute, the benchmark
    in quick mode with ``--device cuda`` and, with more than one GPU, the torchrun test with nccl. ``--device cpu``
    runs the same checks on the CPU (to try the script itself on a laptop). Exit status 1 when any check fails.

        python -m benchmarks.gpu_check                 # = make gpu-check
        python -m benchmarks.gpu_check --device cpu    # the same checks on the CPU
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to try the checks on the CPU")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"[gpu-check] no CUDA: torch {torch.__version__} sees no CUDA GPU here, so nothing was checked. "
              "On a CUDA machine `make gpu-check` runs:")
        for label, what in CHECKS:
            print(f"[gpu-check]   {label:20} {what}")
        return 0
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        print(f"[gpu-check] {torch.cuda.device_count()} CUDA GPU(s), {name}; torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}", flush=True)
    else:
        print(f"[gpu-check] on {device} (the same checks as on a GPU); torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    rows = run_checks(device)
    failed = [label for label, status, _ in rows if status == "FAIL"]
    lines = [f"{status:4}  {label:30} {detail}" for label, status, detail in rows]
    SUMMARY_OUT.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY_OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\n[gpu-check] summary ({time.perf_counter() - t0:.0f} s; also in {SUMMARY_OUT.relative_to(ROOT)}):")
    print("\n".join(lines))
    print(f"[gpu-check] {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed or skipped'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
