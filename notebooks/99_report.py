# %% [markdown]
# # The study in one page: what pruning costs, what recovery buys back, and which claims held
#
# This page is computed from the run records of the last sweep (`reports/runs/<run-id>.json`, one per
# executed notebook); nothing on it is written by hand. **AVG %** is the mean over benchmarks of
# $100\,s_b(\text{model})/s_b(\text{teacher})$, the study's measure; the **compression ratio** is the fraction of
# language-model parameters removed (requested, and as achieved: layerwise pruning removes whole blocks).
# Each notebook's own page (linked from the index) shows the details.

# %%
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
runs_dir = "../reports/runs"   # where the sweep wrote its run records
fraction = 0.05                # the data share the claims and the guide are read at (else the one most recoveries used)
metrics_path = "../reports/summary.json"
reports_dir = ""               # folder of the rendered page, for figures/ and tables/ (empty: that of metrics_path)

# %%
import matplotlib as mpl
from pathlib import Path
from studylib import claims as C, files, report as R, sweep as S
reports_dir = Path(reports_dir or os.path.dirname(os.path.abspath(metrics_path)))
figures, tables = reports_dir / "figures", reports_dir / "tables"
records = S.collect(Path(runs_dir))
table = C.retention(records)
undefined = int(table["avg_percent"].isna().sum())  # only when a teacher scores 0 everywhere (smoke runs)
table = table.dropna(subset=["avg_percent"])
if (read_at := C.reading_fraction(table, fraction)) != fraction:
    print(f"no recovery used {fraction:.1%} of the data: the claims and the guide are read at {read_at:.1%}, "
          "the share most recoveries used")
    fraction = read_at
counts = pd.Series([r["notebook"] for r in records], dtype=object).value_counts().sort_index()
print(f"{len(records)} finished runs" + (f"; {undefined} points without AVG % (the teacher scores 0 on every "
                                         "benchmark) left out" if undefined else ""))
R.show(pd.DataFrame({"notebook": [R.SECTIONS.get(n, n) for n in counts.index], "runs": counts.to_numpy()}))

# %% [markdown]
# ## The study's claims against this sweep
#
# Each row states the test applied to our measurements: a deciding quantity (a difference of AVG % between
# two models, or one model's AVG %) against a margin. Numbers in brackets are 95 % intervals from a paired
# bootstrap over benchmark items (every model is scored on the same items as the teacher,
# `studylib.intervals`). A claim "held" or "did not hold" only when the interval lies wholly on one side of the
# margin; it is "undecided" when the interval overlaps it. "no evidence" means the sweep did not measure what
# the claim needs (run a larger grid, e.g. `configs/full.yaml`).

# %%
claims = C.claims_table(table, fraction, C.item_results(records))
guide = C.decision_guide(table, fraction, C.item_results(records))
assert len(claims) == len(C.CLAIMS) and set(claims["held"]) <= {"yes", "no", "undecided", "no evidence"}
assert table["avg_percent"].dropna().between(0, 200).all(), "AVG % values are percentages"
R.show(claims[["claim", "held", "study", "this run", "test"]], verdict="held",
       rename={"held": "verdict", "study": "the study (LLaVA-v1.5-7B)", "this run": "this sweep"})

# %% [markdown]
# ## Retention against the achieved compression, for each paradigm and recipe
#
# "no recovery" is pruning alone (notebooks 01 and 02); the other lines are recoveries (notebooks 03 and 04)
# with the data share above. Each line starts at the teacher (0 %, 100 %); the dotted line is 95 % of the
# teacher (the study's data-efficiency goal). The x axis is the *achieved* share of LM parameters removed. Each
# point is the mean over its seeds, its band the 95 % interval of items and seeds.

# %%
view = C.pooled(table[((table["recipe"] == "none") | ((table["fraction"] - fraction).abs() < 1e-9))
                      & (table["recipe"] != "scratch")],
                C.item_results(records))  # one point per configuration: the mean over its seeds
fig = R.retention_figure(view)
if fig is not None:
    R.save_figure(fig, figures / "retention.png")
    plt.show()
    piv = view.assign(recipe=view["recipe"].map(R.recipe_label)).pivot_table(
        index=["paradigm", "ratio", "matched"], columns="recipe", values="avg_percent", aggfunc="max").reset_index()
    piv["matched"] = piv["matched"].map({True: "layerwise's LM ratio", False: "as requested"})
    R.show(piv, caption="AVG % of the teacher (mean over seeds), by requested ratio; widthwise pruned as requested "
           "or to the LM ratio layerwise achieved at it", percent=["ratio"],
           digits={c: 1 for c in piv.columns if c not in ("paradigm", "ratio", "matched")},
           rename={"ratio": "requested ratio", "matched": "pruned to"})
else:
    print("no AVG % measured in this sweep")

# %% [markdown]
# ## Per benchmark, at each ratio (radar plots, as the study's Figure 1)
#
# Each axis is one benchmark, as % of the teacher's score; the dashed ring is the teacher (100 %).

# %%
rel = C.relative_by_benchmark(records).dropna(subset=["relative"])
rel = rel[(rel["recipe"] == "none") | ((rel["fraction"] - fraction).abs() < 1e-9)]
fig = R.radar_figure(rel)
if fig is not None:
    R.save_figure(fig, figures / "radar.png")
    plt.show()
else:
    print("no per-benchmark scores relative to the teacher in this sweep (or fewer than 3 benchmarks)")

# %% [markdown]
# ## Decision guide (computed from this sweep)
#
# For each compression band and training budget, the paradigm and recipe that retained most here, with the
# data share above. "not worth it" marks bands where even the best choice keeps under 80 % of the teacher.

# %%
R.show(guide.assign(recipe=guide["recipe"].map(R.recipe_label)) if len(guide) else guide, percent=["ratio"],
       digits={"AVG %": 1}, rename={"ratio": "at ratio"})

# %% [markdown]
# ## The teacher

# %%
teachers = [r for r in records if r["notebook"] == "00_teacher"]
if teachers:
    t = teachers[-1]["metrics"]
    scores = pd.DataFrame({"score": t["scores"], "blank images": t["blank_image_scores"], "chance": t["chance"]})
    scores = scores.drop(index="image_mean", errors="ignore")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    scores[["score", "blank images"]].plot.bar(ax=ax)
    ax.scatter(range(len(scores)), scores["chance"], color="k", marker="_", s=400, zorder=3, label="chance")
    ax.set(ylim=(0, 1), ylabel="accuracy", xlabel="benchmark", title="teacher: accuracy, with blank images, and chance")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    plt.xticks(rotation=20); plt.show()
    R.show(scores.rename_axis("benchmark").reset_index(), digits=3)
else:
    print("no 00_teacher run in this sweep")

# %% [markdown]
# ## Layer importance across depth (notebook 01)

# %%
layer_runs = [r for r in records if r["notebook"] == "01_layerwise"]
if layer_runs:
    imp = layer_runs[-1]["metrics"]["importance"]
    prof = pd.DataFrame([{"criterion": R.criterion_label(c), "block": i, "score": v}
                         for c, s in imp.items() for i, v in enumerate(s)])
    grp = prof.groupby("criterion")["score"]
    prof["normalised"] = (prof["score"] - grp.transform("min")) / (grp.transform("max") - grp.transform("min")).replace(0, 1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.lineplot(data=prof, x="block", y="normalised", hue="criterion", marker="o", ax=ax)
    ax.set(xlabel="decoder block", ylabel="importance (min-max per criterion)", title="lowest blocks are removed first")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="criterion"); plt.show()
else:
    print("no 01_layerwise run in this sweep")

# %% [markdown]
# ## Data efficiency (notebook 04)

# %%
curve = table[table["run_id"].isin([r["run_id"] for r in records if r["notebook"] == "04_data_efficiency"])]
if len(curve):
    curve = curve.assign(recipe=curve["recipe"].map(R.recipe_label))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.lineplot(data=curve, x="fraction", y="avg_percent", hue="recipe", style="paradigm", marker="o", ax=ax)
    ax.axhline(95, color="k", ls=":", lw=1, label="95 % of the teacher")
    ax.set(xscale="log", xlabel="share of the instruction data (log scale)", ylabel="AVG % of the teacher")
    ax.set_xticks(sorted(curve["fraction"].unique())); ax.minorticks_off()
    ax.xaxis.set_major_formatter(mpl.ticker.PercentFormatter(1.0, decimals=0))
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False); plt.show()
    R.show(curve[["paradigm", "ratio", "recipe", "fraction", "avg_percent"]], percent=["ratio", "fraction"],
           digits={"avg_percent": 1}, rename={"avg_percent": "AVG %", "fraction": "data share", "ratio": "requested ratio"})
else:
    print("no AVG % from a 04_data_efficiency run in this sweep")

# %% [markdown]
# ## Speed and memory (notebook 05)
#
# Prefill at the goal batch size: the paired speedup against the teacher (median, with the interquartile range
# over repeats in brackets), the ideal from LM FLOPs, and the share of the ideal reached. Every model, batch size
# and metric is in the linked CSV.

# %%
eff = [r for r in records if r["notebook"] == "05_efficiency"]
if eff and isinstance(eff[-1]["metrics"].get("speedups"), list):
    m = eff[-1]["metrics"]
    R.show(R.efficiency_summary(m), percent=["requested", "achieved"],
           digits={"median": 1, "speedup": 2, "ideal": 2, "share_of_ideal": 0},
           units={"median": "ms", "speedup": "×", "ideal": "×", "share_of_ideal": "%"},
           rename={"median": "prefill", "achieved": "achieved LM ratio", "round_to": "round to",
                   "share_of_ideal": "share of ideal"},
           caption=f"prefill, batch {m.get('goal_batch_size')}, on {m.get('device', 'cpu')}",
           csv=tables / "efficiency.csv", link_from=reports_dir, full=pd.DataFrame(m["speedups"]))
else:
    print("no efficiency run in this sweep")

# %% [markdown]
# ## Every retention point
#
# The long table behind the figures above (one row per measured point); the page shows its first rows, the CSV
# holds all.

# %%
R.show(table.assign(recipe=table["recipe"].map(R.recipe_label), criterion=table["criterion"].map(R.criterion_label))
       .drop(columns=["run_id", "items_key"]),
       percent=["ratio", "lm_ratio", "fraction"], digits={"avg_percent": 1}, max_rows=15,
       rename={"ratio": "requested ratio", "lm_ratio": "achieved LM ratio", "fraction": "data share",
               "avg_percent": "AVG %"},
       csv=tables / "retention.csv", link_from=reports_dir)
summary = {"notebook": "99_report", "runs": len(records), "fraction": fraction,
           "claims": claims.to_dict(orient="records"), "decision_guide": guide.to_dict(orient="records"),
           "retention": table.to_dict(orient="records"),
           "figures": sorted(p.name for p in figures.glob("*.png")) if figures.exists() else []}
files.write_json(metrics_path, summary)
