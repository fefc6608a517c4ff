"""The benchmark's subprocesses: run `python -m benchmarks.bench --family NAME` or `--one NAME`, read their JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ONE_PREFIX", "ROOT", "child_command", "run_children"]

ROOT = Path(__file__).resolve().parents[1]
ONE_PREFIX = "BENCH_ONE "  # how a subprocess marks its JSON result line


def child_command(one: str, args, flag: str = "--one") -> list[str]:
    """The command line of one subprocess, with the parent's device, size and threads."""
    cmd = [sys.executable, "-m", "benchmarks.bench", flag, one, "--device", str(args.device_name)]
    if args.quick:
        cmd.append("--quick")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def _result(proc: subprocess.Popen, out: str, err: str) -> dict:
    """The JSON a subprocess printed after ONE_PREFIX, or {"error": why}."""
    lines = [line for line in out.splitlines() if line.startswith(ONE_PREFIX)]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len(ONE_PREFIX):])
    last = (err.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit code {proc.returncode}: {last[:200]}"}


def run_children(names: list[str], args, timeout_s: float, workers: int = 2, flag: str = "--one") -> dict:
    """Run ``--one NAME`` (or ``flag NAME``) subprocesses, ``workers`` at a time; {name: result or {"error": why}}."""
    results: dict[str, dict] = {}
    pending = list(names)
    running: list[tuple[str, subprocess.Popen, float]] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    while pending or running:
        while pending and len(running) < workers:
            name = pending.pop(0)
            proc = subprocess.Popen(child_command(name, args, flag), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            running.append((name, proc, time.perf_counter()))
        name, proc, t0 = running.pop(0)
        try:
            out, err = proc.communicate(timeout=max(1.0, timeout_s - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            results[name] = {"error": f"did not finish within {timeout_s:.0f} s"}
            continue
        results[name] = _result(proc, out, err)
    return results
