"""The study's claims and the decision guide, computed from the sweep's run records (reports/runs/<run-id>.json).

Pure pandas over the records' metrics, no HTML (`report` renders these tables). AVG % is the mean over
benchmarks of 100 * s_b(model) / s_b(teacher); `retention` gathers it per run and compression ratio,
`claims_table` tests each claim of the study on it, `decision_guide` picks the best measured (paradigm, recipe)
per ratio band and training budget.
"""

from __future__ import annotations

# The study's figures (LLaVA-v1.5-7B unless said; ../shared/REFERENCE.md section 1), for the claims table.
CLAIMS = [
    ("1", "Without recovery, widthwise beats layerwise",
     "15 %: width 90.9 vs layer 72.2 AVG % (LLaVA); 30 %: 79.9 vs 69.2"),
    ("2", "Projector-only finetuning suffices at small ratios (< 20 %)",
     "GCPR abstract: < 20 %; project page: <= 15 %"),
    ("3", "SFT + hidden-state KD is the best recovery at every ratio",
     "layer 15 %: 98.1, layer 30 %: 96.4, width 45 %: 84.0, width 60 %: 78.1 AVG %"),
    ("4", "5 % of the data retains > 95 % of the original performance (<= 30 %)",
     "layer 30 % with 5 %: 96.4 AVG %"),
    ("5", "With recovery, layerwise wins up to 30 %, widthwise from 45 %", "IJCV version"),
    ("6", "Beyond 60 %, pruning + recovery is not worth it", "width 60 % best recipe: 78.1 AVG %"),
]


PRUNING_NOTEBOOKS = {"01_layerwise": "layerwise", "02_widthwise": "widthwise"}  # pruning without recovery


# Where each kind of measured model keeps its AVG % and its per-benchmark % of the teacher
AVG_KEY = {"pruned": "avg_percent", "recovered": "avg_percent_recovered", "curve": "AVG %"}
RELATIVE_KEY = {"pruned": "relative", "recovered": "relative_recovered"}  # a curve point has AVG % only


def measured(records: list[dict]):
    """Every model the run records measured, in record order: (record, kind, columns, source). kind: "pruned" (each
    ratio of a pruning notebook, no recovery), "recovered" (a recovery run) or "curve" (each point of a
    data-efficiency curve); columns: paradigm, criterion, ratio (requested), lm_ratio, recipe ('none' or
    'train:loss'), fraction (of the data; NaN without recovery); source: the dict holding its scores (`AVG_KEY`,
    `RELATIVE_KEY`)."""
    for rec in records:
        m, nb = rec["metrics"], rec["notebook"]
        if nb in PRUNING_NOTEBOOKS:
            for r in m.get("per_ratio", []):
                yield rec, "pruned", {"paradigm": PRUNING_NOTEBOOKS[nb], "criterion": m.get("criterion"),
                                      "ratio": r["requested_ratio"], "lm_ratio": r["lm_ratio"], "recipe": "none",
                                      "fraction": float("nan")}, r
        elif nb in ("03_recovery", "04_data_efficiency"):
            columns = {"paradigm": m["paradigm"], "criterion": m["criterion"], "ratio": m["ratio"],
                       "lm_ratio": m["lm_ratio"], "recipe": f"{m['recipe']['train']}:{m['recipe']['loss']}"}
            if nb == "03_recovery":
                yield rec, "recovered", {**columns, "fraction": _fraction(m)}, m
            else:
                for point in m.get("curve", []):
                    yield rec, "curve", {**columns, "fraction": point["fraction"]}, point


def retention(records: list[dict]):
    """Long table of AVG % against compression: columns paradigm, ratio (requested), lm_ratio, recipe
    ('none' or 'train:loss'), fraction (of the data; NaN without recovery), avg_percent, run_id."""
    import pandas as pd

    rows = [{**columns, "avg_percent": source[AVG_KEY[kind]], "run_id": rec["run_id"]}
            for rec, kind, columns, source in measured(records)]
    cols = ["paradigm", "criterion", "ratio", "lm_ratio", "recipe", "fraction", "avg_percent", "run_id"]
    return pd.DataFrame(rows, columns=cols)


def _fraction(m: dict) -> float:
    """The share of the training data a recovery used: examples / of_examples when `data_fraction` is a count,
    else `data_fraction` (NaN when absent)."""
    f = m.get("data_fraction")
    rec = m.get("recovery") or {}
    if isinstance(f, int) and rec.get("of_examples"):
        return rec["examples"] / rec["of_examples"]
    return float(f) if f is not None else float("nan")


def _best(table, **where):
    """The row of highest AVG % among those whose columns equal `where` (None when no row does)."""
    sub = table
    for k, v in where.items():
        sub = sub[sub[k] == v]
    return sub.loc[sub["avg_percent"].idxmax()] if len(sub) else None


def claims_table(table, fraction: float = 0.05):
    """One row per claim of the study: its figure, ours (from `retention(...)`), and whether it held
    ('yes', 'no', or 'no evidence' when the sweep did not measure what the claim needs). Each row states
    the test it applied, so a reader can disagree with the operationalisation."""
    import pandas as pd

    t = table.dropna(subset=["avg_percent"]).copy()  # AVG % is undefined only for an untrained teacher
    t["ratio"] = t["ratio"].round(2)
    none = t[t["recipe"] == "none"]
    rec = t[(t["recipe"] != "none") & ((t["fraction"] - fraction).abs() < 1e-9)]
    out = []

    def add(n, ours, held, test):
        cid, claim, theirs = next(c for c in CLAIMS if c[0] == n)
        out.append({"claim": f"{cid}. {claim}", "study": theirs, "this run": ours, "held": held, "test": test})

    # 1: no recovery, width vs layer at 15 % and 30 %
    pairs = []
    for r in (0.15, 0.30):
        w, l = (none[(none["paradigm"] == p) & (none["ratio"] == r)] for p in ("widthwise", "layerwise"))
        if len(w) and len(l):
            pairs.append((r, w.iloc[0], l.iloc[0]))
    add("1", "; ".join(f"{r:.0%}: width {w.avg_percent:.1f} vs layer {l.avg_percent:.1f} (achieved LM ratios "
                       f"{w.lm_ratio:.1%} and {l.lm_ratio:.1%})" for r, w, l in pairs) or "not measured",
        ("yes" if all(w.avg_percent > l.avg_percent for _, w, l in pairs) else "no") if pairs else "no evidence",
        "width AVG % > layer AVG % at requested 15 % and 30 % (no recovery; layerwise removes whole blocks, "
        "so its achieved ratio is the nearest multiple of one block)")

    # 2: projector-only at 15 % within 2 points of the best recipe there
    rows2 = []
    for p in ("layerwise", "widthwise"):
        proj = _best(rec, paradigm=p, ratio=0.15, recipe="projector:ce")
        best = _best(rec, paradigm=p, ratio=0.15)
        if proj is not None and best is not None:
            rows2.append((p, proj["avg_percent"], best["avg_percent"], best["recipe"]))
    add("2", "; ".join(f"{p} 15 %: projector {a:.1f} vs best {b:.1f} ({r})" for p, a, b, r in rows2) or "not measured",
        ("yes" if all(b - a <= 2 for _, a, b, _ in rows2) else "no") if rows2 else "no evidence",
        "at 15 %, projector-only within 2 points of the best recipe measured")

    # 3: ce+hidden (any trained part) best at every (paradigm, ratio) with >= 2 recipes
    wins, cells = [], 0
    for (p, r), g in rec.groupby(["paradigm", "ratio"]):
        if g["recipe"].nunique() < 2 or not g["recipe"].str.endswith(":ce+hidden").any():
            continue
        cells += 1
        best = g.loc[g["avg_percent"].idxmax()]
        hid = g[g["recipe"].str.endswith(":ce+hidden")]["avg_percent"].max()
        wins.append((p, r, hid >= best["avg_percent"] - 0.5, best["recipe"], best["avg_percent"], hid))
    add("3", "; ".join(f"{p} {r:.0%}: best {b} {ba:.1f}, ce+hidden {h:.1f}" for p, r, _, b, ba, h in wins)
        or "not measured",
        ("yes" if all(w for _, _, w, *_ in wins) else "no") if cells else "no evidence",
        "ce+hidden within 0.5 point of the best recipe at every (paradigm, ratio) with several recipes")

    # 4: with 5 % of the data, the best recipe at <= 30 % keeps >= 95 %
    small = rec[rec["ratio"] <= 0.30]
    rows4 = [(p, r, g["avg_percent"].max(), g.loc[g["avg_percent"].idxmax(), "recipe"])
             for (p, r), g in small.groupby(["paradigm", "ratio"])]
    add("4", "; ".join(f"{p} {r:.0%}: {a:.1f} ({rc})" for p, r, a, rc in rows4) or "not measured",
        ("yes" if all(a > 95 for _, _, a, _ in rows4) else "no") if rows4 else "no evidence",
        f"best AVG % with {fraction:.0%} of the data > 95 at every ratio <= 30 %")

    # 5: with recovery, layer >= width up to 30 %, width > layer from 45 %
    rows5 = []
    for r in sorted(rec["ratio"].unique()):
        l, w = (rec[(rec["paradigm"] == p) & (rec["ratio"] == r)]["avg_percent"].max() for p in ("layerwise", "widthwise"))
        if pd.notna(l) and pd.notna(w):
            rows5.append((r, l, w, (l >= w) if r <= 0.30 else (w > l)))
    add("5", "; ".join(f"{r:.0%}: layer {l:.1f} vs width {w:.1f}" for r, l, w, _ in rows5) or "not measured",
        ("yes" if all(ok for *_, ok in rows5) and {r <= 0.3 for r, *_ in rows5} == {True, False} else "no")
        if rows5 else "no evidence",
        "best recovered: layer >= width at <= 30 %, width > layer at >= 45 % (needs both sides)")

    # 6: at 60 %, the best recovered model loses more than 10 % of the teacher
    hi = rec[rec["ratio"] >= 0.60]
    best6 = _best(hi)
    add("6", f"best at {best6['ratio']:.0%}: {best6['avg_percent']:.1f} ({best6['paradigm']}, {best6['recipe']})"
        if best6 is not None else "not measured",
        ("yes" if best6["avg_percent"] < 90 else "no") if best6 is not None else "no evidence",
        "best recovered AVG % at >= 60 % below 90")
    return pd.DataFrame(out)


RATIO_BANDS = [("<= 15 %", 0.0, 0.15), ("16-30 %", 0.15, 0.30), ("31-45 %", 0.30, 0.45), (">= 46 %", 0.45, 1.0)]
BUDGETS = [("no training", ["none"]), ("projector only", ["none", "projector"]),
           ("LoRA", ["none", "projector", "lora"]), ("any", ["none", "projector", "lora", "full"])]


def decision_guide(table, fraction: float = 0.05):
    """For each ratio band and training budget, the (paradigm, recipe) that retained most in this run
    (recovery with `fraction` of the data), computed from the measurements, never written by hand."""
    import pandas as pd

    t = table.dropna(subset=["avg_percent"])
    t = t[(t["recipe"] == "none") | ((t["fraction"] - fraction).abs() < 1e-9)].copy()
    t["trained"] = t["recipe"].str.split(":").str[0]
    rows = []
    for band, lo, hi in RATIO_BANDS:
        in_band = t[(t["ratio"] > lo + 1e-9) & (t["ratio"] <= hi + 1e-9)] if lo else t[t["ratio"] <= hi + 1e-9]
        for budget, allowed in BUDGETS:
            cand = in_band[in_band["trained"].isin(allowed)]
            if not len(cand):
                continue
            best = cand.loc[cand["avg_percent"].idxmax()]
            rows.append({"compression": band, "budget": budget, "paradigm": best["paradigm"],
                         "recipe": best["recipe"], "ratio": best["ratio"], "AVG %": round(best["avg_percent"], 1),
                         "advice": "prune and recover" if best["avg_percent"] >= 90 else
                         ("acceptable loss?" if best["avg_percent"] >= 80 else "not worth it: a smaller model")})
    return pd.DataFrame(rows)


def relative_by_benchmark(records: list[dict]):
    """Per-benchmark % of the teacher: columns paradigm, ratio, recipe, fraction, benchmark, relative."""
    import pandas as pd

    rows = [{**columns, "benchmark": b, "relative": v} for _, kind, columns, source in measured(records)
            if kind in RELATIVE_KEY for b, v in source[RELATIVE_KEY[kind]].items()]
    return pd.DataFrame(rows, columns=["paradigm", "ratio", "recipe", "fraction", "benchmark", "relative"])
