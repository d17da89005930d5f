"""How long does a sweep take, and a rerun of the finished sweep? (goals: smoke <= 3 min; default <= 40 min
with the teacher cached, <= 60 min from a clean cache; a rerun <= 30 s with nothing recomputed)

    HF_HUB_OFFLINE=1 python benchmarks/bench_sweep.py configs/smoke.yaml [--out DIR] [--jobs N] [--reruns 3]

Runs `studylib sweep CONFIG --out DIR` as a user would (a subprocess, report included), then reruns it
`--reruns` times and checks that no cell ran again. DIR defaults to a fresh temporary folder, so the cells are
computed from scratch (the data cache and cached checkpoints are shared as in `make study`; pass
`--clean-checkpoints` to give the run its own, empty checkpoint folder: the "clean cache" case). Prints one
JSON object: the first run's seconds, each rerun's seconds and their median, the per-cell seconds from the
run records, and whether each goal was met.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"smoke.yaml": 180, "default.yaml": 40 * 60}


def run(config: Path, out: Path, jobs: int) -> tuple[float, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "studylib.cli", "sweep", str(config), "--out", str(out),
                           "--jobs", str(jobs)], env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--out", default=None, help="report folder (default: a new temporary folder)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--reruns", type=int, default=3)
    ap.add_argument("--clean-checkpoints", action="store_true",
                    help="an empty checkpoint folder for this run (the teacher is trained again)")
    args = ap.parse_args()
    config = Path(args.config).resolve()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    if args.clean_checkpoints:  # a copy of the config whose cells write checkpoints under `out`
        cfg = yaml.safe_load(config.read_text())
        cfg["defaults"] = {**(cfg.get("defaults") or {}), "checkpoint_root": str(out / "checkpoints")}
        config = out / config.name
        out.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(cfg))
    first, stdout = run(config, out, args.jobs)
    reruns = []
    for _ in range(args.reruns):
        seconds, again = run(config, out, args.jobs)
        assert any(line.startswith("done 0,") for line in again.splitlines()), f"a rerun computed cells:\n{again}"
        reruns.append(seconds)
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))
               if not p.name.startswith(".") and not p.name.endswith(".failed.json")]
    cells = {r["run_id"]: r["seconds"] for r in records if isinstance(r, dict) and "run_id" in r}
    goal = GOALS.get(Path(args.config).name)
    print(json.dumps({
        "config": args.config, "out": str(out), "jobs": args.jobs, "clean_checkpoints": args.clean_checkpoints,
        "cells": len(cells), "first_run_seconds": round(first, 1),
        "first_run_goal_seconds": goal, "first_run_goal_met": None if goal is None else first <= goal,
        "rerun_seconds": [round(s, 1) for s in reruns],
        "rerun_median_seconds": round(statistics.median(reruns), 1) if reruns else None,
        "rerun_goal_met": bool(reruns) and statistics.median(reruns) <= 30,
        "cell_seconds": cells, "sum_of_cell_seconds": round(sum(cells.values()), 1),
    }, indent=1))


if __name__ == "__main__":
    main()
