"""The study's steps, as the notebooks call them: load the teacher with its reference scores, scores
relative to it, importance, pruned copies evaluated, and the tables and metrics record of the pruning
notebooks (recovering a pruned copy is `recovery.recover_and_evaluate`, a variant for speed measurements
`efficiency.prune_variant`).

Every pruned model is measured against the unpruned teacher on the same benchmarks:
relative_b = 100 * s_b(model) / s_b(teacher), and AVG % = mean_b relative_b over the benchmarks the teacher
scores above 0 (a benchmark it never answers right cannot be scored relative to it).
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import benchmarks as B
from . import data as D
from . import evaluation as E
from . import files
from . import intervals as I
from . import llava_json
from . import models as M
from . import pruning as P
from . import teacher as T


# ----------------------------------------------------------------------------------------------
# The teacher: the unpruned model, its data and its reference scores


@dataclass
class Teacher:
    """The unpruned model, the data it is measured and calibrated on, and its reference scores."""

    dir: str
    model: torch.nn.Module = field(repr=False)
    processor: object = field(repr=False)
    benchmarks: dict = field(repr=False)
    train_data: object = field(repr=False)  # the instruction mix (a datasets.Dataset): calibration and recovery
    reference: pd.DataFrame = field(repr=False)  # the teacher's evaluation table
    items: dict = field(repr=False)  # its per-item results, {benchmark: [1 or 0 per item]} (embedded benchmarks)
    scores: dict  # primary score per benchmark
    scored: list  # benchmarks that count in AVG % (teacher score > 0)
    chance: dict  # a blind guesser's score per benchmark
    chance_avg: float  # a blind guesser's AVG %
    eval_seconds: float
    home: str  # where results about this model are cached (its folder, or data/checkpoints/hub/<id>)
    seed: int
    n_train: int
    cache_dir: str | None
    checkpoint_root: str
    device: str
    dtype: str

    @property
    def num_layers(self) -> int:
        return len(P.describe_lm(self.model).blocks)

    @property
    def excluded(self) -> list:
        return sorted(set(self.benchmarks) - set(self.scored))


def load_teacher(*, teacher_dir: str = "", seed: int = 0, n_train: int = 20000, n_bench: int = 500,
                 checkpoint_root: str = "", cache_dir: str = "", trust_remote_code: bool = False,
                 real_benchmarks: str = "", train_json: str = "", image_folder: str = "", device: str = "cpu",
                 dtype: str = "float32") -> Teacher:
    """Load the teacher (`teacher_dir`, a checkpoint folder or hub id; empty: the default teacher for `seed`
    and `n_train`, `teacher.TeacherConfig`, trained once and cached), its benchmarks (the embedded suite, or
    `real_benchmarks` as `studylib.benchmarks.load_many` reads them), its instruction data (the embedded mix,
    or LLaVA-format `train_json`) and its reference scores (evaluated once, cached in its folder)."""
    cache = cache_dir or None
    folder = teacher_dir or str(T.ensure_teacher(T.TeacherConfig(seed=seed, n_train=n_train), checkpoint_root or None,
                                                 cache))
    model, processor = M.load(folder, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    model.to(device)
    root = checkpoint_root or T.default_checkpoint_root()
    home = str(M.results_home(folder, root))
    if real_benchmarks:
        benchmarks = B.load_many(real_benchmarks, limit=n_bench or None, seed=seed, cache_dir=cache)
    else:
        benchmarks = E.load_benchmarks(n=n_bench, seed=seed, cache_dir=cache)
    train_data = (llava_json.load(train_json, image_folder or None) if train_json
                  else D.build_dataset("train", n_train, seed, cache))
    t0 = time.time()
    reference, items = E.evaluate_cached(model, processor, benchmarks, home, model_name="teacher", items=True,
                                         progress=False)
    eval_seconds = time.time() - t0
    scores = E.summary(reference)
    scored = [b for b in benchmarks if scores[b] > 0]
    chance = {b: E.chance_level(b, d) for b, d in benchmarks.items()}
    chance_avg = float(np.mean([100 * chance[b] / scores[b] for b in scored])) if scored else float("nan")
    return Teacher(folder, model, processor, benchmarks, train_data, reference, items, scores, scored, chance, chance_avg,
                   eval_seconds, home, seed, n_train, cache, str(root), device, dtype)


# The parameters the pruning and recovery notebooks declare to load and measure the teacher (load_teacher's).
TEACHER_PARAMETERS = tuple(inspect.signature(load_teacher).parameters)


def describe(teacher: Teacher) -> pd.DataFrame:
    """Print what the teacher is and return its primary scores with their chance levels."""
    lm_params, all_params = P.count_params(teacher.model)
    print(f"teacher {teacher.dir}: {teacher.num_layers} decoder blocks, {lm_params:,} LM of {all_params:,} "
          f"parameters; evaluated in {teacher.eval_seconds:.1f} s")
    if teacher.excluded:
        print(f"AVG % leaves out {teacher.excluded}: the teacher scores 0 there")
    print(f"a blind guesser would reach AVG % = {teacher.chance_avg:.1f}")
    return E.primary(teacher.reference)[["benchmark", "score", "chance"]]


def teacher_goals(scores: dict, blank_scores: dict, chance: dict) -> pd.DataFrame:
    """The embedded teacher's goals, measured: image mean in [0.70, 0.95]; every benchmark >= chance + 0.20;
    with blank images every image benchmark <= chance + 0.10 (a teacher that reads the image)."""
    rows = [{"goal": "mean over image benchmarks in [0.70, 0.95]", "measured": scores["image_mean"],
             "met": 0.70 <= scores["image_mean"] <= 0.95}]
    rows += [{"goal": f"{b} >= chance {chance[b]:.2f} + 0.20", "measured": scores[b],
              "met": scores[b] >= chance[b] + 0.20} for b in chance]
    rows += [{"goal": f"{b}, blank images, <= chance {chance[b]:.2f} + 0.10", "measured": blank_scores[b],
              "met": blank_scores[b] <= chance[b] + 0.10} for b in D.IMAGE_BENCHMARKS if b in blank_scores]
    return pd.DataFrame(rows)

# ----------------------------------------------------------------------------------------------
# Scores relative to the teacher


def relative(teacher: Teacher, table: pd.DataFrame) -> pd.DataFrame:
    """Per scored benchmark: relative = 100 * score / teacher's score (`evaluation.relative_scores`)."""
    if not teacher.scored:  # AVG % is undefined (only for an untrained smoke-test teacher)
        return pd.DataFrame(columns=["model", "benchmark", "score", "reference", "relative"], dtype=float)
    return E.relative_scores(table[table["benchmark"].isin(teacher.scored)], teacher.reference)


def mean_relative(rel: pd.DataFrame) -> float:
    """AVG % of a `relative` table: the mean of its relative scores (NaN for an empty table)."""
    return float(rel["relative"].mean()) if len(rel) else float("nan")


def avg_percent(teacher: Teacher, table: pd.DataFrame) -> float:
    """AVG % = mean over the scored benchmarks of 100 * s_b / s_b(teacher); NaN when none is scored."""
    return mean_relative(relative(teacher, table))


def interval(teacher: Teacher, items: dict) -> I.Interval:
    """AVG % of a model's per-item results relative to the teacher's, with its 95 % paired-bootstrap interval
    over the items of the scored benchmarks (`intervals.interval`); NaN where a scored benchmark has no
    per-item results (a real benchmark)."""
    if not teacher.scored or any(b not in items or b not in teacher.items for b in teacher.scored):
        return I.Interval(float("nan"), float("nan"), float("nan"))
    return I.interval({b: items[b] for b in teacher.scored}, {b: teacher.items[b] for b in teacher.scored},
                      seed=teacher.seed)


def by_benchmark(rel: pd.DataFrame) -> dict:
    """{benchmark: relative score} of a `relative` table (what the metrics records hold)."""
    return rel.set_index("benchmark")["relative"].to_dict()

# ----------------------------------------------------------------------------------------------
# Importance: calibration samples and every criterion's scores, computed once


def calibration(teacher: Teacher, criterion: str, n: int = 0, seed: int | None = None) -> list[dict]:
    """`n` calibration samples (0: the criterion's default) drawn with `seed` (None: the teacher's) from the
    teacher's instruction data, as model-input batches (`pruning.calibration_batches`); none for a criterion
    that needs no data."""
    if not P.needs_calibration(criterion):
        return []
    return P.calibration_batches(teacher.processor, n or P.default_calib_samples(criterion),
                                 teacher.seed if seed is None else seed,
                                 cache_dir=teacher.cache_dir, n_train=teacher.n_train, data=teacher.train_data)


def importance(teacher: Teacher, paradigm: str, criteria: list[str], calib: dict[str, list[dict]],
               seed: int | None = None):
    """Scores of every criterion (computed once, reused for every ratio) and the seconds each took.
    `calib[c]`: the calibration batches of criterion c; `seed` (None: the teacher's) seeds the random one."""
    scores, seconds = {}, {}
    for c in criteria:
        t0 = time.time()
        scores[c] = P.compute_scores(teacher.model, paradigm, c, calib[c], seed=teacher.seed if seed is None else seed)
        seconds[c] = time.time() - t0
    return scores, seconds

# ----------------------------------------------------------------------------------------------
# Pruned copies of the teacher, evaluated


@dataclass
class Pruned:
    """A pruned copy of the teacher, its evaluation and its scores relative to the teacher."""

    plan: P.PruningPlan
    model: torch.nn.Module = field(repr=False)
    table: pd.DataFrame = field(repr=False)
    relative: pd.DataFrame = field(repr=False)
    items: dict = field(repr=False)  # per-item results (`evaluation.evaluate_items`)
    interval: I.Interval = None  # AVG % with its 95 % paired-bootstrap interval

    @property
    def avg(self) -> float:
        """AVG % (NaN without scored benchmarks)."""
        return mean_relative(self.relative)


def prune_and_evaluate(teacher: Teacher, scores, ratio: float, name: str = "pruned", **plan_options) -> Pruned:
    """Plan (`pruning.make_plan` with `plan_options`), apply to a copy, check that the copy is exactly what
    the plan says (widths and parameter counts), and evaluate it (cached by the plan)."""
    plan = P.make_plan(teacher.model, scores, ratio, **plan_options)
    model = P.apply_plan(copy.deepcopy(teacher.model), plan)
    blocks = P.describe_lm(model).blocks
    assert [[b.num_heads, b.num_kv_heads, b.intermediate_size] for b in blocks] == P.widths_after(plan)
    assert P.count_params(model) == (plan.lm_params_after, plan.model_params_after)
    table, items = E.evaluate_cached(model, teacher.processor, teacher.benchmarks,
                                     os.path.join(teacher.home, "pruned-evaluations"), model_name=name,
                                     key=json.dumps(plan.to_dict(), sort_keys=True), items=True, progress=False)
    return Pruned(plan, model, table, relative(teacher, table), items, interval(teacher, items))


def layerwise_ratio(teacher: Teacher, ratio: float) -> float:
    """The LM ratio a layerwise plan achieves for a requested `ratio` (whole blocks: the nearest multiple of one
    block). Blocks of one model have one size, so it does not depend on which blocks go; it is computed from
    the `deepest` plan (no data needed)."""
    scores = P.compute_scores(teacher.model, "layerwise", "deepest", [], seed=0)
    return P.make_plan(teacher.model, scores, ratio).lm_ratio


def matched_ratios(teacher: Teacher, ratios: list[float], scores, **plan_options) -> dict[float, float]:
    """{requested ratio: `layerwise_ratio`} for every ratio that widthwise pruning (with `scores` and
    `plan_options`, `pruning.make_plan`'s) can reach; the others are named and left out."""
    out = {}
    for r in ratios:
        m = layerwise_ratio(teacher, r)
        try:
            P.make_plan(teacher.model, scores, m, **plan_options)
            out[r] = m
        except ValueError as e:  # beyond what the candidate blocks can lose
            print(f"no widthwise model at layerwise's LM ratio {m:.1%} (requested {r:.0%}): {e}")
    return out


def prune_one(teacher: Teacher, paradigm: str, criterion: str, ratio: float, calib_samples: int = 0,
              calib_seed: int | None = None, match_layerwise: bool = False, **plan_options) -> Pruned:
    """One pruned model: the criterion's scores on its calibration samples (drawn with `calib_seed`; None: the
    teacher's seed), then `prune_and_evaluate` at `ratio`, or with `match_layerwise` (widthwise) at the ratio a
    layerwise plan achieves for it (`layerwise_ratio`), so that the paradigms are compared at one LM ratio."""
    scores = P.compute_scores(teacher.model, paradigm, criterion,
                              calibration(teacher, criterion, calib_samples, calib_seed),
                              seed=teacher.seed if calib_seed is None else calib_seed)
    if match_layerwise and paradigm == "widthwise":
        ratio = layerwise_ratio(teacher, ratio)
    pruned = prune_and_evaluate(teacher, scores, ratio, **plan_options)
    plan = pruned.plan
    print(f"{paradigm} / {criterion}: requested {ratio:.0%}, achieved LM ratio {plan.lm_ratio:.1%} "
          f"({plan.lm_params_before:,} -> {plan.lm_params_after:,} LM parameters); AVG % without recovery "
          f"{pruned.avg:.1f}")
    return pruned


def prune_grid(teacher: Teacher, scores: dict, points: list[tuple[str, float]], **plan_options) -> dict:
    """{(criterion, requested ratio): Pruned} for every point, each planned from `scores[criterion]`."""
    t0 = time.time()
    results = {(c, r): prune_and_evaluate(teacher, scores[c], r, name=f"{c} {r:.0%}", **plan_options)
               for c, r in dict.fromkeys(points)}
    print(f"{len(results)} pruned models evaluated in {time.time() - t0:.0f} s")
    return results

# ----------------------------------------------------------------------------------------------
# Tables, checks and the metrics record of the pruning notebooks


def plan_summary(plan: P.PruningPlan) -> dict:
    """The ratios of a plan and what it keeps (blocks for layerwise, widths for widthwise)."""
    kept = {"kept_layers": plan.kept_layers} if plan.paradigm == "layerwise" else {
        "widths_after": P.widths_after(plan)}
    return {"requested_ratio": plan.requested_ratio, "lm_ratio": plan.lm_ratio, "model_ratio": plan.model_ratio,
            **kept}


def summary_row(teacher: Teacher, criterion: str, pruned: Pruned) -> dict:
    """One table row of a pruned model: its ratios and AVG %, plus the blocks removed (layerwise) or the
    per-block ratio and the heads and neurons kept in the first pruned block (widthwise)."""
    plan = pruned.plan
    row = {"criterion": criterion, "requested": plan.requested_ratio, "achieved LM ratio": plan.lm_ratio,
           "whole-model ratio": plan.model_ratio}
    if plan.paradigm == "layerwise":
        row["blocks removed"] = [i for i in range(plan.num_layers) if i not in plan.kept_layers]
    else:
        blocks = P.describe_lm(teacher.model).blocks
        first = plan.layers[0]
        (q, _, m), (q0, _, m0) = P.widths_after(plan)[first], plan.widths_before[first]
        candidate_params = sum(sum(p.numel() for p in blocks[i].layer.parameters()) for i in plan.layers)
        row.update({"per-block ratio": (plan.lm_params_before - plan.lm_params_after) / candidate_params,
                    "heads kept": f"{q}/{q0}", "neurons kept": f"{m}/{m0}"})
    return {**row, "AVG %": pruned.avg, "AVG % lo": pruned.interval.lo, "AVG % hi": pruned.interval.hi}


def ratio_table(teacher: Teacher, results: dict, criterion: str, ratios: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`summary_row` of `criterion` at every ratio, and its per-benchmark relative scores with the achieved
    LM ratio (column "ratio")."""
    rows = pd.DataFrame([summary_row(teacher, criterion, results[criterion, r]) for r in ratios])
    per_benchmark = pd.concat([results[criterion, r].relative.assign(ratio=results[criterion, r].plan.lm_ratio)
                               for r in ratios])
    return rows, per_benchmark


def pruning_metrics(teacher: Teacher, results: dict, criterion: str, ratios: list, compare_ratio: float,
                    criteria: list[str], matched: dict | None = None) -> dict:
    """The part of notebooks 01 and 02's metrics record that the report reads: AVG % and per-benchmark
    relative scores at every ratio (for `criterion`) and for every criterion at `compare_ratio` (with each
    one's paired difference to `random` there, `minus_random`), and the plans. `matched`: {requested ratio:
    the LM ratio a layerwise plan achieves for it} that `criterion` was also pruned to (`layerwise_ratio`);
    their per_ratio entries say `matched_to` the requested ratio."""
    matched = matched or {}
    entry = lambda r: {**plan_summary(results[criterion, r].plan), "avg_percent": results[criterion, r].avg,
                       "avg_percent_lo": results[criterion, r].interval.lo,
                       "avg_percent_hi": results[criterion, r].interval.hi,
                       "relative": by_benchmark(results[criterion, r].relative)}
    return {
        "teacher_dir": teacher.dir, "teacher_scores": teacher.scores, "scored_benchmarks": teacher.scored,
        "chance_avg_percent": teacher.chance_avg,
        "per_ratio": [entry(r) for r in ratios] + [{**entry(m), "matched_to": r} for r, m in matched.items()],
        "comparison": {"ratio": compare_ratio,
                       "avg_percent": {c: results[c, compare_ratio].avg for c in criteria},
                       "minus_random": minus_random(teacher, results, criteria, compare_ratio)
                       .set_index("criterion")[["value", "lo", "hi"]].to_dict(orient="index"),
                       "relative": {c: by_benchmark(results[c, compare_ratio].relative) for c in criteria}},
        "plans": {f"{c}@{r}": p.plan.to_dict() for (c, r), p in results.items()},
        "items": {"teacher": teacher.items, **{f"{c}@{r}": p.items for (c, r), p in results.items()}},
    }


def assert_pruning_quality(teacher: Teacher, avg: pd.Series) -> None:
    """What pruning without recovery must show on a trained teacher: every benchmark scored; removing more
    costs more (AVG % at the smallest ratio > at the largest); the largest ratio loses performance (< 90 %).
    Whether a criterion beats `random` is measured (`minus_random`), not asserted."""
    assert not teacher.excluded, f"the teacher scores 0 on {teacher.excluded}"
    assert avg[avg.index.min()] > avg[avg.index.max()], "removing more costs more"
    assert avg.max() <= 105 and avg[avg.index.max()] < 90, "pruning without recovery loses performance"


def minus_random(teacher: Teacher, results: dict, criteria: list[str], ratio: float) -> pd.DataFrame:
    """For every criterion but `random`: AVG %(criterion) - AVG %(random) at `ratio` on the same items, with its
    95 % paired-bootstrap interval (`intervals.difference`), and what it reads as: it beats random only where the
    interval lies above 0. Empty without a random run or per-item results (MME's points have none). Measured,
    not assumed: on teacher seed 1, random beat Taylor at widthwise 30 % (docs/results.md, section 1)."""
    scored = teacher.scored
    columns = ["criterion", "value", "lo", "hi", "reading"]
    if "random" not in criteria or not scored or any(b not in teacher.items for b in scored):
        return pd.DataFrame(columns=columns)
    on = lambda c: {b: results[c, ratio].items[b] for b in scored}
    diffs = {c: I.difference(on(c), on("random"), {b: teacher.items[b] for b in scored}) for c in criteria if c != "random"}
    reading = lambda d: "beats random" if d.lo > 0 else "loses to random" if d.hi < 0 else "not told apart from random"
    return pd.DataFrame([[c, d.value, d.lo, d.hi, reading(d)] for c, d in diffs.items()], columns=columns)


def heads_kept(plan: P.PruningPlan) -> list[int]:
    """1 for every query head a widthwise plan keeps, 0 for one it removes, block by block."""
    return [int(plan.kept_heads[i] is None or h in plan.kept_heads[i])
            for i in range(plan.num_layers) for h in range(plan.widths_before[i][0])]


def neurons_shared(plan: P.PruningPlan, other: P.PruningPlan) -> float:
    """Mean over the blocks both plans prune of |kept(plan) & kept(other)| / |kept(plan)| (1 if none)."""
    shares = [len(set(a) & set(b)) / len(a) for a, b in zip(plan.kept_neurons, other.kept_neurons)
              if a is not None and b is not None]
    return float(np.mean(shares or [1.0]))


def block_widths(model) -> list[tuple[int, int, int]]:
    """The distinct (query heads, key/value heads, MLP neurons) of the model's decoder blocks."""
    return sorted({(b.num_heads, b.num_kv_heads, b.intermediate_size) for b in P.describe_lm(model).blocks})


def write_metrics(metrics: dict, path: str) -> None:
    """Write a notebook's metrics record (the sweep reads it as the run's result) as JSON, atomically."""
    files.write_json(path, metrics)
    print(f"metrics written to {path}")
