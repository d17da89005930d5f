"""`studylib` command line: one subcommand per step of the study.

    studylib data     [--n-train N] [--n-bench N] [--seed S] [--out DIR]
    studylib teacher  --preset NAME --out DIR [--seed S] [--max-steps N] [--stage1-steps N]
    studylib evaluate MODEL [--benchmarks a,b] [--reference REF.json] [--blank-images] --out FILE.json
    studylib study    [--notebooks 00_teacher,...]     (what `make study` runs)
    studylib report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_data(args) -> None:
    from . import data as D

    ds = D.build_dataset("train", args.n_train, args.seed, args.out)
    print(f"train: {len(ds)} examples, fingerprint {ds._fingerprint}")
    for b in D.BENCHMARKS:
        bd = D.build_dataset(b, args.n_bench, args.seed, args.out)
        print(f"{b}: {len(bd)} items, chance {D.chance_level(bd):.3f}")


def cmd_teacher(args) -> None:
    from . import teacher as T

    cfg = T.TeacherConfig(preset=args.preset, seed=args.seed, n_train=args.n_train, batch_size=args.batch_size,
                          **({"max_steps": args.max_steps} if args.max_steps is not None else {}),
                          **({"stage1_steps": args.stage1_steps} if args.stage1_steps is not None else {}))
    metrics = T.train_teacher(cfg, args.out, args.cache)
    print(json.dumps(metrics, indent=1))


def cmd_evaluate(args) -> None:
    import pandas as pd

    from . import evaluation as E
    from . import models as M

    names = _csv(args.benchmarks) if args.benchmarks else None
    benchmarks = E.load_benchmarks(names, args.n, args.seed, args.cache)  # validates names before loading
    model, processor = M.load(args.model)
    table = E.evaluate(model, processor, benchmarks, model_name=str(args.model), blank_images=args.blank_images)
    result = {"model": str(args.model), "summary": E.summary(table), "table": table.to_dict(orient="records")}
    if args.reference:
        ref = pd.DataFrame(json.loads(Path(args.reference).read_text())["table"])
        rel = E.relative_scores(table, ref)
        result["relative"] = rel.to_dict(orient="records")
        result["avg_percent"] = float(rel["relative"].mean())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(E.primary(table)[["benchmark", "score", "chance"]].to_string(index=False))
    if "avg_percent" in result:
        print(f"AVG % = {result['avg_percent']:.2f}")


def cmd_study(args) -> None:
    from . import report as R

    for name in args.notebooks:
        print(f"running notebooks/{name}.ipynb ...", flush=True)
        R.run_notebook(name, {})
    index = R.build_report()
    print(f"report: {index}")


def cmd_report(args) -> None:
    from . import report as R

    print(f"report: {R.build_report()}")


def build_parser() -> argparse.ArgumentParser:
    from .models import PRESETS

    p = argparse.ArgumentParser(prog="studylib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="generate and cache the training mix and the benchmarks")
    d.add_argument("--n-train", type=int, default=20000)
    d.add_argument("--n-bench", type=int, default=500)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default=None, help="cache folder (default data/cache)")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("teacher", help="train an embedded LLaVA teacher (two stages)")
    t.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-steps", type=int, default=None, help="stage-2 steps")
    t.add_argument("--stage1-steps", type=int, default=None, help="stage-1 (caption) steps")
    t.add_argument("--n-train", type=int, default=20000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--cache", default=None, help="data cache folder")
    t.set_defaults(func=cmd_teacher)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on the benchmarks")
    e.add_argument("model")
    e.add_argument("--benchmarks", default=None, help="comma-separated (default: all)")
    e.add_argument("--reference", default=None, help="a JSON written by `studylib evaluate` for the reference model")
    e.add_argument("--blank-images", action="store_true", help="replace every image by a black one")
    e.add_argument("--n", type=int, default=500, help="items per benchmark")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--cache", default=None)
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("study", help="run the default study notebooks and render the report")
    s.add_argument("--notebooks", type=_csv, default=["00_teacher"], help="comma-separated notebook names")
    s.set_defaults(func=cmd_study)

    r = sub.add_parser("report", help="render executed notebooks under reports/runs to HTML pages")
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"studylib {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
