"""The speed switches of train(): bf16 autocast or not (as configured, or auto: CUDA GPUs with bf16, CPUs where it
measures faster), and the torch.compile view of a model that falls back to eager mode."""
from __future__ import annotations

import functools
import timeit
from contextlib import nullcontext

import torch

__all__ = ["bf16_choice", "cpu_bf16_choice", "autocast", "CompiledView", "MIN_SPEEDUP"]

MIN_SPEEDUP = 1.2  # bf16 must beat float32 by this much on the matmul; the rest of a step gains less


def bf16_choice(config, device: torch.device) -> tuple[bool, str]:
    """(bf16 autocast on, why) for ``config.bf16`` on ``device``: True / False as given; None (auto) as measured."""
    if config.bf16 is not None:
        return config.bf16, f"{'bf16 autocast' if config.bf16 else 'fp32'}: bf16={config.bf16}"
    if device.type == "cpu":
        return cpu_bf16_choice()
    on = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return on, "bf16 autocast: the GPU supports it" if on else f"fp32: auto, {device.type} without bf16 support"


def _matmul_seconds(dtype: torch.dtype, repeats: int = 3) -> float:
    """Fastest of ``repeats`` (512, 128) @ (128, 8192) products after a warm-up one: a fused-head chunk at d 128."""
    g = torch.Generator().manual_seed(0)  # not the global generator: the check must not move a run's random stream
    a, b = torch.randn(512, 128, generator=g).to(dtype), torch.randn(128, 8192, generator=g).to(dtype)
    a @ b  # the first bf16 call also sets its kernel up
    return min(timeit.repeat(lambda: a @ b, number=1, repeat=repeats))


@functools.cache
def cpu_bf16_choice() -> tuple[bool, str]:
    """(bf16 on, why) for this CPU: bf16 instructions in /proc/cpuinfo's flags, and a matmul MIN_SPEEDUP faster.
    Measured once per process (about 0.05 s); never raises."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
        hardware = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None
        if hardware is None:
            return False, "fp32: the CPU has no bf16 instructions (amx_bf16 / avx512_bf16)"
        speedup = _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)
    except Exception as err:  # no /proc/cpuinfo (macOS, Windows), or no bf16 kernel: float32 is always safe
        return False, f"fp32: the bf16 check could not run ({type(err).__name__})"
    verdict = "bf16 autocast" if speedup >= MIN_SPEEDUP else "fp32"
    return speedup >= MIN_SPEEDUP, f"{verdict}: CPU has {hardware}, bf16 {speedup:.1f}x on a head-sized matmul"


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast on ``device`` if ``bf16``, else a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


class CompiledView:
    """``model.hidden`` under torch.compile with ``model.head`` shared, so the state dict keeps its plain keys.

    torch.compile fails lazily, at the first call; this then says so once and goes on in eager mode.
    """

    def __init__(self, model: torch.nn.Module, say=print):
        self.model, self.head, self.say = model, model.head, say
        self.compiled = torch.compile(model.hidden)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(idx)
            except Exception as err:  # a backend or tracing failure; the eager call below re-raises real errors
                self.say(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); continuing in eager mode.")
                self.compiled = None
        return self.model.hidden(idx)
