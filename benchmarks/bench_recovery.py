"""Which recovery recipe brings a 30 %-pruned llava-small back, with 5 % of the data, and what does each cost?

For each paradigm (layerwise BI, widthwise Taylor) at `--ratio`, prune the teacher once, then recover a
fresh copy with every recipe (what is trained x loss) on the same `--fraction` subset, evaluate on every
benchmark and report AVG % (mean of per-benchmark score ratios against the teacher, x 100), the training
seconds and the seconds per step relative to plain CE in the same run (the cost of distillation).
Goal (the study's): AVG % >= 95 with 5 % of the data at <= 30 % compression.

    HF_HUB_OFFLINE=1 python benchmarks/bench_recovery.py TEACHER [--recipes lora:ce,full:ce+hidden]
        [--ratio 0.3] [--fraction 0.05] [--epochs 1] [--lr 2e-4] [--work DIR] [--out FILE.json]

Every finished (paradigm, recipe) is cached under --work/<teacher folder name>, so an interrupted run continues
where it stopped and another teacher starts afresh.
"""

import argparse
import copy
import json
import time
from pathlib import Path

from studylib import data as D
from studylib import evaluation as E
from studylib import models as M
from studylib import pruning as P
from studylib import recovery as R

RECIPES = ["projector:ce", "lora:ce", "full:ce", "lora:kl", "lora:hidden", "lora:ce+kl", "lora:ce+hidden",
           "lora:ce+hidden+kl", "full:ce+hidden"]
CRITERIA = {"layerwise": "bi", "widthwise": "taylor"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--paradigms", default="layerwise,widthwise")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--fraction", default="0.05")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--work", default="data/checkpoints/bench-recovery")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    teacher, processor = M.load(args.teacher)
    benchmarks = E.load_benchmarks()
    work = Path(args.work) / Path(args.teacher).name  # per teacher: a new teacher never reuses old results
    ref_file = work / "teacher_eval.json"
    if not ref_file.exists():
        work.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(E.evaluate(teacher, processor, benchmarks, "teacher", progress=False).to_json())
    import pandas as pd

    ref = pd.read_json(ref_file)
    data = D.build_dataset("train", 20000, 0)
    rows = []
    for paradigm in args.paradigms.split(","):
        criterion = CRITERIA[paradigm]
        calib = P.calibration_batches(processor, P.default_calib_samples(criterion), 0, n_train=20000)
        pruned = P.prune(teacher, paradigm, criterion, args.ratio, calib)
        for recipe in ["none", *args.recipes.split(",")]:
            key = f"{paradigm}-{args.ratio}-{recipe.replace(':', '-')}-f{args.fraction}-e{args.epochs}-lr{args.lr}"
            done = work / key / "bench.json"
            if done.exists():
                rows.append(json.loads(done.read_text()))
                print(json.dumps(rows[-1]), flush=True)
                continue
            student = copy.deepcopy(pruned.model)
            row = {"paradigm": paradigm, "criterion": criterion, "ratio": args.ratio, "lm_ratio": pruned.plan.lm_ratio,
                   "recipe": recipe, "fraction": args.fraction, "epochs": args.epochs, "lr": args.lr}
            if recipe != "none":
                train, loss = recipe.split(":")
                cfg = R.RecoveryConfig(train=train, loss=loss, data_fraction=R.parse_fraction(args.fraction),
                                       epochs=args.epochs, lr=args.lr, save_steps=0)
                t0 = time.perf_counter()
                result = R.recover(student, teacher, data, cfg, work / key, processor, plan=pruned.plan)
                student = M.load(work / key)[0]
                row |= {"steps": result.metrics["steps"], "train_seconds": round(time.perf_counter() - t0, 1),
                        "seconds_per_step": round(result.metrics["train_seconds"] / result.metrics["steps"], 3),
                        "train_ce_before": result.metrics["train_ce_before"],
                        "train_ce_after": result.metrics["train_ce_after"]}
            table = E.evaluate(student.eval(), processor, benchmarks, key, progress=False)
            rel = E.relative_scores(table, ref)
            row |= {"avg_percent": round(float(rel["relative"].mean()), 2),
                    "per_benchmark": {r.benchmark: round(float(r.relative), 1) for r in rel.itertuples()}}
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(row))
            rows.append(row)
            print(json.dumps(row), flush=True)
    for paradigm in {r["paradigm"] for r in rows}:  # cost of each loss against CE with the same trainable part
        base = {r["recipe"].split(":")[0]: r["seconds_per_step"] for r in rows
                if r["paradigm"] == paradigm and r["recipe"].endswith(":ce")}
        for r in rows:
            if r["paradigm"] == paradigm and r["recipe"] != "none" and r["recipe"].split(":")[0] in base:
                r["step_cost_vs_ce"] = round(r["seconds_per_step"] / base[r["recipe"].split(":")[0]], 2)
    summary = {"teacher": args.teacher, "goal_avg_percent": 95, "rows": rows}
    text = json.dumps(summary, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print("\n| paradigm | recipe | AVG % | s/step | cost vs CE |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['paradigm']} | {r['recipe']} | {r['avg_percent']:.1f} | {r.get('seconds_per_step', '')} | "
              f"{r.get('step_cost_vs_ce', '')} |")


if __name__ == "__main__":
    main()
