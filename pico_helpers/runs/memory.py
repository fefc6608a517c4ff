"""Will a model fit? Its parameters counted on the meta device (shapes without memory), their training footprint
(weights, gradients, Adam's two moments) against the memory of the device it trains on, and a refusal that names
the size to lower. The workbook's machinery: build_model (models/__init__.py) calls ``check_fits`` first, passing
its own constructor."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from pico_helpers.data.tokenizer import VOCAB_SIZE

__all__ = ["check_fits", "estimate_size", "available_memory", "BYTES_PER_PARAMETER"]


BYTES_PER_PARAMETER = 16  # fp32 weights, their gradients and Adam's two moments, 4 bytes each
SMALL_BYTES = 256 * 2 ** 20  # a model under this fits wherever the workbook runs: no memory query
SIZE_FIELDS = {"lstm_seq": ("embed_size",), "kgram_mlp_seq": ("kgram_k", "embed_size", "num_inner_mlp_layers"),
               "kvcache_transformer": ("block_size", "embed_size", "n_blocks")}  # what each model's size grows with
REPEATED = {"kgram_mlp_seq": "num_inner_mlp_layers", "kvcache_transformer": "n_blocks"}  # identical layers


def _footprint(name: str, config, n_ids: int, construct) -> tuple[int, int]:
    """(parameters, bytes of buffers and of one sequence's fp32 KV cache) of the raw model, built on the meta
    device: shapes without memory, so a model of terabytes is counted in milliseconds."""
    with torch.device("meta"):
        model = construct(name, config, n_ids)
    params = sum(p.numel() for p in model.parameters())  # a tied weight counts once
    extra = sum(b.numel() * b.element_size() for b in model.buffers())
    if hasattr(model, "new_cache"):  # a Transformer: generation's cache holds keys and values of every block, and ids
        extra += 2 * model.n_blocks * model.block_size * model.d_model * 4 + model.block_size * 8
    return params, extra


def estimate_size(name: str, config, n_ids: int, construct) -> tuple[int, int]:
    """``_footprint`` of the model; with many repeated layers, from the models with one and two of them (each layer
    adds the same parameters), so 100,000 layers take no longer to count than two."""
    field = REPEATED.get(name)
    n = getattr(config, field) if field else 0
    if n <= 2:
        return _footprint(name, config, n_ids, construct)
    one, two = (_footprint(name, config.replace(**{field: k}), n_ids, construct) for k in (1, 2))
    return tuple(a + (n - 1) * (b - a) for a, b in zip(one, two))


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):  # missing, "max" (no limit), ...
        return None


def available_memory(device: torch.device) -> tuple[int, str]:
    """(bytes a new model can take on ``device``, where they are, in words): free GPU memory for CUDA, else the
    machine's available memory (MemAvailable, within a container's cgroup limit); MPS shares the CPU's."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"{device} has {free / 1e9:,.1f} GB free"
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        free = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        if (cap := _read_int(limit)) is not None and (now := _read_int(used)) is not None:
            free = min(free, max(cap - now, 0))
    return free, f"the machine has {free / 1e9:,.1f} GB of memory available"


def check_fits(name: str, config, n_ids: int, construct, device: torch.device | None = None) -> None:
    """Refuse, with an estimate, sizes whose parameters and Adam state cannot fit in ``device``'s memory
    (default: the device ``config.device_id`` trains on). The estimate counts parameters x 16 bytes (fp32 weights,
    gradients, Adam's two moments), position tables and one sequence's KV cache; activations come on top."""
    try:
        params, extra = estimate_size(name, config, n_ids, construct)
    except (RuntimeError, OverflowError):  # even the shapes overflow: a weight of over 2**63 bytes
        why = "one weight alone would hold over 2**63 bytes"
        raise ValueError(f"{name} with {_too_large(name, config, n_ids, why)}") from None
    need = params * BYTES_PER_PARAMETER + extra
    if need < SMALL_BYTES:
        return
    if device is None:
        from pico_helpers.training.setup import pick_device  # here: training imports this package

        device = pick_device(config.device_id, verbose=False)
    free, where = available_memory(device)
    what = (f"it needs about {need / 1e9:,.1f} GB ({params:,} parameters x {BYTES_PER_PARAMETER} bytes: fp32 "
            "weights, gradients and Adam's two moments" + (f"; plus {extra / 1e9:,.1f} GB of position tables and "
                                                           "one sequence's KV cache" if extra >= 0.01 * need else "")
            + ")")
    if need <= free and device.type == "cuda":  # the weights are made in CPU memory first, then moved
        need, (free, where) = params * 4 + extra, available_memory(torch.device("cpu"))
        what = f"its {params:,} fp32 parameters need about {need / 1e9:,.1f} GB of CPU memory to be built"
    if need > free:
        raise ValueError(f"{name} with {_too_large(name, config, n_ids, f'{what}, but {where}')}")


def _too_large(name: str, config, n_ids: int, why: str = "") -> str:
    """"<size> cannot fit[: why]; lower <field> (...)": the size field furthest above its default is named."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    ratio = {f: getattr(config, f) / max(defaults[f], 1) for f in SIZE_FIELDS[name]}  # x its default
    culprit = max(ratio, key=ratio.get)
    size, others = f"{culprit} {getattr(config, culprit)}", [f for f in ratio if f != culprit]
    if n_ids / VOCAB_SIZE > ratio[culprit]:  # a raw model over many more ids than GPT-2's
        size, culprit, others = f"{n_ids:,} ids", "the number of ids (build_model's vocab argument)", []
    return (f"{size} cannot fit{': ' + why if why else ''}; lower {culprit}"
            + (f" (its size also grows with {' and '.join(others)})" if others else ""))
