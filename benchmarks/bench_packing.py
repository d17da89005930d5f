"""Padded against packed (padding-free) teacher batches: seconds per training step and tokens per step.

Takes random batches of the training mix (as the teacher's Trainer draws them), collates each one padded
(`data.Collator`) and packed into rows of each capacity (`data.PackingCollator`), and times forward +
backward of a freshly built model on every variant (no update, so every variant sees the same weights).
Runs are interleaved (each batch visits the variants in a rotated order) after a warm-up; the median per
variant and its ratio to the padded median of the same run are printed as JSON, with the largest loss
difference between a packed and the padded batch.

    HF_HUB_OFFLINE=1 python benchmarks/bench_packing.py [--preset llava-small] [--batches 12] [--capacities 0,160,256]

Capacity 0 means "the longest example of the batch" (the narrowest packing).
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch

from studylib import collate as C, data as D
from studylib import models as M


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llava-small")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--capacities", default="0,160,256")
    args = ap.parse_args()
    processor = M.build_processor(args.preset)
    model = M.build_model(args.preset, processor, seed=0)
    data = C.tokenize_dataset(D.build_dataset("train", 20000, 0).select(range(4000)), processor)
    collators = {"padded": C.Collator(processor)}
    collators.update({f"packed-{c or 'longest'}": C.PackingCollator(processor, c) for c in
                      (int(x) for x in args.capacities.split(","))})
    names = list(collators)
    rng = np.random.default_rng(0)
    times = {n: [] for n in names}
    tokens = {n: [] for n in names}
    loss_gap = 0.0
    for b in range(args.batches + 1):  # batch 0 warms up
        batch = [data[int(i)] for i in rng.choice(len(data), args.batch_size, replace=False)]
        losses = {}
        for name in names[b % len(names):] + names[:b % len(names)]:
            inputs = collators[name](batch)
            t0 = time.perf_counter()
            loss = model(**inputs).loss
            loss.backward()
            losses[name] = loss.item()
            model.zero_grad()
            elapsed = time.perf_counter() - t0
            if b:
                times[name].append(elapsed)
                tokens[name].append(inputs["input_ids"].numel())
        loss_gap = max(loss_gap, *(abs(v - losses["padded"]) for v in losses.values()))
    base = statistics.median(times["padded"])
    print(json.dumps({
        "preset": args.preset, "batch_size": args.batch_size, "batches": args.batches, "threads": torch.get_num_threads(),
        "median_seconds": {n: round(statistics.median(times[n]), 3) for n in names},
        "speedup_vs_padded": {n: round(base / statistics.median(times[n]), 2) for n in names},
        "mean_tokens_per_step": {n: round(float(np.mean(tokens[n]))) for n in names},
        "max_loss_difference_vs_padded": loss_gap,
    }, indent=1))


if __name__ == "__main__":
    main()
