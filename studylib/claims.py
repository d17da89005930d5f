"""The study's claims and the decision guide, computed from the sweep's run records (reports/runs/<run-id>.json).

Pure pandas over the records' metrics, no HTML (`report` renders these tables). AVG % is the mean over
benchmarks of 100 * s_b(model) / s_b(teacher); `retention` gathers it per run and compression ratio,
`claims_table` tests each claim of the study on it, `decision_guide` picks the best measured (paradigm, recipe)
per ratio band and training budget.

Verdicts are three-valued: a claim's test compares a deciding quantity (a difference of AVG % between two models,
or one model's AVG %) with a margin, and holds ("yes") or does not ("no") only when the quantity's 95 % paired-
bootstrap interval over benchmark items (`studylib.intervals`) lies wholly on one side of the margin; when the
interval overlaps it, the verdict is "undecided" (the data cannot tell). A claim with several parts is "no" if
any part is "no", "yes" if every part is "yes", else "undecided". Records without per-item results (written
before they were kept) are judged on their point estimates, and the test says so.
"""

from __future__ import annotations

from . import intervals as I

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
# ... and the bounds of its 95 % paired-bootstrap interval (records written before intervals existed have none)
INTERVAL_KEYS = {"pruned": ("avg_percent_lo", "avg_percent_hi"),
                 "recovered": ("avg_percent_recovered_lo", "avg_percent_recovered_hi"), "curve": ("AVG % lo", "AVG % hi")}
RELATIVE_KEY = {"pruned": "relative", "recovered": "relative_recovered"}  # a curve point has AVG % only


def _items_key(kind: str, columns: dict, source: dict) -> str:
    """Where a measured model's per-item results are in its record's metrics["items"]."""
    if kind == "pruned":
        return f"{columns['criterion']}@{source['requested_ratio']}"
    return "recovered" if kind == "recovered" else str(source["fraction"])


def item_results(records: list[dict]) -> dict:
    """{"teacher": the teacher's per-item results, "<run_id>#<key>": a measured model's} from the records that
    carry them (`retention`'s items_key column names each row's); empty when the records hold none, or when
    they come from different teachers (their items could not be paired)."""
    out, teachers = {}, []
    for rec, kind, columns, source in measured(records):
        items = rec["metrics"].get("items") or {}
        key = _items_key(kind, columns, source)
        if "teacher" in items and key in items:
            teachers.append(items["teacher"])
            out[f"{rec['run_id']}#{key}"] = items[key]
    if not teachers or any(t != teachers[0] for t in teachers):
        return {}
    return {"teacher": {b: v for b, v in teachers[0].items() if sum(v) > 0}, **out}  # AVG %'s benchmarks


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
    ('none' or 'train:loss'), fraction (of the data; NaN without recovery), avg_percent with its 95 %
    interval avg_percent_lo and avg_percent_hi (NaN where the record has none), run_id."""
    import pandas as pd

    nan = float("nan")
    rows = [{**columns, "avg_percent": source[AVG_KEY[kind]], "avg_percent_lo": source.get(INTERVAL_KEYS[kind][0], nan),
             "avg_percent_hi": source.get(INTERVAL_KEYS[kind][1], nan), "run_id": rec["run_id"],
             "items_key": f"{rec['run_id']}#{_items_key(kind, columns, source)}"}
            for rec, kind, columns, source in measured(records)]
    cols = ["paradigm", "criterion", "ratio", "lm_ratio", "recipe", "fraction", "avg_percent", "avg_percent_lo",
            "avg_percent_hi", "run_id", "items_key"]
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


def _combine(verdicts: list[str]) -> str:
    """A claim of several parts: "no" if any part is "no", "yes" if every part is "yes", else "undecided"."""
    return "no" if "no" in verdicts else ("yes" if verdicts and all(v == "yes" for v in verdicts) else "undecided")


class _Judge:
    """Deciding quantities and their verdicts, with intervals where the records carry per-item results."""

    def __init__(self, items: dict):
        self.items, self.pointwise = items, False

    def level(self, row) -> "I.Interval":
        """A model's AVG % with its recorded interval (NaN bounds when the record has none)."""
        return I.Interval(float(row["avg_percent"]), float(row["avg_percent_lo"]), float(row["avg_percent_hi"]))

    def diff(self, a, b) -> "I.Interval":
        """AVG %(a) - AVG %(b), paired over the same items (NaN bounds without per-item results)."""
        t, ia, ib = self.items.get("teacher"), self.items.get(a["items_key"]), self.items.get(b["items_key"])
        if t and ia is not None and ib is not None:
            return I.difference({k: ia[k] for k in t}, {k: ib[k] for k in t}, t)
        nan = float("nan")
        return I.Interval(float(a["avg_percent"] - b["avg_percent"]), nan, nan)

    def verdict(self, q: "I.Interval", margin: float, holds_above: bool = True) -> str:
        """yes / no / undecided for "q beyond margin" (`intervals.verdict`); by the point estimate without an
        interval (and the table's test then says so)."""
        if q.lo != q.lo or q.hi != q.hi:  # NaN: no interval
            self.pointwise = True
            return "yes" if (q.value > margin) == holds_above else "no"
        return {"holds": "yes", "does not hold": "no", "undecided": "undecided"}[I.verdict(q, margin, holds_above)]


def _show(q: "I.Interval", signed: bool = False) -> str:
    value = f"{q.value:+.1f}" if signed else f"{q.value:.1f}"
    return value if q.lo != q.lo else f"{value} [{q.lo:.1f}, {q.hi:.1f}]"


def claims_table(table, fraction: float = 0.05, items: dict | None = None):
    """One row per claim of the study: its figure, ours (from `retention(...)`, with 95 % intervals in
    brackets), the verdict ('yes', 'no', 'undecided', or 'no evidence' when the sweep did not measure what the
    claim needs) and the test applied, so a reader can disagree with the operationalisation. `items`:
    `item_results(records)`, for the paired intervals of differences."""
    import pandas as pd

    t = table.dropna(subset=["avg_percent"]).copy()  # AVG % is undefined only for an untrained teacher
    for c in ("avg_percent_lo", "avg_percent_hi", "items_key"):
        if c not in t:
            t[c] = float("nan") if c != "items_key" else ""
    t["ratio"] = t["ratio"].round(2)
    none = t[t["recipe"] == "none"]
    rec = t[(t["recipe"] != "none") & ((t["fraction"] - fraction).abs() < 1e-9)]
    judge, out = _Judge(items or {}), []

    def add(n, ours, parts, test):
        cid, claim, theirs = next(c for c in CLAIMS if c[0] == n)
        held = _combine(parts) if parts else "no evidence"
        out.append({"claim": f"{cid}. {claim}", "study": theirs, "this run": ours or "not measured", "held": held,
                    "test": test})

    # 1: no recovery, width - layer > 0 at requested 15 % and 30 %
    parts, shown = [], []
    for r in (0.15, 0.30):
        w, l = _best(none, paradigm="widthwise", ratio=r), _best(none, paradigm="layerwise", ratio=r)
        if w is not None and l is not None:
            d = judge.diff(w, l)
            parts.append(judge.verdict(d, 0.0))
            shown.append(f"{r:.0%}: width {w.avg_percent:.1f} vs layer {l.avg_percent:.1f} (achieved LM ratios "
                         f"{w.lm_ratio:.1%} and {l.lm_ratio:.1%}), difference {_show(d, True)}")
    add("1", "; ".join(shown), parts,
        "width - layer AVG % > 0 at requested 15 % and 30 % (no recovery; layerwise removes whole blocks, so its "
        "achieved ratio is the nearest multiple of one block)")

    # 2: at 15 % projector-only recovers something and is within 2 points of the best; at a larger ratio it
    # falls short of the best by more than 2 (else "suffices at small ratios" says nothing)
    parts, shown = [], []
    for p in ("layerwise", "widthwise"):
        proj, best, bare = (_best(rec, paradigm=p, ratio=0.15, recipe="projector:ce"), _best(rec, paradigm=p, ratio=0.15),
                            _best(none, paradigm=p, ratio=0.15))
        if proj is None or best is None or bare is None:
            continue
        gain, gap = judge.diff(proj, bare), judge.diff(best, proj)
        parts += [judge.verdict(gain, 0.0), judge.verdict(gap, 2.0, holds_above=False)]
        shown.append(f"{p} 15 %: projector {proj.avg_percent:.1f} vs best {best.avg_percent:.1f} ({best.recipe}), "
                     f"gap {_show(gap, True)}, gain over no recovery {_show(gain, True)}")
        larger = rec[(rec["paradigm"] == p) & (rec["ratio"] > 0.15) & (rec["recipe"] == "projector:ce")]
        for r in sorted(larger["ratio"].unique()):
            proj_r, best_r = _best(rec, paradigm=p, ratio=r, recipe="projector:ce"), _best(rec, paradigm=p, ratio=r)
            gap_r = judge.diff(best_r, proj_r)
            parts.append(judge.verdict(gap_r, 2.0))
            shown.append(f"{p} {r:.0%}: best - projector {_show(gap_r, True)}")
            break  # the next larger ratio measured
    add("2", "; ".join(shown), parts,
        "at 15 %: projector-only - no recovery > 0 and best - projector-only < 2 points; at the next larger "
        "ratio measured: best - projector-only > 2 points")

    # 3: ce+hidden within 0.5 point of the best recipe at every (paradigm, ratio) with several recipes
    parts, shown = [], []
    for (p, r), g in rec.groupby(["paradigm", "ratio"]):
        if g["recipe"].nunique() < 2 or not g["recipe"].str.endswith(":ce+hidden").any():
            continue
        hid = _best(g[g["recipe"].str.endswith(":ce+hidden")])
        other = _best(g[~g["recipe"].str.endswith(":ce+hidden")])
        d = judge.diff(hid, other)
        parts.append(judge.verdict(d, -0.5))
        shown.append(f"{p} {r:.0%}: ce+hidden {hid.avg_percent:.1f}, best other {other.recipe} "
                     f"{other.avg_percent:.1f}, difference {_show(d, True)}")
    add("3", "; ".join(shown), parts,
        "ce+hidden - the best other recipe > -0.5 point at every (paradigm, ratio) with several recipes")

    # 4: with `fraction` of the data, the best recipe at <= 30 % keeps > 95 %
    parts, shown = [], []
    for (p, r), g in rec[rec["ratio"] <= 0.30].groupby(["paradigm", "ratio"]):
        best = _best(g)
        q = judge.level(best)
        parts.append(judge.verdict(q, 95.0))
        shown.append(f"{p} {r:.0%}: {_show(q)} ({best.recipe})")
    add("4", "; ".join(shown), parts, f"best AVG % with {fraction:.0%} of the data > 95 at every ratio <= 30 %")

    # 5: with recovery, layer - width > 0 up to 30 %, width - layer > 0 from 45 % (needs both sides)
    parts, shown, sides = [], [], set()
    for r in sorted(rec["ratio"].unique()):
        l, w = _best(rec, paradigm="layerwise", ratio=r), _best(rec, paradigm="widthwise", ratio=r)
        if l is None or w is None:
            continue
        d = judge.diff(l, w) if r <= 0.30 else judge.diff(w, l)
        sides.add(r <= 0.30)
        parts.append(judge.verdict(d, 0.0))
        shown.append(f"{r:.0%}: layer {l.avg_percent:.1f} vs width {w.avg_percent:.1f}, "
                     f"{'layer - width' if r <= 0.30 else 'width - layer'} {_show(d, True)}")
    if parts and sides != {True, False}:
        parts.append("no")  # the claim is about both sides of 30-45 %
    add("5", "; ".join(shown), parts,
        "best recovered: layer - width > 0 at <= 30 %, width - layer > 0 at >= 45 % (needs both sides)")

    # 6: at >= 60 %, the best recovered model keeps < 90 %
    best6 = _best(rec[rec["ratio"] >= 0.60])
    q6 = judge.level(best6) if best6 is not None else None
    add("6", f"best at {best6['ratio']:.0%}: {_show(q6)} ({best6['paradigm']}, {best6['recipe']})"
        if best6 is not None else "", [judge.verdict(q6, 90.0, holds_above=False)] if best6 is not None else [],
        "best recovered AVG % at >= 60 % < 90")
    table_out = pd.DataFrame(out)
    if judge.pointwise:
        table_out["test"] += " (point estimates: these records carry no per-item results)"
    return table_out


RATIO_BANDS = [("<= 15 %", 0.0, 0.15), ("16-30 %", 0.15, 0.30), ("31-45 %", 0.30, 0.45), (">= 46 %", 0.45, 1.0)]
BUDGETS = [("no training", ["none"]), ("projector only", ["none", "projector"]),
           ("LoRA", ["none", "projector", "lora"]), ("any", ["none", "projector", "lora", "full"])]


def decision_guide(table, fraction: float = 0.05, items: dict | None = None):
    """For each ratio band and training budget, the (paradigm, recipe) that retained most in this run
    (recovery with `fraction` of the data), computed from the measurements, never written by hand. `tie with`
    names the runner-up (another paradigm or recipe) when the paired 95 % interval of best - runner-up
    includes 0 (`items`: `item_results(records)`; without them, no tie can be called and the column says so)."""
    import pandas as pd

    t = table.dropna(subset=["avg_percent"])
    t = t[(t["recipe"] == "none") | ((t["fraction"] - fraction).abs() < 1e-9)].copy()
    if "items_key" not in t:
        t["items_key"] = ""
    t["trained"] = t["recipe"].str.split(":").str[0]
    judge, rows = _Judge(items or {}), []
    for band, lo, hi in RATIO_BANDS:
        in_band = t[(t["ratio"] > lo + 1e-9) & (t["ratio"] <= hi + 1e-9)] if lo else t[t["ratio"] <= hi + 1e-9]
        for budget, allowed in BUDGETS:
            cand = in_band[in_band["trained"].isin(allowed)]
            if not len(cand):
                continue
            best = cand.loc[cand["avg_percent"].idxmax()]
            others = cand[(cand["paradigm"] != best["paradigm"]) | (cand["recipe"] != best["recipe"])]
            tie = "no other choice measured"
            if len(others):
                runner = others.loc[others["avg_percent"].idxmax()]
                d = judge.diff(best, runner)
                name = f"{runner['paradigm']} {runner['recipe']} ({runner['avg_percent']:.1f})"
                tie = (f"? {name}: no interval" if d.lo != d.lo else
                       name if d.lo <= 0 else "none: beyond the 95 % interval")
            trained = best["recipe"] != "none"
            advice = (("prune and recover" if trained else "prune; no recovery needed") if best["avg_percent"] >= 90
                      else "acceptable loss?" if best["avg_percent"] >= 80 else "not worth it: a smaller model")
            rows.append({"compression": band, "budget": budget, "paradigm": best["paradigm"],
                         "recipe": best["recipe"], "ratio": best["ratio"], "AVG %": round(best["avg_percent"], 1),
                         "tie with": tie, "advice": advice})
    return pd.DataFrame(rows)


def relative_by_benchmark(records: list[dict]):
    """Per-benchmark % of the teacher: columns paradigm, ratio, recipe, fraction, benchmark, relative."""
    import pandas as pd

    rows = [{**columns, "benchmark": b, "relative": v} for _, kind, columns, source in measured(records)
            if kind in RELATIVE_KEY for b, v in source[RELATIVE_KEY[kind]].items()]
    return pd.DataFrame(rows, columns=["paradigm", "ratio", "recipe", "fraction", "benchmark", "relative"])
