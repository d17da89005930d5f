"""What does distillation cost per training step, against plain CE, on the same pruned model and batches?

Builds a 30 %-layerwise-pruned student of the given teacher, then for each (trained part, loss) times
`Trainer.training_step` (forward, teacher forward for KD losses, backward) on the same fixed batches.
Runs are interleaved (each repeat loops over every recipe in a rotated order) after a warm-up step, and
the median seconds per step is compared with CE for the same trained part, in the same run.

    HF_HUB_OFFLINE=1 python benchmarks/bench_kd_cost.py TEACHER [--repeats 5] [--steps 3] [--batch-size 32]
"""

import argparse
import copy
import json
import statistics
import time

import torch

from studylib import collate as C, data as D
from studylib import models as M
from studylib import pruning as P
from studylib import recovery as R
from studylib.teacher import training_args

RECIPES = ["projector:ce", "lora:ce", "full:ce", "lora:kl", "lora:hidden", "lora:ce+kl", "lora:ce+hidden",
           "lora:ce+hidden+kl", "full:ce+hidden"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("teacher")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    teacher, processor = M.load(args.teacher)
    calib = P.calibration_batches(processor, 50, 0, n_train=20000)
    pruned = P.prune(teacher, "layerwise", "bi", 0.3, calib)
    data = C.tokenize_dataset(D.build_dataset("train", 20000, 0).select(range(args.steps * args.batch_size)), processor)
    collate = C.Collator(processor)
    batches = [collate([data[i] for i in range(s * args.batch_size, (s + 1) * args.batch_size)])
               for s in range(args.steps)]
    trainers = {}
    for recipe in RECIPES:
        train, loss = recipe.split(":")
        cfg = R.RecoveryConfig(train=train, loss=loss)
        pairs = R.check_pair(pruned.model, teacher, cfg, pruned.plan)
        model = R.prepare_student(copy.deepcopy(pruned.model), cfg)
        targs = training_args(f"/tmp/bench-kd/{recipe}", steps=10, batch_size=args.batch_size, lr=cfg.lr, seed=0)
        tr = R.trainer_class()(model=model, args=targs, train_dataset=data, data_collator=collate,
                               teacher=teacher if R.uses_teacher(loss) else None, cfg=cfg, pairs=pairs)
        tr.create_optimizer_and_scheduler(num_training_steps=10)
        tr.current_gradient_accumulation_steps = 1  # set by Trainer.train; we time training_step alone
        tr.training_step(tr.model, dict(batches[0]))  # warm-up
        trainers[recipe] = tr
    times = {r: [] for r in RECIPES}
    for rep in range(args.repeats):
        order = RECIPES[rep % len(RECIPES):] + RECIPES[:rep % len(RECIPES)]
        for recipe in order:
            tr = trainers[recipe]
            t0 = time.perf_counter()
            for b in batches:
                tr.training_step(tr.model, dict(b))
            times[recipe].append((time.perf_counter() - t0) / len(batches))
    med = {r: statistics.median(v) for r, v in times.items()}
    rows = []
    for r in RECIPES:
        base = med[f"{r.split(':')[0]}:ce"] if f"{r.split(':')[0]}:ce" in med else None
        rows.append({"recipe": r, "median_s_per_step": round(med[r], 3),
                     "spread": [round(min(times[r]), 3), round(max(times[r]), 3)],
                     "vs_ce_same_trained_part": round(med[r] / base, 2) if base else None,
                     "vs_lora_ce": round(med[r] / med["lora:ce"], 2)})
    print(json.dumps({"teacher": args.teacher, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                      "repeats": args.repeats, "rows": rows}, indent=1))
    print("\n| recipe | s/step (median) | vs CE, same trained part | vs lora:ce |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['recipe']} | {row['median_s_per_step']} | {row['vs_ce_same_trained_part']} | {row['vs_lora_ce']} |")


if __name__ == "__main__":
    main()
