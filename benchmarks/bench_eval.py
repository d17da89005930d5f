"""How long does evaluating a checkpoint on every benchmark take? (goal for the llava-small teacher: <= 60 s)

    HF_HUB_OFFLINE=1 python benchmarks/bench_eval.py CHECKPOINT [--repeats 3] [--n 500]

Loads the checkpoint once, runs the full evaluation `--repeats` times after one warm-up batch, and
prints one JSON object: per-run seconds, their median, and the items evaluated.
"""

import argparse
import json
import statistics
import time

from studylib import evaluation as E
from studylib import models as M


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    model, processor = M.load(args.checkpoint)
    benchmarks = E.load_benchmarks(n=args.n)
    E.generate_answers(model, processor, benchmarks["count"].select(range(64)), progress=False)  # warm-up
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        table = E.evaluate(model, processor, benchmarks, progress=False)
        runs.append(time.perf_counter() - t0)
    per_benchmark = table.drop_duplicates("benchmark").set_index("benchmark")["seconds"].round(2).to_dict()
    print(json.dumps({"checkpoint": args.checkpoint, "items": sum(len(d) for d in benchmarks.values()),
                      "seconds": [round(r, 2) for r in runs], "median_seconds": round(statistics.median(runs), 2),
                      "last_run_per_benchmark": per_benchmark, "goal_seconds": 60}, indent=1))


if __name__ == "__main__":
    main()
