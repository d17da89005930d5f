"""Seeds: intervals over seeds, pooling of runs that differ only in their seeds, claims over several teachers,
and the sweep's `replicates`."""

import numpy as np
import pytest

from studylib import claims as C, intervals as I, sweep as S
from test_claims import N, TEACHER, items, pruning_record


def test_the_seed_half_width_is_the_t_interval_of_the_mean():
    # values 1, 2, 3: sd 1, t_{0.975, 2} = 4.3027
    assert I.seed_half_width([1.0, 2.0, 3.0]) == pytest.approx(4.3027 / np.sqrt(3), rel=1e-4)
    assert I.seed_half_width([5.0]) == 0.0
    wide = I.with_seeds(I.Interval(10.0, 9.0, 12.0), 4.0)
    assert (wide.lo, wide.hi) == pytest.approx((10 - np.hypot(1, 4), 10 + np.hypot(2, 4)))
    assert I.with_seeds(I.Interval(10.0, 9.0, 12.0), 0.0) == I.Interval(10.0, 9.0, 12.0)
    across = I.across([80.0, 82.0, 84.0])
    assert across.value == 82.0 and across.half_width == pytest.approx(4.3027 * 2 / np.sqrt(3), rel=1e-4)


def test_the_mean_over_seeds_of_item_scores_gives_the_mean_avg_percent():
    runs = [items(0.6, s) for s in range(3)]
    assert I.avg_percent(I.mean_items(runs), TEACHER) == pytest.approx(np.mean([I.avg_percent(r, TEACHER) for r in runs]))


def recovered_record(run_id, paradigm, ratio, recipe, it, recovery_seed, teacher_dir="t", teacher=TEACHER):
    iv = I.interval(it, teacher)
    train, loss = recipe.split(":")
    return {"run_id": run_id, "notebook": "03_recovery", "metrics": {
        "paradigm": paradigm, "criterion": "bi" if paradigm == "layerwise" else "taylor", "ratio": ratio,
        "lm_ratio": ratio, "recipe": {"train": train, "loss": loss}, "data_fraction": 0.05, "seed": 0,
        "calib_seed": 0, "recovery_seed": recovery_seed, "teacher_dir": teacher_dir,
        "avg_percent_recovered": iv.value, "avg_percent_recovered_lo": iv.lo, "avg_percent_recovered_hi": iv.hi,
        "items": {"teacher": teacher, "recovered": it}}}


def claim(records, n):
    table = C.claims_table(C.retention(records), items=C.item_results(records))
    return table.set_index(table["claim"].str.split(".").str[0]).loc[n]


def test_seeds_are_pooled_and_their_spread_widens_the_interval():
    # claim 3 at layerwise 30 %: ce+hidden against lora:ce, three recovery seeds each
    base = items(0.8, 0)
    hidden = [items(None, 10 + s, base=base, flips=f) for s, f in enumerate((2, 30, 60))]  # seeds disagree
    ce = [items(None, 20 + s, base=base, flips=3) for s in range(3)]
    records = ([recovered_record(f"h{s}", "layerwise", 0.30, "lora:ce+hidden", it, s) for s, it in enumerate(hidden)]
               + [recovered_record(f"c{s}", "layerwise", 0.30, "lora:ce", it, s) for s, it in enumerate(ce)])
    pooled = C.pool(C.retention(records))
    assert sorted(pooled["n_seeds"]) == [3, 3] and len(pooled) == 2
    row = claim(records, "3")
    assert "3 seeds" in row["this run"], row["this run"]
    # the interval with seeds is wider than the items-only interval of the same means
    judge = C._Judge(C.item_results(records))
    h, c = pooled.iloc[0], pooled.iloc[1]
    with_seeds = judge.diff(h, c)
    items_only = I.difference(I.mean_items([judge.items[k] for k in h["items_keys"]]),
                              I.mean_items([judge.items[k] for k in c["items_keys"]]), TEACHER)
    assert with_seeds.value == pytest.approx(items_only.value)
    assert with_seeds.hi - with_seeds.lo > items_only.hi - items_only.lo


def teachers_records(gaps):
    """Pruning records of one teacher per gap (width - layer accuracy, in points), each on its own items."""
    records = []
    for t, gap in enumerate(gaps):
        rng = np.random.default_rng(t)
        for paradigm, p in (("layerwise", 0.70), ("widthwise", 0.70 + gap / 100)):
            rec = pruning_record(f"{paradigm}{t}", {"layerwise": "01_layerwise", "widthwise": "02_widthwise"}[paradigm],
                                 "bi" if paradigm == "layerwise" else "taylor",
                                 {r: {b: [int(x) for x in rng.random(N) < p] for b in TEACHER} for r in (0.15, 0.30)})
            rec["metrics"]["teacher_dir"] = f"teacher{t}"
            records.append(rec)
    return records


def test_claims_over_several_teachers_are_decided_across_them():
    row = claim(teachers_records((8.0, 9.0, 10.0)), "1")  # width beats layer by 8-10 points on every teacher
    assert "over 3 teachers" in row["this run"] and row["held"] == "yes", row["this run"]
    # teachers that disagree on the sign: the t-interval across them spans 0
    assert claim(teachers_records((8.0, 9.0, -25.0)), "1")["held"] == "undecided"


def config(**top):
    return {"cells": [{"notebook": "00_teacher"}, {"notebook": "03_recovery", "after": ["00_teacher"]}], **top}


def test_replicates_run_every_cell_per_element_after_its_own_teacher():
    cells = S.expand(config(replicates={"teacher": [{"label": "t0", "seed": 0}, {"label": "t1", "seed": 1}]}),
                     check_names=True)
    teachers = [c for c in cells if c.notebook == "00_teacher"]
    recoveries = [c for c in cells if c.notebook == "03_recovery"]
    assert [c.parameters["seed"] for c in teachers] == [0, 1] and len(recoveries) == 2
    assert [r.after for r in recoveries] == [[t.run_id] for t in teachers]
    assert all("-t0-" in c.run_id or "-t1-" in c.run_id for c in cells)
    with pytest.raises(ValueError, match="replicates 'teacher'.*unknown parameter 'sed'"):
        S.expand(config(replicates={"teacher": [{"sed": 1}]}), check_names=True)
    with pytest.raises(ValueError, match="'replicates' must map"):
        S.expand(config(replicates=[0, 1]))


def test_the_shipped_seed_configs_expand():
    seeds = S.load_config(S.files.home() / "configs" / "seeds.yaml")
    assert sum(c.notebook == "00_teacher" for c in seeds) == 3
    # every claim is decided per teacher, claim 6 against its from-scratch model
    assert sum(c.notebook == "06_from_scratch" for c in seeds) == 3
    assert {c.notebook for c in seeds} == {"00_teacher", "01_layerwise", "02_widthwise", "03_recovery", "06_from_scratch"}
    default = S.load_config(S.files.home() / "configs" / "default.yaml")
    recovery = [c for c in default if c.notebook == "03_recovery"]
    assert {c.parameters["recovery_seed"] for c in recovery} == {0, 1, 2}
    assert all(c.parameters.get("match_layerwise") for c in recovery if c.parameters["paradigm"] == "widthwise")


def test_widthwise_matched_to_layerwise_prunes_to_the_ratio_layerwise_achieves(tiny_teacher, cache_dir, one_thread):
    from studylib import study

    teacher = study.load_teacher(teacher_dir=str(tiny_teacher), n_train=200, n_bench=10, cache_dir=str(cache_dir))
    target = study.layerwise_ratio(teacher, 0.15)  # whole blocks: not 15 %
    layer = study.prune_one(teacher, "layerwise", "bi", 0.15, calib_samples=4)
    assert layer.plan.lm_ratio == pytest.approx(target) and target != pytest.approx(0.15, abs=0.005)
    width = study.prune_one(teacher, "widthwise", "l2", 0.15, match_layerwise=True)
    assert abs(width.plan.lm_ratio - target) <= 0.01 + 1e-9 and width.plan.requested_ratio == pytest.approx(target)
    # the calibration sample follows calib_seed, and recovery its own seed
    a, b = study.calibration(teacher, "bi", 4, seed=0), study.calibration(teacher, "bi", 4, seed=1)
    assert study.P.calibration_fingerprint(a) != study.P.calibration_fingerprint(b)
    from studylib import recovery as R

    assert R.recovery_config(teacher, seed=2).seed == 2 and R.recovery_config(teacher).seed == teacher.seed


def test_claim_6_compares_with_a_model_trained_from_scratch_with_the_same_compute():
    best = items(0.60, 1)
    records = [recovered_record("r", "widthwise", 0.60, "lora:ce+hidden", best, 0)]
    assert "no from-scratch model measured" in claim(records, "6")["this run"]  # the old reading, said
    scratch = recovered_record("s", "widthwise", 0.60, "lora:ce+hidden", items(0.25, 2), 0)
    scratch.update(notebook="06_from_scratch")
    m = scratch["metrics"]
    m["avg_percent_scratch"], m["avg_percent_scratch_lo"], m["avg_percent_scratch_hi"] = (
        m.pop("avg_percent_recovered"), m.pop("avg_percent_recovered_lo"), m.pop("avg_percent_recovered_hi"))
    m["items"] = {"teacher": TEACHER, "scratch": m["items"]["recovered"]}
    row = claim(records + [scratch], "6")
    assert "from scratch" in row["this run"] and row["held"] == "no", row["this run"]  # pruning wins: worth it
    assert "scratch" not in set(C.decision_guide(C.retention(records + [scratch]))["recipe"])


def test_from_scratch_budget_counts_recovery_kd_and_calibration():
    from studylib import scratch

    b = scratch.Budget(1000, 10, "gradients", True, student_params=100, teacher_params=250)
    assert b.examples_scratch == round(1000 * (1 + 2.5 / 3) + 10 * 2.5)
    assert scratch.Budget(1000, 50, "forward", False, 100, 250).examples_scratch == round(1000 + 50 * 2.5 / 3)
    assert scratch.Budget(1000, 0, "nothing", False, 100, 250, multiple=2.0).examples_scratch == 2000


def test_a_record_superseded_by_a_newer_run_of_the_same_cell_is_not_pooled(tmp_path):
    import json

    def write(run_id, finished, params):
        rec = {"run_id": run_id, "notebook": "03_recovery", "parameters": params, "status": "ok",
               "finished": finished, "metrics": {}}
        (tmp_path / f"{run_id}.json").write_text(json.dumps(rec))

    write("03_recovery-old", "2026-12-02T10:00:00", {"ratio": 0.3, "recovery_seed": 0})
    write("03_recovery-new", "2026-12-02T11:00:00", {"ratio": 0.3, "recovery_seed": 0})
    write("03_recovery-seed1", "2026-12-02T09:00:00", {"ratio": 0.3, "recovery_seed": 1})
    assert [r["run_id"] for r in S.collect(tmp_path)] == ["03_recovery-new", "03_recovery-seed1"]
    assert len(S.collect(tmp_path, superseded=True)) == 3


def test_loss_variants_are_recipes_of_their_own_never_pooled_as_seeds():
    # the three hidden-state targets of configs/variants.yaml and gemma.yaml, one seed each, and the study's KL
    base = items(0.8, 0)
    records = []
    for i, (loss, variant) in enumerate((("ce+hidden", {}), ("ce+hidden", {"hidden_target": "blocks"}),
                                         ("ce+hidden", {"hidden_target": "scale_free"}),
                                         ("ce+kl", {"kl_scale": "sequence_sum"}), ("ce", {"hidden_target": "x"}))):
        rec = recovered_record(f"v{i}", "layerwise", 0.30, f"lora:{loss}", items(None, 30 + i, base=base, flips=5), 0)
        rec["metrics"]["recipe"] |= variant
        records.append(rec)
    pooled = C.pool(C.retention(records))
    assert list(pooled["recipe"]) == ["lora:ce+hidden", "lora:ce+hidden/blocks", "lora:ce+hidden/scale_free",
                                      "lora:ce+kl/sequence_sum", "lora:ce"]  # a target a loss does not use is no variant
    assert set(pooled["n_seeds"]) == {1}
    assert C.recipe_loss("lora:ce+hidden/blocks") == "ce+hidden" and C.recipe_loss("none") == "none"
    from studylib import report as R
    assert R.recipe_label("lora:ce+hidden/blocks") == "LoRA, CE + hidden KD (blocks)"
    # claim 3 compares the best hidden-state target with the best other recipe, and names it
    row = claim(records, "3")
    assert "lora:ce+hidden" in row["this run"] and "vs lora:c" in row["this run"], row["this run"]


def test_a_criterion_against_random_is_a_measured_paired_difference():
    from types import SimpleNamespace as NS

    from studylib import study

    rng = np.random.default_rng(0)
    teacher_items = {"mcq": [1] * 200, "count": [1] * 200}
    half = {b: [int(x) for x in rng.random(200) < 0.5] for b in teacher_items}
    teacher = NS(scored=list(teacher_items), items=teacher_items)
    results = {("random", 0.3): NS(items=half), ("same", 0.3): NS(items=half),
               ("good", 0.3): NS(items={b: [1] * 200 for b in teacher_items}),
               ("bad", 0.3): NS(items={b: [0] * 200 for b in teacher_items})}
    t = study.minus_random(teacher, results, ["good", "same", "bad", "random"], 0.3).set_index("criterion")
    assert (t.loc["same", ["value", "lo", "hi"]] == 0).all() and t.loc["same", "reading"] == "not told apart from random"
    assert t.loc["good", "reading"] == "beats random" and t.loc["good", "lo"] > 0
    assert t.loc["bad", "reading"] == "loses to random" and t.loc["bad", "hi"] < 0
    assert t.loc["good", "value"] == pytest.approx(100 - I.avg_percent(half, teacher_items))
    # nothing to compare with: no random run, or a benchmark without per-item results
    assert study.minus_random(teacher, results, ["good"], 0.3).empty
    assert study.minus_random(NS(scored=["mme"], items={}), results, ["good", "random"], 0.3).empty
