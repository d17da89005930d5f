"""Three-valued verdicts on records that carry per-item results: a claim holds or fails only beyond the 95 %
paired interval of its deciding quantity; inside it, it is undecided."""

import numpy as np

from studylib import claims as C

N = 400
TEACHER = {"ocr": [1] * N, "count": [1] * N}


def items(p: float, seed: int, base=None, flips: int = 0) -> dict:
    """Per-item results near accuracy p; with `base`, the same items with `flips` of them changed."""
    rng = np.random.default_rng(seed)
    if base is not None:
        out = {b: list(v) for b, v in base.items()}
        for b in out:
            for i in rng.choice(N, flips, replace=False):
                out[b][i] = 1 - out[b][i]
        return out
    return {b: [int(x) for x in rng.random(N) < p] for b in TEACHER}


def pruning_record(run_id, notebook, criterion, per_ratio_items):
    from studylib import intervals as I

    per_ratio, all_items = [], {"teacher": TEACHER}
    for r, it in per_ratio_items.items():
        iv = I.interval(it, TEACHER)
        per_ratio.append({"requested_ratio": r, "lm_ratio": r, "avg_percent": iv.value, "avg_percent_lo": iv.lo,
                          "avg_percent_hi": iv.hi, "relative": {}})
        all_items[f"{criterion}@{r}"] = it
    return {"run_id": run_id, "notebook": notebook, "metrics": {"criterion": criterion, "per_ratio": per_ratio,
                                                                "items": all_items}}


def test_a_claim_whose_difference_is_inside_its_interval_is_undecided():
    layer15 = items(0.80, 1)
    width15 = items(None, 2, base=layer15, flips=4)  # the same answers but 4 per benchmark: no real difference
    records = [pruning_record("l", "01_layerwise", "bi", {0.15: layer15, 0.30: items(0.55, 3)}),
               pruning_record("w", "02_widthwise", "taylor", {0.15: width15, 0.30: items(0.75, 4)})]
    table = C.retention(records)
    claim1 = C.claims_table(table, items=C.item_results(records)).iloc[0]
    assert claim1["held"] == "undecided", claim1["this run"]
    assert "[" in claim1["this run"] and "point estimates" not in claim1["test"]


def test_a_clear_difference_decides_and_without_items_the_point_estimate_is_said():
    records = [pruning_record("l", "01_layerwise", "bi", {0.15: items(0.50, 1), 0.30: items(0.40, 3)}),
               pruning_record("w", "02_widthwise", "taylor", {0.15: items(0.90, 2), 0.30: items(0.85, 4)})]
    table = C.retention(records)
    with_items = C.claims_table(table, items=C.item_results(records))
    assert with_items.loc[0, "held"] == "yes"
    without = C.claims_table(table)
    assert without.loc[0, "held"] == "yes" and "point estimates" in without.loc[0, "test"]


def test_records_of_different_teachers_are_not_paired():
    a = pruning_record("l", "01_layerwise", "bi", {0.15: items(0.5, 1)})
    b = pruning_record("w", "02_widthwise", "taylor", {0.15: items(0.9, 2)})
    b["metrics"]["items"]["teacher"] = {"ocr": [1] * N, "count": [0] + [1] * (N - 1)}
    assert C.item_results([a, b]) == {}


def test_the_decision_guide_names_a_tie():
    layer15 = items(0.80, 1)
    records = [pruning_record("l", "01_layerwise", "bi", {0.15: layer15}),
               pruning_record("w", "02_widthwise", "taylor", {0.15: items(None, 2, base=layer15, flips=3)})]
    guide = C.decision_guide(C.retention(records), items=C.item_results(records)).set_index(["compression", "budget"])
    row = guide.loc[("<= 15 %", "no training")]
    assert row["tie with"].startswith(("layerwise", "widthwise")), row["tie with"]
    assert row["advice"] in ("acceptable loss?", "prune; no recovery needed", "not worth it: a smaller model")


def test_a_plan_met_to_a_hair_above_a_band_edge_stays_in_the_band_its_percent_names():
    # the widthwise solver meets 45 % to 45.01 %: in whole percent it is 45 %, so "31-45 %", not ">= 46 %"
    records = [pruning_record("w", "02_widthwise", "taylor", {0.4501: items(0.5, 1), 0.4649: items(0.4, 2)})]
    guide = C.decision_guide(C.retention(records), items=C.item_results(records))
    rows = guide[guide["budget"] == "no training"].set_index("compression")
    assert rows.loc["31-45 %", "ratio"] == 0.4501 and rows.loc[">= 46 %", "ratio"] == 0.4649


def test_the_report_reads_a_sweep_at_the_data_share_its_recoveries_used():
    import pandas as pd

    table = pd.DataFrame({"recipe": ["none", "lora:ce", "lora:ce", "lora:ce"], "fraction": [np.nan, 0.025, 0.025, 0.1]})
    assert C.reading_fraction(table, 0.05) == 0.025  # no 5 % run: the share most recoveries used
    assert C.reading_fraction(table, 0.1) == 0.1  # the share asked for, when measured
    assert C.reading_fraction(table.iloc[:1], 0.05) == 0.05  # nothing recovered
    tie = pd.DataFrame({"recipe": ["lora:ce", "lora:ce"], "fraction": [0.01, 0.2]})
    assert C.reading_fraction(tie, 0.05) == 0.2
