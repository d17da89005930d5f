"""Are pruned models faster, and how close to the ideal? (the goal measurement of studylib.efficiency)

Loads a llava-small teacher, prunes it layerwise (Block Influence, 30 % of LM parameters) and widthwise
(Taylor, 30 %, kept MLP neurons rounded to multiples of 1, 8, 64, 128 where such widths can meet the ratio),
and measures every model in one process, interleaved (`studylib.efficiency.measure`): prefill latency with an
image at batch 1 / 8 / 32, greedy decode tokens/s, throughput, peak memory; parameters and FLOPs per token.

Goals (CPU fp32, batch-8 prefill, one run): layerwise 30 % reaches >= 90 % of its ideal speedup, widthwise 30 %
with round_to 8 >= 80 %; ideal = LM FLOPs/token ratio, share of the ideal = 100 * speedup / ideal.

    HF_HUB_OFFLINE=1 python benchmarks/bench_efficiency.py data/checkpoints/teacher-llava-small-s0-<hash> \\
        [--threads 1] [--repeats 15] [--round-to 1,8,64,128] [--quality] [--profile] [--out FILE.json]

--profile explains a miss: time per part (vision tower, projector, embeddings, decoder blocks, final norm,
LM head, the rest) and the dominating operators (torch.profiler) at the goal batch size. --quality evaluates
the teacher and every pruned model on the benchmarks (AVG % relative to the teacher, no recovery).
Prints a JSON object, then markdown tables.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from studylib import efficiency as F  # noqa: E402
from studylib import evaluation as E  # noqa: E402
from studylib import models as M  # noqa: E402
from studylib import pruning as P  # noqa: E402

GOALS = {"layerwise-bi-30": 90.0, "widthwise-taylor-30-r8": 80.0}  # minimum share of the ideal, %


def prune_all(model, processor, ratio: float, round_tos: list[int], seed: int, n_train: int,
              cache) -> tuple[dict, dict]:
    """name -> pruned model, and name -> a description of the pruning (or why it was infeasible)."""
    models, notes = {"teacher": model}, {"teacher": {"lm_params": P.count_params(model)[0]}}
    calib_bi = P.calibration_batches(processor, P.default_calib_samples("bi"), seed, n_train=n_train, cache_dir=cache)
    calib_taylor = P.calibration_batches(processor, P.default_calib_samples("taylor"), seed, n_train=n_train,
                                         cache_dir=cache)
    pct = round(100 * ratio)
    res = P.prune(model, "layerwise", "bi", ratio, calib_bi, seed=seed)
    models[f"layerwise-bi-{pct}"] = res.model
    notes[f"layerwise-bi-{pct}"] = {"lm_ratio": res.plan.lm_ratio, "kept_layers": res.plan.kept_layers}
    scores = P.compute_scores(model, "widthwise", "taylor", calib_taylor, seed=seed)
    for k in round_tos:
        name = f"widthwise-taylor-{pct}-r{k}"
        note = {"round_to": k}
        try:
            res = P.prune(model, "widthwise", "taylor", ratio, None, round_to=k, scores=scores)
        except ValueError as e:  # no width that is a multiple of k meets the ratio within 1 point: say so, and
            note["infeasible"] = str(e)  # measure the widths closest to it instead (same heads for q and kv)
            widths = F.closest_widths(model, scores, ratio, k)
            if widths is None:
                notes[name] = note
                continue
            res = P.prune(model, "widthwise", "taylor", None, None, widths=widths, scores=scores)
            note["instead"] = f"explicit widths {widths}, the closest LM ratio with neurons a multiple of {k}"
        models[name] = res.model
        widths = sorted({(b.num_heads, b.num_kv_heads, b.intermediate_size) for b in P.describe_lm(res.model).blocks})
        notes[name] = {**note, "lm_ratio": res.plan.lm_ratio, "block_widths (heads, kv heads, neurons)": widths}
    return models, notes


def mlp_times(tokens: int, hidden: int, widths: list[int], repeats: int = 7, calls: int = 30) -> list[dict]:
    """Median microseconds of an MLP-shaped pair of matmuls (tokens x hidden -> width -> hidden) per width: does
    an odd width cost more than its FLOPs?"""
    x = torch.randn(tokens, hidden)
    rows = []
    for width in widths:
        w1, w2 = torch.randn(width, hidden), torch.randn(hidden, width)
        for _ in range(calls):
            torch.nn.functional.linear(torch.nn.functional.linear(x, w1), w2)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(calls):
                torch.nn.functional.linear(torch.nn.functional.linear(x, w1), w2)
            times.append((time.perf_counter() - t) / calls * 1e6)
        us = statistics.median(times)
        rows.append({"width": width, "us": us, "us_per_neuron": us / width})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="the llava-small teacher checkpoint folder")
    parser.add_argument("--ratio", type=float, default=0.30)
    parser.add_argument("--round-to", default="1,8,64,128")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--goal-batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a 2-core machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=20000, help="the teacher's instruction mix (calibration)")
    parser.add_argument("--cache", default=None, help="data cache folder")
    parser.add_argument("--quality", action="store_true", help="evaluate every model (AVG %% vs the teacher)")
    parser.add_argument("--n-bench", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="time per model part and top operators")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = F.parse_batch_sizes(args.batch_sizes)
    if args.goal_batch_size not in sizes:
        raise SystemExit(f"--goal-batch-size {args.goal_batch_size} must be one of --batch-sizes {sizes}")

    t0 = time.time()
    model, processor = M.load(args.checkpoint)
    models, notes = prune_all(model, processor, args.ratio, [int(k) for k in args.round_to.split(",")], args.seed,
                              args.n_train, args.cache)
    prune_s = time.time() - t0

    t0 = time.time()
    table, runs = F.measure_runs(models, processor, sizes, args.new_tokens, "cpu", args.repeats, args.warmup,
                                 seed=args.seed)
    measure_s = time.time() - t0
    speed = F.speedups(table, "teacher", runs)  # paired: the median of the per-repeat ratios
    goal_rows = speed[(speed["metric"] == "prefill_ms") & (speed["batch_size"] == args.goal_batch_size)]
    goals = []
    for name, minimum in GOALS.items():
        row = goal_rows[goal_rows["model"] == name]
        share = float(row["share_of_ideal"].iloc[0]) if len(row) else None
        goal = f"share of ideal >= {minimum:.0f} % (batch {args.goal_batch_size} prefill)"
        goals.append({"model": name, "goal": goal,
                      "measured": share, "met": share is not None and share >= minimum})

    result = {
        "checkpoint": args.checkpoint, "threads": torch.get_num_threads(), "device": "cpu", "dtype": "float32",
        "torch": torch.__version__, "batch_sizes": sizes, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "warmup": args.warmup, "memory_method": F.memory_method("cpu"), "load_and_prune_s": round(prune_s, 1),
        "measure_s": round(measure_s, 1), "pruning": notes, "goals": goals,
        "table": F.to_records(table), "speedups": F.to_records(speed), "runs": F.to_records(runs),
    }

    profiles = {}
    if args.profile:
        inputs = F.benchmark_inputs(processor, args.goal_batch_size, args.seed)
        for name in ["teacher", *GOALS]:
            if name in models:
                profiles[name] = {"parts": F.part_times(models[name], inputs, repeats=args.repeats),
                                  "ops": F.op_profile(models[name], inputs, repeats=3, top=10),
                                  "flops": F.counted_flops(models[name], inputs)}
        result["profile"] = {n: {"parts": F.to_records(p["parts"]), "ops": F.to_records(p["ops"]), "flops": p["flops"]}
                             for n, p in profiles.items()}

    if args.profile:  # the MLP of the pruned blocks at the widths the round_to variants chose, and the full width
        info = P.describe_lm(model)
        chosen = {b.intermediate_size for m in models.values() for b in P.describe_lm(m).blocks}
        tokens = args.goal_batch_size * int(F.benchmark_inputs(processor, args.goal_batch_size)["input_ids"].shape[1])
        result["mlp_matmul"] = mlp_times(tokens, info.text_config.hidden_size, sorted(chosen | {320, 317, 319}))

    quality = None
    if args.quality:
        benchmarks = E.load_benchmarks(n=args.n_bench, seed=args.seed, cache_dir=args.cache)
        reference = E.evaluate(model, processor, benchmarks, model_name="teacher", progress=False)
        scored = [b for b in benchmarks if E.summary(reference)[b] > 0]
        rows = []
        for name, m in models.items():
            table_q = reference if name == "teacher" else E.evaluate(m, processor, benchmarks, model_name=name,
                                                                    progress=False)
            rel = E.relative_scores(table_q[table_q["benchmark"].isin(scored)], reference)
            rows.append({"model": name, "avg_percent": float(rel["relative"].mean()),
                         "image_mean": E.summary(table_q)["image_mean"]})
        quality = rows
        result["quality"] = rows

    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))

    F.print_speed_tables(table, speed, sizes)
    mem = table[table["metric"].isin(["peak_memory_mb", "activation_mb"])
                & (table["batch_size"] == args.goal_batch_size)]
    print(f"\n### memory at batch {args.goal_batch_size} ({result['memory_method']})\n")
    print(F.markdown(mem.pivot(index="model", columns="metric", values="median").reset_index()))
    print("\n### goals\n")
    print(F.markdown(pd.DataFrame(goals)))
    for name, note in notes.items():
        if "infeasible" in note:
            print(f"\n{name}: {note['infeasible']}; measured instead: {note.get('instead', 'nothing')} "
                  f"(LM ratio {note.get('lm_ratio', float('nan')):.3f})")
    if quality:
        print("\n### accuracy without recovery (AVG % relative to the teacher)\n")
        print(F.markdown(pd.DataFrame(quality)))
    if "mlp_matmul" in result:
        print("\n### MLP matmuls alone (tokens x hidden -> width -> hidden), microseconds\n")
        print(F.markdown(pd.DataFrame(result["mlp_matmul"])))
    for name, p in profiles.items():
        print(f"\n### where the time goes: {name}, batch {args.goal_batch_size} prefill\n")
        print(F.markdown(p["parts"]))
        print()
        print(F.markdown(p["ops"]))


if __name__ == "__main__":
    main()
