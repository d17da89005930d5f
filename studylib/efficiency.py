"""Measured efficiency of pruned models: latency, throughput and memory, against the ideal.

Compression is meant to make a model faster and smaller, but a pruned model can be no faster (odd widths,
small batches, per-op overhead, parts the pruning never touches). This module measures it.

Measured (`measure`), for every model and batch size b, in one process, on the same inputs (b benchmark
images with their prompts, left-padded to T tokens, or synthetic ones):

- prefill: one forward of the b prompts with their images, KV cache on, logits of the last position only
  (what `generate` computes first), then the greedy token: `prefill_ms`;
  `prefill_tokens_per_s` = b * T / prefill time;
- decode: N greedy steps of one token each with the KV cache (a hand-written loop rather than `generate`, so
  that decoding is timed alone and no sampling machinery is timed): `decode_ms_per_step` = decode time / N,
  `decode_tokens_per_s` = b * N / decode time;
- throughput of the whole request batch: `generate_tokens_per_s` = b * N / (prefill + decode time);
- memory, in a separate pass after the timed ones: `activation_mb` = peak memory during prefill + decode
  minus the level just before (activations, KV cache, logits); `peak_memory_mb` = `weight_mb` + `activation_mb`
  (each model's own peak, although all models share the process). See `PeakMemory` for how.

Runs are interleaved (`run_order`): in every repeat each batch size runs every model in turn, the order of
the models rotated by one per repeat, so that machine noise (another process, frequency changes) hits every
model alike; `warmup` unrecorded rounds come first. Medians, quartiles, min and max are over the repeats.
On CUDA every timed region starts and ends with `torch.cuda.synchronize`.

Counted, not measured:

- `lm_flops_per_token` (`flops_per_token`): forward FLOPs of the language model (LM) for one token that
  attends to C tokens (C = mean prompt length of the batch), as Kaplan et al. (2020) / Chinchilla:
  F(C) = 2 * N_lm' + sum over blocks l of 4 * h_l * d_l * C, where N_lm' = LM parameters without the input
  embedding table (a lookup; the LM head is a matmul and counts, tied or not), h_l query heads of
  dimension d_l (QK^T and attention * V, 2 FLOPs per multiply-add each). Element-wise work (norms' scaling
  aside, activations, softmax, RoPE) is ignored;
- `prefill_gflop`, `lm_prefill_gflop`: FLOPs of the prefill forward of the whole model (vision tower and
  projector included) and of its LM part (decoder + LM head), counted by `torch.utils.flop_counter` on the
  real call (matmuls and attention);
- `lm_params`, `total_params` (`pruning.count_params`), `weight_mb` = bytes of parameters + buffers / 2^20.

Against the ideal (`speedups`), for every model m and the baseline (unpruned) model 0, at each batch size:

- speedup S = t_0 / t_m for a latency (`prefill_ms`), S = r_m / r_0 for a rate (tokens/s), paired when the
  per-repeat runs are given (`measure_runs`): the median over repeats of the ratio within a repeat;
- ideal speedup I = F_0 / F_m (LM FLOPs per token; the primary ideal), also I_params = N_0 / N_m (LM
  parameters) and, for prefill, I_model = whole-model prefill FLOP ratio (the vision tower is never pruned);
- share of the ideal = 100 * S / I (percent; 100 = the pruned model is as much faster as it is cheaper);
- latency reduction R = 100 * (1 - 1/S) against the ideal reduction R_I = 100 * (1 - 1/I), and the share of
  the ideal reduction 100 * R / R_I (undefined when I = 1).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import inspect
import json
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import pruning as P
from . import validate as V

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# metric -> (unit, True when lower is better, None when neither). Rows with batch_size <NA> are per model.
METRICS: dict[str, tuple[str, bool | None]] = {
    "prefill_ms": ("ms", True),
    "prefill_tokens_per_s": ("tokens/s", False),
    "decode_ms_per_step": ("ms", True),
    "decode_tokens_per_s": ("tokens/s", False),
    "generate_tokens_per_s": ("tokens/s", False),
    "activation_mb": ("MiB", True),
    "peak_memory_mb": ("MiB", True),
    "lm_flops_per_token": ("FLOP", True),
    "prefill_gflop": ("GFLOP", True),
    "lm_prefill_gflop": ("GFLOP", True),
    "prompt_tokens": ("tokens", None),
    "lm_params": ("parameters", True),
    "total_params": ("parameters", True),
    "weight_mb": ("MiB", True),
}
TIMED = ("prefill_ms", "decode_tokens_per_s", "generate_tokens_per_s")  # what `speedups` compares
COLUMNS = ["model", "metric", "batch_size", "unit", "median", "q1", "q3", "min", "max", "n"]
MB = 2**20


# ----------------------------------------------------------------------------------------------
# Checks of user input (ValueError naming the parameter and the allowed values)


def check_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'mps' as a torch.device; one that is not on this machine is an error naming
    those that are (`validate.device`)."""
    return V.device("device", str(device) if device is not None else device)


def check_batch_sizes(sizes) -> list[int]:
    """Positive ints, in the given order, without duplicates."""
    sizes = [sizes] if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__") else list(sizes)
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0]
    if not sizes or bad:
        raise ValueError(f"batch sizes must be positive ints (e.g. 1,8,32); got {sizes!r}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"batch sizes must not repeat; got {sizes!r}")
    return [int(s) for s in sizes]


def parse_batch_sizes(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]."""
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--batch-sizes must be comma-separated positive ints (e.g. 1,8,32); got {text!r}") from None
    try:
        return check_batch_sizes(sizes)
    except ValueError as e:
        raise ValueError(f"--batch-sizes: {e}") from None


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}; got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# Counting: parameters, bytes, FLOPs


def flops_per_token(model: nn.Module, context: int) -> int:
    """Forward FLOPs of the LM for one token attending to `context` tokens:
    2 * N_lm' + sum_l 4 * h_l * d_l * context (N_lm' = LM parameters without the input embedding table;
    h_l query heads of dimension d_l in block l). Works on pruned models (per-block widths)."""
    _check_int("context", context, 0)
    info = P.describe_lm(model)
    embed = {id(p) for p in info.decoder.get_input_embeddings().parameters()}
    decoder = sum(p.numel() for p in info.decoder.parameters() if id(p) not in embed)
    head = sum(p.numel() for p in info.lm_head.parameters())  # a matmul even when tied to the embeddings
    attention = sum(4 * b.num_heads * b.head_dim * context for b in info.blocks)
    return 2 * (decoder + head) + attention


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (shared tensors once)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _register_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the CUDA attention kernels but not the CPU one that
    `scaled_dot_product_attention` dispatches to; count it with torch's own SDPA formula (4 * b * h * s_q * s_k * d,
    the full score matrix, as for the CUDA kernels)."""
    from torch.utils import flop_counter as fc

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in fc.flop_registry or op.default in fc.flop_registry:
        return

    @fc.register_flop_formula(op)
    def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:  # shapes, not tensors
        return fc.sdpa_flop_count(query, key, value)


def _fqn(model: nn.Module, module: nn.Module | None) -> str | None:
    for name, m in model.named_modules():
        if m is module:
            return name
    return None


def parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The parts of a (multimodal) model: vision tower, projector, embeddings, decoder blocks, final norm, LM head
    (absent parts are left out)."""
    info = P.describe_lm(model)
    inner = getattr(model, "model", None)
    out = {"vision tower": [getattr(inner, "vision_tower", None)],
           "projector": [getattr(inner, "multi_modal_projector", None)],
           "embeddings": [info.decoder.get_input_embeddings()],
           "decoder blocks": list(info.layers),
           "final norm": [getattr(info.decoder, "norm", getattr(info.decoder, "final_layernorm", None))],
           "lm_head": [info.lm_head]}
    return {k: [m for m in v if m is not None] for k, v in out.items() if any(m is not None for m in v)}


@torch.inference_mode()
def counted_flops(model: nn.Module, inputs: dict) -> dict[str, int]:
    """FLOPs of one prefill forward on `inputs`, by part ('total', 'lm' = decoder + LM head, and every part of
    `parts`), counted by torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        _prefill(model, inputs)
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    info = P.describe_lm(model)

    def of(module) -> int:
        name = _fqn(model, module)
        return counts.get(f"{root}.{name}", 0) if name else 0

    out = {"total": counter.get_total_flops(), "lm": of(info.decoder) + of(info.lm_head)}
    for part, modules in parts(model).items():
        out[part] = sum(of(m) for m in modules)
    return out


# ----------------------------------------------------------------------------------------------
# Inputs


def benchmark_inputs(processor, batch_size: int, seed: int = 0) -> dict:
    """b prompts with their images from the image benchmarks (taken in turn: scene-qa, pope, count, ...),
    processed as `evaluation.generate_answers` does (left padding). Generated in memory, nothing cached."""
    from . import data as D
    from .collate import prompt_text

    per = math.ceil(batch_size / len(D.IMAGE_BENCHMARKS))
    recs = [D.generate_records(b, per, seed) for b in D.IMAGE_BENCHMARKS]
    chosen = [recs[i % len(recs)][i // len(recs)] for i in range(batch_size)]
    processor.tokenizer.padding_side = "left"
    prompts = [prompt_text(r["conversations"][0]["value"]) for r in chosen]
    return dict(processor(text=prompts, images=[r["image"].convert("RGB") for r in chosen], padding=True,
                          return_tensors="pt"))


def synthetic_inputs(model: nn.Module, batch_size: int, text_tokens: int = 32, seed: int = 0) -> dict:
    """Random token ids with one image per row (the image tokens first, then `text_tokens` text tokens) and
    random pixels, for a LLaVA model without a processor (e.g. a 7B-shaped random model). A causal LM gets text
    only. Image tokens per image = (image_size / patch_size)^2, plus one for a CLIP tower with the 'full'
    feature strategy (the CLS token); LLaVA's 'default' strategy drops CLS."""
    _check_int("batch_size", batch_size, 1)
    cfg = model.config
    vocab = getattr(cfg, "text_config", cfg).vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch_size, text_tokens), generator=g)
    image_token = getattr(cfg, "image_token_id", None)
    if image_token is None:
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    ids[ids == image_token] = 3
    v = cfg.vision_config
    n = (v.image_size // v.patch_size) ** 2
    if getattr(cfg, "vision_feature_select_strategy", "default") == "full" and "clip" in v.model_type:
        n += 1
    image = torch.full((batch_size, n), image_token, dtype=torch.long)
    ids = torch.cat([ids[:, :1], image, ids[:, 1:]], 1)
    pixels = torch.randn(batch_size, v.num_channels, v.image_size, v.image_size, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}


def _on(inputs: dict, model: nn.Module, device: torch.device) -> dict:
    """Inputs on the device, floating tensors (pixels) in the model's dtype."""
    dtype = next(model.parameters()).dtype
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
            for k, v in inputs.items()}


# ----------------------------------------------------------------------------------------------
# Timing and memory


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a host clock measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=None)
def _arguments(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def _cache_name(model: nn.Module) -> str:
    """The KV-cache argument: `cache` (transformers >= 5.2x) or `past_key_values` (earlier)."""
    return "cache" if "cache" in _arguments(type(model)) else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _prefill(model: nn.Module, inputs: dict):
    kw = {"logits_to_keep": 1} if "logits_to_keep" in _arguments(type(model)) else {}
    return model(**inputs, use_cache=True, **kw)


@torch.inference_mode()
def run_once(model: nn.Module, inputs: dict, new_tokens: int, device: torch.device) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of one prefill + `new_tokens` greedy KV-cache steps."""
    device = torch.device(device)
    _sync(device)
    t0 = time.perf_counter()
    out = _prefill(model, inputs)
    token = out.logits[:, -1:].argmax(-1)
    _sync(device)
    t1 = time.perf_counter()
    mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
    cache, name = _cache_of(out), _cache_name(model)
    for _ in range(new_tokens):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = model(input_ids=token, attention_mask=mask, use_cache=True, **{name: cache})
        token = out.logits[:, -1:].argmax(-1)
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes() -> int | None:
    rss = _proc_status_bytes("VmRSS")
    if rss is None:
        try:
            import psutil

            rss = psutil.Process().memory_info().rss
        except Exception:  # psutil missing or unsupported platform
            return None
    return rss


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_bytes("VmHWM") is not None
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`), so that a run's allocations show up in RSS
    instead of reusing pages an earlier model freed. Hand-written (ctypes): no library exposes it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class PeakMemory:
    """Context manager: `peak` = peak memory during the block minus the level just before, in bytes.

    cuda: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus `memory_allocated` before
    (tensors only; the caching allocator's reserve is not counted). cpu: freed heap is returned to the OS,
    the kernel's peak RSS (VmHWM) is reset, and peak = VmHWM after - VmRSS before; where VmHWM cannot be reset
    (not Linux) RSS after - RSS before, a lower bound. `method` says which was used.
    """

    device: torch.device
    peak: int = 0
    method: str = ""
    _base: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda: max_memory_allocated - memory_allocated before"
        else:
            _release_freed_memory()
            exact = _reset_peak_rss()
            self._base = _rss_bytes() or 0
            self.method = ("cpu: peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS before" if exact
                           else "cpu: RSS after - RSS before (lower bound: VmHWM cannot be reset here)")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            _sync(self.device)
            after = torch.cuda.max_memory_allocated(self.device)
        else:
            after = (_proc_status_bytes("VmHWM") if self.method.startswith("cpu: peak") else _rss_bytes()) or 0
        self.peak = max(after - self._base, 0)


def memory_method(device: str | torch.device) -> str:
    """How `measure` measures memory on this device (see PeakMemory)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "cuda: max_memory_allocated - memory_allocated before"
    if _reset_peak_rss():
        return "cpu: peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS before"
    return "cpu: RSS after - RSS before (lower bound: VmHWM cannot be reset here)"


def run_order(names: list[str], repeats: int) -> list[list[str]]:
    """The order of the models in each repeat: rotated by one per repeat (repeat r starts at model r mod k),
    so that every model runs in every position equally often when repeats is a multiple of k."""
    k = len(names)
    return [names[r % k:] + names[:r % k] for r in range(repeats)]


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": float(v.min()), "max": float(v.max()),
            "n": int(len(v))}


def _row(model: str, metric: str, batch_size, values) -> dict:
    values = values if isinstance(values, list) else [values]
    return {"model": model, "metric": metric, "batch_size": batch_size, "unit": METRICS[metric][0], **_stats(values)}


def measure(models: dict[str, nn.Module], processor=None, batch_sizes=(1, 8, 32), new_tokens: int = 16,
            device: str | torch.device = "cpu", repeats: int = 5, warmup: int = 1, **kw) -> pd.DataFrame:
    """The tidy table of `measure_runs` (same arguments), without the per-repeat timings."""
    return measure_runs(models, processor, batch_sizes, new_tokens, device, repeats, warmup, **kw)[0]


def measure_runs(
    models: dict[str, nn.Module],
    processor=None,
    batch_sizes=(1, 8, 32),
    new_tokens: int = 16,
    device: str | torch.device = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    *,
    inputs: Callable[[int], dict] | None = None,
    seed: int = 0,
    count_flops: bool = True,
    memory: bool = True,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, runs). table: latency, throughput, memory, FLOPs and parameters of every model (see the module
    docstring), one row per (model, metric, batch_size) with columns model, metric, batch_size (<NA> for per-model
    rows), unit, median, q1, q3, min, max, n (repeats; 1 for counted values and for memory, measured once).
    runs: one row per timed run (model, batch_size, repeat, position in that repeat's order, and the timed metrics),
    for paired speedups (`speedups(table, baseline, runs)`).

    Inputs for batch size b: `inputs(b)` if given, else `benchmark_inputs(processor, b, seed)` if a processor is
    given, else `synthetic_inputs(first model, b)`; the same for every model. Models are moved to `device`.
    """
    if not models:
        raise ValueError("models must name at least one model")
    sizes = check_batch_sizes(batch_sizes)
    new_tokens = _check_int("new_tokens", new_tokens, 0)
    repeats = _check_int("repeats", repeats, 1)
    warmup = _check_int("warmup", warmup, 0)
    dev = check_device(device)
    names = list(models)
    first = models[names[0]]
    make = inputs or ((lambda b: benchmark_inputs(processor, b, seed)) if processor is not None
                      else (lambda b: synthetic_inputs(first, b, seed=seed)))
    for m in models.values():
        m.eval().to(dev)
    raw = {bs: make(bs) for bs in sizes}
    batch = {(name, bs): _on(raw[bs], models[name], dev) for name in names for bs in sizes}

    rows = []
    for name, m in models.items():
        lm, total = P.count_params(m)
        rows += [_row(name, "lm_params", pd.NA, lm), _row(name, "total_params", pd.NA, total),
                 _row(name, "weight_mb", pd.NA, weight_bytes(m) / MB)]
        for bs in sizes:
            ids = raw[bs]["input_ids"]
            context = round(float(raw[bs]["attention_mask"].sum(1).float().mean())) if "attention_mask" in raw[bs] \
                else ids.shape[1]
            rows += [_row(name, "prompt_tokens", bs, ids.shape[1]),
                     _row(name, "lm_flops_per_token", bs, flops_per_token(m, context))]
            if count_flops:
                f = counted_flops(m, batch[name, bs])
                rows += [_row(name, "prefill_gflop", bs, f["total"] / 1e9),
                         _row(name, "lm_prefill_gflop", bs, f["lm"] / 1e9)]

    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    orders = run_order(names, warmup) + run_order(names, repeats)
    for r, order in enumerate(orders):
        for bs in sizes:
            for name in order:
                t = run_once(models[name], batch[name, bs], new_tokens, dev)
                if r >= warmup:
                    samples.setdefault((name, bs), []).append(t)
        if progress:
            print(f"{'warm-up' if r < warmup else 'repeat'} {r + 1 - (0 if r < warmup else warmup)} done", flush=True)

    timed = []
    for (name, bs), ts in samples.items():
        tokens = raw[bs]["input_ids"].shape[1]
        for r, (p, d) in enumerate(ts):
            run = {"model": name, "batch_size": bs, "repeat": r, "position": orders[warmup + r].index(name),
                   "prefill_ms": 1e3 * p, "prefill_tokens_per_s": bs * tokens / p}
            if new_tokens:
                run |= {"decode_ms_per_step": 1e3 * d / new_tokens, "decode_tokens_per_s": bs * new_tokens / d,
                        "generate_tokens_per_s": bs * new_tokens / (p + d)}
            timed.append(run)
    runs = pd.DataFrame(timed)
    metrics = [c for c in runs.columns if c in METRICS]
    for (name, bs), g in runs.groupby(["model", "batch_size"], sort=False):
        rows += [_row(name, metric, bs, g[metric].tolist()) for metric in metrics]

    if memory:  # a separate pass: resetting the peak must not touch the timed runs
        for bs in sizes:
            for name in names:
                with PeakMemory(dev) as mem:
                    run_once(models[name], batch[name, bs], new_tokens, dev)
                rows += [_row(name, "activation_mb", bs, mem.peak / MB),
                         _row(name, "peak_memory_mb", bs, (weight_bytes(models[name]) + mem.peak) / MB)]

    table = pd.DataFrame(rows, columns=COLUMNS)
    table["batch_size"] = table["batch_size"].astype("Int64")
    order = {n: i for i, n in enumerate(names)}
    table = table.sort_values(["model", "metric", "batch_size"], key=lambda c: c.map(order) if c.name == "model" else c,
                              na_position="first").reset_index(drop=True)
    return table, runs


# ----------------------------------------------------------------------------------------------
# Against the ideal


def value(table: pd.DataFrame, model: str, metric: str, batch_size: int | None = None) -> float:
    """The median of one row of a `measure` table (batch_size None for per-model rows)."""
    rows = table[(table["model"] == model) & (table["metric"] == metric)]
    rows = rows[rows["batch_size"].isna()] if batch_size is None else rows[rows["batch_size"] == batch_size]
    if len(rows) != 1:
        raise ValueError(f"the table has {len(rows)} rows for model {model!r}, metric {metric!r}, "
                         f"batch_size {batch_size!r} (expected 1)")
    return float(rows["median"].iloc[0])


def speedups(table: pd.DataFrame, baseline: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (model, batch_size, metric in TIMED present in the table), the baseline included:

    speedup S = base / model for latencies, model / base for rates. With `runs` (from `measure_runs`) S is paired:
    the median over repeats of the ratio within each repeat (the models run back to back in a repeat, so a slow
    drift of the machine cancels), with its quartiles speedup_q1, speedup_q3; without, the ratio of the medians;
    ideal = F_base / F_model (LM FLOPs per token at the batch's mean prompt length), ideal_params = N_base / N_model
    (LM parameters), ideal_model = whole-model prefill FLOP ratio (prefill_ms only, NaN otherwise);
    share_of_ideal = 100 * S / ideal; reduction = 100 * (1 - 1/S); ideal_reduction = 100 * (1 - 1/ideal);
    share_of_ideal_reduction = 100 * reduction / ideal_reduction (NaN when ideal = 1);
    share_of_ideal_model = 100 * S / ideal_model.
    """
    models = list(dict.fromkeys(table["model"]))
    if baseline not in models:
        raise ValueError(f"baseline must be one of the table's models {models}; got {baseline!r}")
    rows = []
    for metric in [m for m in TIMED if m in set(table["metric"])]:
        lower_better = METRICS[metric][1]
        sizes = sorted(int(b) for b in table.loc[table["metric"] == metric, "batch_size"].dropna().unique())
        for bs in sizes:
            base = value(table, baseline, metric, bs)
            for m in models:
                x = value(table, m, metric, bs)
                s, s_q1, s_q3 = base / x if lower_better else x / base, float("nan"), float("nan")
                if runs is not None and metric in runs.columns:
                    pair = runs[runs["batch_size"] == bs].pivot(index="repeat", columns="model", values=metric)
                    ratio = (pair[baseline] / pair[m] if lower_better else pair[m] / pair[baseline]).dropna()
                    if len(ratio):
                        s_q1, s, s_q3 = (float(v) for v in np.percentile(ratio, [25, 50, 75]))
                ideal = value(table, baseline, "lm_flops_per_token", bs) / value(table, m, "lm_flops_per_token", bs)
                ideal_params = value(table, baseline, "lm_params") / value(table, m, "lm_params")
                has_model = metric == "prefill_ms" and "prefill_gflop" in set(table["metric"])
                ideal_model = (value(table, baseline, "prefill_gflop", bs) / value(table, m, "prefill_gflop", bs)
                               if has_model else float("nan"))
                reduction, ideal_reduction = 100 * (1 - 1 / s), 100 * (1 - 1 / ideal)
                rows.append({
                    "model": m, "batch_size": bs, "metric": metric, "baseline": baseline,
                    "base": base, "value": x, "speedup": s, "speedup_q1": s_q1, "speedup_q3": s_q3,
                    "ideal": ideal, "ideal_params": ideal_params,
                    "ideal_model": ideal_model, "share_of_ideal": 100 * s / ideal,
                    "reduction": reduction, "ideal_reduction": ideal_reduction,
                    "share_of_ideal_reduction": 100 * reduction / ideal_reduction if abs(ideal - 1) > 1e-12
                    else float("nan"),
                    "share_of_ideal_model": 100 * s / ideal_model,
                })
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, speed: pd.DataFrame, batch_size: int, metric: str = "prefill_ms") -> pd.DataFrame:
    """One row per model at one batch size: LM parameters, FLOPs/token, the metric's median [q1, q3], speedup,
    ideal (FLOPs), share of the ideal (%), and the parameter and whole-model ideals."""
    rows = []
    for _, s in speed[(speed["batch_size"] == batch_size) & (speed["metric"] == metric)].iterrows():
        r = table[(table["model"] == s["model"]) & (table["metric"] == metric) & (table["batch_size"] == batch_size)]
        rows.append({
            "model": s["model"], "LM params": int(value(table, s["model"], "lm_params")),
            "LM FLOPs/token": int(value(table, s["model"], "lm_flops_per_token", batch_size)),
            f"{metric} median": float(r["median"].iloc[0]), "q1": float(r["q1"].iloc[0]), "q3": float(r["q3"].iloc[0]),
            "speedup": s["speedup"], "speedup q1": s["speedup_q1"], "speedup q3": s["speedup_q3"],
            "ideal (FLOPs)": s["ideal"], "share of ideal %": s["share_of_ideal"],
            "ideal (params)": s["ideal_params"], "ideal (whole model)": s["ideal_model"],
        })
    return pd.DataFrame(rows)


def print_speed_tables(table: pd.DataFrame, speed: pd.DataFrame, batch_sizes) -> None:
    """Print, as markdown, the prefill summary at each batch size and the decode / generate speedups."""
    for bs in batch_sizes:
        print(f"\n### prefill, batch {bs} (ideal = LM FLOPs/token ratio; share = 100 * speedup / ideal)\n")
        print(markdown(summary(table, speed, bs)))
    for metric in ("decode_tokens_per_s", "generate_tokens_per_s"):
        print(f"\n### {metric}\n")
        print(markdown(speed[speed["metric"] == metric][["model", "batch_size", "value", "speedup", "speedup_q1",
                                                         "speedup_q3", "ideal", "share_of_ideal"]]))


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a markdown table (hand-written: pandas needs the optional `tabulate` for this)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:,.0f}" if abs(v) >= 10 ** digits else f"{v:.{digits}g}"
        if isinstance(v, (int, np.integer)):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def to_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-able dicts (pandas NA / NaN -> None)."""
    out = []
    for rec in frame.astype(object).to_dict(orient="records"):
        out.append({k: None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else
                    int(v) if isinstance(v, np.integer) else float(v) if isinstance(v, np.floating) else v
                    for k, v in rec.items()})
    return out


def closest_widths(model: nn.Module, scores, ratio: float, round_to: int,
                   layers: list[int] | None = None) -> tuple[int, int, int] | None:
    """Widthwise widths (query heads, kv heads, neurons), the same in every pruned block, with neurons a multiple
    of `round_to`, whose achieved LM ratio is closest to `ratio`: what to measure when `round_to` cannot meet the
    ratio within the planner's one point (e.g. llava-small's MLP of 512 in steps of 128). None if there is none."""
    info = P.describe_lm(model)
    candidates = layers if layers is not None else list(range(1, len(info.blocks) - 1))
    b = info.blocks[candidates[0]]
    options = [(q, kv, m) for q, kv in P.head_options(b.num_heads, b.num_kv_heads)
               for m in range(round_to, b.intermediate_size + 1, round_to)]
    if not options:
        return None
    achieved = {w: P.make_plan(model, scores, None, layers=candidates, widths=w).lm_ratio for w in options}
    return min(options, key=lambda w: (abs(achieved[w] - ratio), w))


# ----------------------------------------------------------------------------------------------
# Where the time goes


@torch.inference_mode()
def part_times(model: nn.Module, inputs: dict, device: str | torch.device = "cpu", repeats: int = 5) -> pd.DataFrame:
    """Wall time of each part of one prefill forward (`parts`), from forward hooks (synchronised on CUDA);
    'other' = the whole forward minus the parts (LLaVA's merging of image features, masks, rotary embeddings,
    Python). Medians over repeats after one warm-up; columns part, ms, share (%)."""
    dev = check_device(device)
    inputs = _on(inputs, model, dev)
    spent: dict[str, float] = {}
    start: dict[int, float] = {}
    hooks = []
    for part, modules in parts(model).items():
        for m in modules:
            def pre(mod, args, part=part):
                _sync(dev)
                start[id(mod)] = time.perf_counter()

            def post(mod, args, out, part=part):
                _sync(dev)
                spent[part] = spent.get(part, 0.0) + time.perf_counter() - start.pop(id(mod))

            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    runs = []
    try:
        for r in range(repeats + 1):
            spent.clear()
            _sync(dev)
            t0 = time.perf_counter()
            _prefill(model, inputs)
            _sync(dev)
            total = time.perf_counter() - t0
            if r:
                runs.append({**spent, "other": total - sum(spent.values()), "total": total})
    finally:
        for h in hooks:
            h.remove()
    med = pd.DataFrame(runs).median()
    rows = [{"part": p, "ms": 1e3 * med[p], "share": 100 * med[p] / med["total"]} for p in med.index if p != "total"]
    return pd.DataFrame(rows)


def op_profile(model: nn.Module, inputs: dict, device: str | torch.device = "cpu", repeats: int = 3,
               top: int = 12) -> pd.DataFrame:
    """The operators that dominate a prefill forward (torch.profiler, self time, summed over `repeats` runs
    after one warm-up): columns op, calls, self_ms (per run), share (% of all self time)."""
    from torch.profiler import ProfilerActivity, profile

    dev = check_device(device)
    inputs = _on(inputs, model, dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.inference_mode():
        _prefill(model, inputs)
        _sync(dev)
        with profile(activities=activities) as prof:
            for _ in range(repeats):
                _prefill(model, inputs)
            _sync(dev)
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in events)
    rows = [{"op": e.key, "calls": e.count // repeats, "self_ms": getattr(e, key) / 1e3 / repeats,
             "share": 100 * getattr(e, key) / total} for e in events]
    return pd.DataFrame(rows).sort_values("self_ms", ascending=False).head(top).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Command line: `studylib bench` (its parser is in studylib.cli)


@dataclass
class BenchSettings:
    models: list[str]
    batch_sizes: list[int]
    new_tokens: int
    device: torch.device
    dtype: torch.dtype
    repeats: int
    warmup: int
    threads: int | None
    out: Path


def bench_settings(args) -> BenchSettings:
    """Check every argument of `studylib bench` before any model is loaded."""
    sizes = parse_batch_sizes(args.batch_sizes)
    _check_int("--new-tokens", args.new_tokens, 1)
    _check_int("--repeats", args.repeats, 1)
    _check_int("--warmup", args.warmup, 0)
    _check_int("--seed", args.seed, 0)
    if args.threads is not None:
        _check_int("--threads", args.threads, 1)
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}; got {args.dtype!r}")
    device = V.device("--device", args.device)
    if len(set(args.models)) != len(args.models):
        raise ValueError(f"MODEL: each checkpoint once, please; got {args.models}")
    for m in args.models:
        if not Path(m).is_dir():
            raise FileNotFoundError(f"MODEL {m!r} is not a checkpoint folder (hub ids: download first, "
                                    "HF_HUB_OFFLINE=1 forbids the hub)")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a FILE.json")
    return BenchSettings(list(args.models), sizes, args.new_tokens, device, DTYPES[args.dtype], args.repeats,
                         args.warmup, args.threads, out)


def cmd_bench(args) -> None:
    from . import models as M

    s = bench_settings(args)
    if s.threads:
        torch.set_num_threads(s.threads)
    loaded, processor = {}, None
    for path in s.models:
        model, proc = M.load(path, dtype=s.dtype, trust_remote_code=getattr(args, "trust_remote_code", False))
        loaded[path] = model
        if processor is None:  # the baseline's processor makes the inputs of every model
            processor = proc
    table, runs = measure_runs(loaded, processor, s.batch_sizes, s.new_tokens, s.device, s.repeats, s.warmup,
                               seed=args.seed)
    speed = speedups(table, s.models[0], runs)
    result = {
        "baseline": s.models[0], "models": s.models, "device": str(s.device), "dtype": args.dtype,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "batch_sizes": s.batch_sizes,
        "new_tokens": s.new_tokens, "repeats": s.repeats, "warmup": s.warmup,
        "memory_method": memory_method(s.device),
        "share_of_ideal": "100 * speedup / ideal; ideal = LM FLOPs/token ratio (see studylib.efficiency)",
        "table": to_records(table), "speedups": to_records(speed), "runs": to_records(runs),
    }
    s.out.parent.mkdir(parents=True, exist_ok=True)
    s.out.write_text(json.dumps(result, indent=1))
    for bs in s.batch_sizes:
        print(f"\nbatch size {bs}, prefill:")
        print(markdown(summary(table, speed, bs)))
    print(f"\nwritten to {s.out}")


def prune_variant(model, scores, ratio: float, round_to: int = 1) -> tuple[P.PruneResult | None, str]:
    """Prune a copy of `model` to `ratio` (widthwise: kept MLP neurons a multiple of `round_to`) and a
    note. When no such widths meet the ratio within one point, the closest widths that are multiples of
    `round_to` (`efficiency.closest_widths`) are pruned instead and the note says so; (None, note) when
    there are none."""
    if scores.paradigm == "layerwise":
        return P.prune(model, "layerwise", scores.criterion, ratio, None, scores=scores), ""
    try:
        return P.prune(model, "widthwise", scores.criterion, ratio, None, round_to=round_to,
                       scores=scores), ""
    except ValueError as err:
        widths = closest_widths(model, scores, ratio, round_to)
        if widths is None:
            return None, f"infeasible: {err}"
        result = P.prune(model, "widthwise", scores.criterion, None, None, widths=widths, scores=scores)
        return result, f"{err}; measured the closest widths {widths} instead"


__all__ = [
    "METRICS", "TIMED", "PeakMemory", "BenchSettings", "check_device", "check_batch_sizes",
    "parse_batch_sizes", "flops_per_token", "weight_bytes", "parts", "counted_flops", "benchmark_inputs",
    "synthetic_inputs", "run_once", "run_order", "measure", "measure_runs", "memory_method", "value", "speedups",
    "summary", "print_speed_tables", "markdown", "to_records", "closest_widths", "prune_variant", "part_times", "op_profile",
    "bench_settings", "cmd_bench",
]

