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

Seeds: runs of one configuration that differ only in their calibration or recovery seed are pooled (`pool`):
their mean, with the bootstrap interval of the mean's item noise and the seeds' t half-width added in
quadrature (`intervals.with_seeds`). Teachers of different seeds (each with its own data and benchmark items)
are replicates of the whole study: each part of a claim is decided on the mean over teachers with a t-interval
across them (`intervals.across`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
AVG_KEY = {"pruned": "avg_percent", "recovered": "avg_percent_recovered", "curve": "AVG %",
           "scratch": "avg_percent_scratch"}
# ... and the bounds of its 95 % paired-bootstrap interval (records written before intervals existed have none)
INTERVAL_KEYS = {"pruned": ("avg_percent_lo", "avg_percent_hi"),
                 "recovered": ("avg_percent_recovered_lo", "avg_percent_recovered_hi"), "curve": ("AVG % lo", "AVG % hi"),
                 "scratch": ("avg_percent_scratch_lo", "avg_percent_scratch_hi")}
RELATIVE_KEY = {"pruned": "relative", "recovered": "relative_recovered"}  # a curve point has AVG % only


def _items_key(kind: str, columns: dict, source: dict) -> str:
    """Where a measured model's per-item results are in its record's metrics["items"]."""
    if kind == "pruned":
        return f"{columns['criterion']}@{source['requested_ratio']}"
    return kind if kind in ("recovered", "scratch") else str(source["fraction"])


def item_results(records: list[dict]) -> dict:
    """{"teacher@<teacher_dir>": a teacher's per-item results, "<run_id>#<key>": a measured model's} from the
    records that carry them (`retention`'s items_key column names each row's, its teacher column the
    teacher's); with one teacher also {"teacher": its items}. Empty when the records hold none, or when one
    teacher folder comes with two different sets of items (they could not be paired)."""
    out, teachers = {}, {}
    for rec, kind, columns, source in measured(records):
        items = rec["metrics"].get("items") or {}
        key = _items_key(kind, columns, source)
        if "teacher" in items and key in items:
            t = {b: v for b, v in items["teacher"].items() if sum(v) > 0}  # AVG %'s benchmarks
            if teachers.setdefault(columns["teacher"], t) != t:
                return {}
            out[f"{rec['run_id']}#{key}"] = items[key]
    if not teachers:
        return {}
    only = {"teacher": next(iter(teachers.values()))} if len(teachers) == 1 else {}
    return {**only, **{f"teacher@{d}": t for d, t in teachers.items()}, **out}


def _seeds(m: dict, recovered: bool) -> dict:
    """The seeds a measurement depends on: the teacher's (`seed`, with its data and benchmark items), the
    calibration sample's and, after recovery, the recovery subset's and training order's (NaN without)."""
    seed = m.get("seed", 0)
    return {"teacher": m.get("teacher_dir", ""), "seed": seed, "calib_seed": m.get("calib_seed", seed),
            "recovery_seed": m.get("recovery_seed", seed) if recovered else float("nan")}


# The loss variants a recipe name spells out when they differ from the default (configs/variants.yaml)
VARIANTS = (("hidden", "hidden_target", "final_norm"), ("kl", "kl_scale", "token_mean"))


def recipe_name(recipe: dict) -> str:
    """'train:loss', plus '/variant' for a non-default hidden-state target or KL scaling of a loss that uses
    it ('lora:ce+hidden/blocks'), so that recipes differing only there are told apart, never pooled."""
    loss = recipe["loss"]
    extra = [recipe[key] for term, key, default in VARIANTS
             if term in loss.split("+") and recipe.get(key, default) != default]
    return f"{recipe['train']}:{loss}" + "".join(f"/{v}" for v in extra)


def recipe_loss(recipe: str) -> str:
    """The loss of a recipe name, without its variants: 'lora:ce+hidden/blocks' -> 'ce+hidden'."""
    return recipe.split(":", 1)[-1].split("/")[0]


def measured(records: list[dict]):
    """Every model the run records measured, in record order: (record, kind, columns, source). kind: "pruned" (each
    ratio of a pruning notebook, no recovery), "recovered" (a recovery run) or "curve" (each point of a
    data-efficiency curve); columns: paradigm, criterion, ratio (requested), matched (widthwise pruned to the LM
    ratio layerwise achieves for `ratio`), lm_ratio, recipe ('none', 'train:loss', or 'scratch' for a model of the
    pruned size trained from scratch with the compute of the recovery named by fraction), fraction (of the data; NaN
    without recovery), and the seeds (`_seeds`); source: the dict holding its scores (`AVG_KEY`, `RELATIVE_KEY`)."""
    for rec in records:
        m, nb = rec["metrics"], rec["notebook"]
        if nb in PRUNING_NOTEBOOKS:
            for r in m.get("per_ratio", []):
                yield rec, "pruned", {"paradigm": PRUNING_NOTEBOOKS[nb], "criterion": m.get("criterion"),
                                      "ratio": r.get("matched_to", r["requested_ratio"]),
                                      "matched": "matched_to" in r, "lm_ratio": r["lm_ratio"], "recipe": "none",
                                      "fraction": float("nan"), **_seeds(m, False)}, r
        elif nb in ("03_recovery", "04_data_efficiency", "06_from_scratch"):
            columns = {"paradigm": m["paradigm"], "criterion": m["criterion"], "ratio": m["ratio"],
                       "matched": bool(m.get("match_layerwise")) and m["paradigm"] == "widthwise",
                       "lm_ratio": m["lm_ratio"], "recipe": recipe_name(m["recipe"]),
                       **_seeds(m, True)}
            if nb == "03_recovery":
                yield rec, "recovered", {**columns, "fraction": _fraction(m)}, m
            elif nb == "06_from_scratch":  # a model of the pruned size trained from scratch: recipe "scratch"
                yield rec, "scratch", {**columns, "recipe": "scratch", "fraction": _fraction(m)}, m
            else:
                for point in m.get("curve", []):
                    yield rec, "curve", {**columns, "fraction": point["fraction"]}, point


def retention(records: list[dict]):
    """Long table of AVG % against compression, one row per measured model and seed: columns paradigm,
    criterion, ratio (requested), matched, lm_ratio, recipe ('none' or 'train:loss'), fraction (of the data;
    NaN without recovery), the seeds (teacher, seed, calib_seed, recovery_seed), avg_percent with its 95 %
    interval avg_percent_lo and avg_percent_hi (NaN where the record has none), run_id, items_key."""
    import pandas as pd

    nan = float("nan")
    rows = [{**columns, "avg_percent": source[AVG_KEY[kind]], "avg_percent_lo": source.get(INTERVAL_KEYS[kind][0], nan),
             "avg_percent_hi": source.get(INTERVAL_KEYS[kind][1], nan), "run_id": rec["run_id"],
             "items_key": f"{rec['run_id']}#{_items_key(kind, columns, source)}"}
            for rec, kind, columns, source in measured(records)]
    cols = ["paradigm", "criterion", "ratio", "matched", "lm_ratio", "recipe", "fraction", "teacher", "seed",
            "calib_seed", "recovery_seed", "avg_percent", "avg_percent_lo", "avg_percent_hi", "run_id", "items_key"]
    return pd.DataFrame(rows, columns=cols)


def _fraction(m: dict) -> float:
    """The share of the training data a recovery used: examples / of_examples when `data_fraction` is a count,
    else `data_fraction` (NaN when absent)."""
    f = m.get("data_fraction")
    rec = m.get("recovery") or {}
    if isinstance(f, int) and rec.get("of_examples"):
        return rec["examples"] / rec["of_examples"]
    return float(f) if f is not None else float("nan")


POOLED_BY = ["teacher", "paradigm", "criterion", "ratio", "matched", "recipe", "fraction"]


def pool(table):
    """One row per measured configuration of one teacher, pooling its seeds (calibration and recovery):
    avg_percent is the mean over them, `values` the per-seed AVG %, `seeds` their (calib_seed, recovery_seed),
    n_seeds their number, items_keys where their per-item results are; a single seed keeps its recorded
    interval, several get theirs from `_Judge.level` (NaN here)."""
    import pandas as pd

    t = table.copy()
    for c, default in (("matched", False), ("teacher", ""), ("calib_seed", 0), ("recovery_seed", float("nan")),
                       ("items_key", "")):
        if c not in t:
            t[c] = default
    # one run measured twice (a data-efficiency curve point and a recovery cell with the same seeds) counts once
    t = t.assign(_r=t["recovery_seed"].fillna(-1)).drop_duplicates([*POOLED_BY, "calib_seed", "_r"]).drop(columns="_r")
    rows = []
    for _, g in t.groupby(POOLED_BY, dropna=False, sort=False):
        first = g.iloc[0].to_dict()
        n = len(g)
        rows.append({**first, "avg_percent": float(g["avg_percent"].mean()), "lm_ratio": float(g["lm_ratio"].mean()),
                     "avg_percent_lo": first["avg_percent_lo"] if n == 1 else float("nan"),
                     "avg_percent_hi": first["avg_percent_hi"] if n == 1 else float("nan"),
                     "n_seeds": n, "values": tuple(g["avg_percent"]), "items_keys": tuple(g["items_key"]),
                     "seeds": tuple(zip(g["calib_seed"], g["recovery_seed"].fillna(-1)))})
    return pd.DataFrame(rows, columns=[*t.columns, "n_seeds", "values", "items_keys", "seeds"])


def pooled(table, items: dict | None = None):
    """`pool(table)` with every row's 95 % interval filled in (`_Judge.level`: of items, and of seeds where it
    pools several): one point per configuration and teacher, for figures and tables."""
    t = pool(table)
    judge = _Judge(items or {})
    for i, row in t[t["n_seeds"] > 1].iterrows():
        q = judge.level(row)
        t.loc[i, ["avg_percent_lo", "avg_percent_hi"]] = [q.lo, q.hi]
    return t


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
    """Deciding quantities of one teacher's pooled rows (`pool`), with intervals where the records carry
    per-item results: the paired bootstrap over items of the mean over seeds, widened by the seeds' t
    half-width (`intervals.with_seeds`)."""

    def __init__(self, items: dict):
        self.items, self.pointwise = items, False

    def _mean(self, row, teacher: dict) -> dict | None:
        """The per-item mean over the row's seeds, on the teacher's benchmarks (None without per-item results)."""
        keys = row["items_keys"] if "items_keys" in row else (row["items_key"],)
        runs = [self.items.get(k) for k in keys]
        return None if any(r is None for r in runs) else I.mean_items([{b: r[b] for b in teacher} for r in runs])

    def _teacher(self, row) -> dict | None:
        return self.items.get(f"teacher@{row['teacher']}" if "teacher" in row else "", self.items.get("teacher"))

    @staticmethod
    def _n(row) -> int:
        return int(row["n_seeds"]) if "n_seeds" in row else 1

    def level(self, row) -> "I.Interval":
        """A model's AVG % (mean over its seeds) with its 95 % interval (NaN bounds without per-item results)."""
        if self._n(row) == 1:
            return I.Interval(float(row["avg_percent"]), float(row["avg_percent_lo"]), float(row["avg_percent_hi"]))
        t = self._teacher(row)
        mean = self._mean(row, t) if t else None
        if mean is None:
            return I.Interval(float(row["avg_percent"]), float("nan"), float("nan"))
        return I.with_seeds(I.interval(mean, t), I.seed_half_width(list(row["values"])))

    def diff(self, a, b) -> "I.Interval":
        """AVG %(a) - AVG %(b), paired over the same items; with seeds, widened by the seeds' t half-width
        (of the per-seed differences when both have the same seeds, else of each side's mean, in quadrature)."""
        t = self._teacher(a)
        ia, ib = (self._mean(a, t), self._mean(b, t)) if t else (None, None)
        if ia is None or ib is None:
            nan = float("nan")
            return I.Interval(float(a["avg_percent"] - b["avg_percent"]), nan, nan)
        items_part = I.difference(ia, ib, t)
        na, nb = self._n(a), self._n(b)
        if na > 1 and nb > 1 and a["seeds"] == b["seeds"]:
            half = I.seed_half_width([x - y for x, y in zip(a["values"], b["values"])])
        else:
            half = float(np.hypot(I.seed_half_width(list(a["values"])) if na > 1 else 0.0,
                                  I.seed_half_width(list(b["values"])) if nb > 1 else 0.0))
        return I.with_seeds(items_part, half)

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


@dataclass
class Part:
    """One tested part of a claim: `label` (no numbers, the same for every teacher), its deciding quantity `q`,
    the margin it is compared with (holds above it, or below with holds_above=False), the seeds behind it,
    and `context` (the levels behind a difference, for a reader)."""

    label: str
    q: "I.Interval"
    margin: float
    holds_above: bool = True
    n_seeds: int = 1
    signed: bool = True
    context: str = ""


def _parts(t, fraction: float, judge: _Judge) -> dict[str, list[Part]]:
    """The tested parts of every claim, from one teacher's pooled rows."""
    none = t[t["recipe"] == "none"]
    at_fraction = t[(t["recipe"] != "none") & ((t["fraction"] - fraction).abs() < 1e-9)]
    rec, scratch = at_fraction[at_fraction["recipe"] != "scratch"], at_fraction[at_fraction["recipe"] == "scratch"]
    parts: dict[str, list[Part]] = {c[0]: [] for c in CLAIMS}
    n = _Judge._n

    # 1: no recovery, width - layer > 0 at requested 15 % and 30 %, at layerwise's LM ratio where measured
    for r in (0.15, 0.30):
        l = _best(none, paradigm="layerwise", ratio=r)
        w = _best(none, paradigm="widthwise", ratio=r, matched=True) if len(none) else None
        w = w if w is not None else _best(none, paradigm="widthwise", ratio=r, matched=False)
        if w is not None and l is not None:
            parts["1"].append(Part(f"{r:.0%}: width - layer", judge.diff(w, l), 0.0, n_seeds=max(n(w), n(l)),
                                   context=f"width {w.avg_percent:.1f} vs layer {l.avg_percent:.1f} at LM ratios "
                                           f"{w.lm_ratio:.1%} and {l.lm_ratio:.1%}"))

    # 2: at 15 % projector-only recovers something and is within 2 points of the best; at the next larger ratio
    # it falls short of the best by more than 2 (else "suffices at small ratios" says nothing)
    for p in ("layerwise", "widthwise"):
        proj, best = _best(rec, paradigm=p, ratio=0.15, recipe="projector:ce"), _best(rec, paradigm=p, ratio=0.15)
        bare = _best(none, paradigm=p, ratio=0.15, matched=bool(proj["matched"])) if proj is not None else None
        if proj is None or best is None or bare is None:
            continue
        parts["2"] += [Part(f"{p} 15%: projector - none", judge.diff(proj, bare), 0.0, n_seeds=n(proj)),
                       Part(f"{p} 15%: best - projector", judge.diff(best, proj), 2.0, False, n(proj),
                            context=f"best {best.recipe} {best.avg_percent:.1f}")]
        larger = rec[(rec["paradigm"] == p) & (rec["ratio"] > 0.15) & (rec["recipe"] == "projector:ce")]
        for r in sorted(larger["ratio"].unique())[:1]:  # the next larger ratio measured
            proj_r, best_r = _best(rec, paradigm=p, ratio=r, recipe="projector:ce"), _best(rec, paradigm=p, ratio=r)
            parts["2"].append(Part(f"{p} {r:.0%}: best - projector", judge.diff(best_r, proj_r), 2.0,
                                   n_seeds=n(proj_r), context=f"best {best_r.recipe}"))

    # 3: ce+hidden within 0.5 point of the best recipe at every (paradigm, ratio) with several recipes
    for (p, r), g in rec.groupby(["paradigm", "ratio"]):
        is_hidden = g["recipe"].map(recipe_loss) == "ce+hidden"  # any target of the hidden-state loss
        if is_hidden.all() or not is_hidden.any():
            continue
        hid, other = _best(g[is_hidden]), _best(g[~is_hidden])
        parts["3"].append(Part(f"{p} {r:.0%}: ce+hidden - best other", judge.diff(hid, other), -0.5,
                               n_seeds=min(n(hid), n(other)),
                               context=(f"{hid.recipe} " if is_hidden.sum() > 1 else "")
                               + f"{hid.avg_percent:.1f} vs {other.recipe} {other.avg_percent:.1f}"))

    # 4: with `fraction` of the data, the best recipe at <= 30 % keeps > 95 %
    for (p, r), g in rec[rec["ratio"] <= 0.30].groupby(["paradigm", "ratio"]):
        best = _best(g)
        parts["4"].append(Part(f"{p} {r:.0%}: best AVG %", judge.level(best), 95.0, n_seeds=n(best), signed=False,
                               context=best.recipe))

    # 5: with recovery, layer - width > 0 up to 30 %, width - layer > 0 from 45 %, at one LM ratio where
    # measured (widthwise `matched`), else at the requested one (needs both sides)
    for r in sorted(rec["ratio"].unique()):
        l = _best(rec, paradigm="layerwise", ratio=r)
        widths = rec[(rec["paradigm"] == "widthwise") & (rec["ratio"] == r)]
        w = _best(widths[widths["matched"]]) if widths["matched"].any() else _best(widths)
        if l is None or w is None:
            continue
        small = r <= 0.30
        parts["5"].append(Part(f"{r:.0%}: {'layer - width' if small else 'width - layer'}",
                               judge.diff(l, w) if small else judge.diff(w, l), 0.0, n_seeds=min(n(l), n(w)),
                               context=f"layer {l.avg_percent:.1f} ({l.recipe}) vs width {w.avg_percent:.1f} "
                                       f"({w.recipe}) at LM ratios {l.lm_ratio:.1%} and {w.lm_ratio:.1%}"))

    # 6: at >= 60 %, the best recovered model does no better than a model of its size trained from scratch with
    # the same compute (where measured; else the old reading: it keeps < 90 %)
    best6 = _best(rec[rec["ratio"] >= 0.60])
    if best6 is not None:
        sc = _best(scratch, paradigm=best6["paradigm"], ratio=best6["ratio"])
        if sc is not None:
            parts["6"].append(Part(f"{best6['ratio']:.0%}: best pruned + recovered - from scratch",
                                   judge.diff(best6, sc), 0.0, False, min(n(best6), n(sc)),
                                   context=f"{best6['paradigm']} {best6['recipe']} {best6.avg_percent:.1f} vs "
                                           f"from scratch {sc.avg_percent:.1f}"))
        else:
            parts["6"].append(Part(f"best at {best6['ratio']:.0%}", judge.level(best6), 90.0, False, n(best6),
                                   signed=False, context=f"{best6['paradigm']}, {best6['recipe']}; no from-scratch "
                                                         "model measured"))
    return parts


TESTS = {
    "1": "width - layer AVG % > 0 at requested 15 % and 30 % (no recovery), widthwise pruned to the LM ratio the "
         "layerwise plan achieved (whole blocks) where measured",
    "2": "at 15 %: projector-only - no recovery > 0 and best - projector-only < 2 points; at the next larger "
         "ratio measured: best - projector-only > 2 points",
    "3": "ce+hidden - the best other recipe > -0.5 point at every (paradigm, ratio) with several recipes",
    "4": "best AVG % with {percent:g} % of the data > 95 at every ratio <= 30 %",
    "5": "best recovered: layer - width > 0 at <= 30 %, width - layer > 0 at >= 45 % (needs both sides), widthwise "
         "at layerwise's LM ratio where measured",
    "6": "best recovered - a model of its size trained from scratch with the same compute (06_from_scratch) < 0 "
         "at >= 60 % (without a from-scratch run: best recovered AVG % at >= 60 % < 90)",
}


def claims_table(table, fraction: float = 0.05, items: dict | None = None):
    """One row per claim of the study: its figure, ours (from `retention(...)`, each deciding quantity with its
    95 % interval in brackets and the seeds behind it), the verdict ('yes', 'no', 'undecided', or 'no evidence'
    when the sweep did not measure what the claim needs) and the test applied, so a reader can disagree with
    the operationalisation. `items`: `item_results(records)`, for the paired intervals.

    Seeds of one teacher (calibration, recovery) are pooled (`pool`); with several teachers (their own data,
    benchmark items and seeds), each part's quantity is averaged over the teachers with a 95 % t-interval
    across them (`intervals.across`), and the per-teacher values are listed."""
    import pandas as pd

    t = table.dropna(subset=["avg_percent"]).copy()  # AVG % is undefined only for an untrained teacher
    for c in ("avg_percent_lo", "avg_percent_hi"):
        if c not in t:
            t[c] = float("nan")
    t["ratio"] = t["ratio"].round(2)
    t = pool(t)
    judge = _Judge(items or {})
    teachers = list(dict.fromkeys(t["teacher"]))
    by_teacher = [_parts(t[t["teacher"] == d], fraction, judge) for d in teachers] or [_parts(t, fraction, judge)]
    out = []
    for cid, claim, theirs in CLAIMS:
        if len(by_teacher) == 1:
            parts = by_teacher[0][cid]
            shown = [f"{p.label} {_show(p.q, p.signed)}" + (f" ({p.context})" if p.context else "")
                     + (f", {p.n_seeds} seeds" if p.n_seeds > 1 else "") for p in parts]
            verdicts = [judge.verdict(p.q, p.margin, p.holds_above) for p in parts]
        else:
            labels = [p.label for p in by_teacher[0][cid]]
            shown, verdicts = [], []
            for label in labels:
                each = [next((p for p in bt[cid] if p.label == label), None) for bt in by_teacher]
                each = [p for p in each if p is not None]
                q = I.across([p.q.value for p in each])
                verdicts.append(judge.verdict(q, each[0].margin, each[0].holds_above))
                shown.append(f"{label} {_show(q, each[0].signed)} over {len(each)} teachers ("
                             + ", ".join(f"{p.q.value:.1f}" for p in each) + ")")
        out.append({"claim": f"{cid}. {claim}", "study": theirs, "this run": "; ".join(shown) or "not measured",
                    "held": _combine(verdicts) if verdicts else "no evidence",
                    "test": TESTS[cid].format(percent=100 * fraction)})
    table_out = pd.DataFrame(out)
    if judge.pointwise:
        table_out["test"] += " (point estimates: these records carry no per-item results)"
    return table_out


RATIO_BANDS = [("<= 15 %", 0.0, 0.15), ("16-30 %", 0.15, 0.30), ("31-45 %", 0.30, 0.45), (">= 46 %", 0.45, 1.0)]
BUDGETS = [("no training", ["none"]), ("projector only", ["none", "projector"]),
           ("LoRA", ["none", "projector", "lora"]), ("any", ["none", "projector", "lora", "full"])]


def reading_fraction(table, wanted: float = 0.05) -> float:
    """The data share the claims and the guide are read at: `wanted` when a recovery used it, else the share
    most recoveries used (ties: the larger), so that a sweep of other shares (configs/gemma.yaml: 2.5 %) is
    read at its own; `wanted` when nothing was recovered."""
    f = table.loc[table["recipe"] != "none", "fraction"].dropna()
    if not len(f) or ((f - wanted).abs() < 1e-9).any():
        return wanted
    counts = f.round(9).value_counts()
    return float(max(counts[counts == counts.max()].index))


def decision_guide(table, fraction: float = 0.05, items: dict | None = None):
    """For each band of achieved LM ratio and training budget, the (paradigm, recipe) that retained most in this run
    (recovery with `fraction` of the data), computed from the measurements, never written by hand. `tie with`
    names the runner-up (another paradigm or recipe) when the paired 95 % interval of best - runner-up
    includes 0 (`items`: `item_results(records)`; without them, no tie can be called and the column says so).
    Seeds are pooled (`pool`); of several teachers, the first one's runs are used."""
    import pandas as pd

    t = table.dropna(subset=["avg_percent"])
    t = t[(t["recipe"] == "none") | ((t["fraction"] - fraction).abs() < 1e-9)].copy()
    for c in ("avg_percent_lo", "avg_percent_hi"):
        if c not in t:
            t[c] = float("nan")
    t = pool(t)
    if t["teacher"].nunique() > 1:  # one teacher's study (the first): rows of several would not be paired
        t = t[t["teacher"] == t["teacher"].iloc[0]]
    t["trained"] = t["recipe"].str.split(":").str[0]
    judge, rows = _Judge(items or {}), []
    for band, lo, hi in RATIO_BANDS:
        # the achieved ratio in whole percent, as the bands are labelled (a plan met to 45.01 % is in "31-45 %"):
        # a matched widthwise model and the layerwise one share a band
        x = (100 * t["lm_ratio"]).round()
        in_band = t[(x > 100 * lo) & (x <= 100 * hi)] if lo else t[x <= 100 * hi]
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
                         "recipe": best["recipe"], "ratio": best["lm_ratio"], "AVG %": round(best["avg_percent"], 1),
                         "tie with": tie, "advice": advice})
    return pd.DataFrame(rows)


def relative_by_benchmark(records: list[dict]):
    """Per-benchmark % of the teacher: columns paradigm, ratio, recipe, fraction, benchmark, relative."""
    import pandas as pd

    rows = [{**columns, "benchmark": b, "relative": v} for _, kind, columns, source in measured(records)
            if kind in RELATIVE_KEY for b, v in source[RELATIVE_KEY[kind]].items()]
    return pd.DataFrame(rows, columns=["paradigm", "ratio", "recipe", "fraction", "benchmark", "relative"])
