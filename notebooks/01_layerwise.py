# %% [markdown]
# # Layerwise pruning: which decoder blocks can go, and what removing them costs without recovery
#
# Layerwise pruning deletes whole decoder blocks of the language model (LM); the vision tower and the
# projector are never touched. The study uses ShortGPT's **Block Influence**: for block $i$ with input
# hidden states $x_i$ and output $x_{i+1}$,
#
# $$\mathrm{BI}_i = 1 - \mathbb{E}_{t}\left[\frac{x_{i,t}^\top x_{i+1,t}}{\lVert x_{i,t}\rVert\,\lVert x_{i+1,t}\rVert}\right],$$
#
# averaged over every token $t$ (image and text) of random training samples (50 here, as the study). A block
# that barely changes its input has a low BI and is removed first; the $n$ blocks with the lowest BI go,
# not necessarily contiguous. The other criteria compared here:
#
# * **angular** (Gromov et al.): $d(x_l, x_{l+n}) = \frac{1}{\pi}\arccos\cos(x_l, x_{l+n})$ on the last token; the
#   contiguous run of $n$ blocks starting at $l^* = \arg\min_l d(x_l, x_{l+n})$ is removed;
# * **loss**: $\Delta\mathcal{L}_i = \mathcal{L}(\text{block } i \text{ skipped}) - \mathcal{L}$, the answer-token loss increase
#   on the calibration samples when block $i$ is replaced by the identity;
# * **deepest**: the deepest blocks go first, the last block stays (what BI chooses on LLaVA-1.5);
# * **random**: a seeded random order (the baseline a criterion should beat; measured below, not assumed).
#
# The **compression ratio** is the fraction of LM parameters removed (decoder blocks, embeddings, final norm,
# LM head); with whole blocks it is the nearest multiple of one block's share. Pruned models are evaluated
# **without recovery**, relative to the unpruned teacher:
# $\mathrm{AVG\,\%} = \frac{1}{|B|}\sum_{b \in B} 100\,\frac{s_b(\text{pruned})}{s_b(\text{teacher})}$. Importance is computed once per
# criterion and reused for every ratio.

# %%
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
criterion = "bi"           # the study's criterion, measured at every ratio
criteria = []              # compared at compare_ratio; empty: every registered layerwise criterion
ratios = [0.15, 0.30, 0.45, 0.60]   # fractions of LM parameters to remove
compare_ratio = 0.30
teacher_dir = ""           # the unpruned model, a checkpoint folder or hub id; a sweep passes the teacher its
                           # 00_teacher cell trained; empty: the default teacher for seed and n_train (cached)
trust_remote_code = False  # True: allow a teacher_dir that ships its own code (Bunny); see README
device = "cpu"             # cpu | cuda
dtype = "float32"          # float32 | bfloat16 (GPUs only)
calib_samples = 50         # random training samples for bi / angular / loss (the study: 50-100)
seed = 0                   # the teacher's and its data's seed (instruction mix, benchmark items)
calib_seed = 0             # the calibration sample's seed (and the random criterion's)
n_train = 20000            # the instruction mix (as 00_teacher's)
train_json = ""            # empty: the embedded mix; else LLaVA-format data, e.g. llava_v1_5_mix665k.json
image_folder = ""          # images of train_json (empty: its folder)
n_bench = 500              # items per benchmark
real_benchmarks = ""       # empty: the embedded suite; else "pope=lmms-lab/POPE,gqa=/data/gqa" (studylib.benchmarks)
checkpoint_root = ""       # empty: data/checkpoints
cache_dir = ""             # empty: data/cache
check_quality = True       # assert quality (off for the smoke run of the tiny preset)
metrics_path = "../reports/runs/01_layerwise.json"

# %% [markdown]
# ## The teacher and its scores (the 100 % of every AVG %)

# %%
import copy
import numpy as np
from studylib import plots, pruning as P, study as S
teacher = S.load_teacher(**{name: globals()[name] for name in S.TEACHER_PARAMETERS})  # as set above
num_layers = teacher.num_layers
S.describe(teacher)

# %% [markdown]
# ## Importance across depth
#
# Scores are computed once per criterion on the same calibration samples. Units differ between criteria,
# so each profile is min-max normalised to $[0, 1]$; the blocks with the lowest values are removed first.

# %%
all_criteria = list(dict.fromkeys([criterion, *(criteria or P.criteria("layerwise"))]))
calib = S.calibration(teacher, "bi", calib_samples, calib_seed)  # one sample set for every data-driven criterion
print(f"calibration: {calib_samples} samples, fingerprint {P.calibration_fingerprint(calib)}")
scores, score_seconds = S.importance(teacher, "layerwise", all_criteria,
                                     {c: calib if P.needs_calibration(c) else [] for c in all_criteria}, calib_seed)
profile = pd.DataFrame([{"criterion": c, "block": i, "score": v}
                        for c, s in scores.items() for i, v in enumerate(s.scores)])
g = profile.groupby("criterion")["score"]
profile["normalised"] = (profile["score"] - g.transform("min")) / (g.transform("max") - g.transform("min")).replace(0, 1)
ax = sns.lineplot(data=profile, x="block", y="normalised", hue="criterion", marker="o")
ax.set(xlabel="decoder block", ylabel="importance (min-max per criterion)", xticks=range(num_layers))
plt.show()
profile.pivot(index="criterion", columns="block", values="score").round(4)

# %% [markdown]
# ## AVG % against the compression ratio (criterion `bi` by default, no recovery)
#
# Each ratio removes the nearest whole number of blocks; the achieved LM ratio is what the x axis shows.
# The dashed line is a blind guesser's AVG % (chance level of every benchmark relative to the teacher).

# %%
results = S.prune_grid(teacher, scores, [(criterion, r) for r in ratios])
by_ratio, per_benchmark = S.ratio_table(teacher, results, criterion, ratios)
plots.ratio_curves(by_ratio, per_benchmark, f"{criterion}: AVG % without recovery", teacher.chance_avg)
plt.show()
by_ratio

# %% [markdown]
# ## Criteria compared at one ratio, and the blocks each one removes

# %%
results |= S.prune_grid(teacher, scores, [(c, compare_ratio) for c in all_criteria if (c, compare_ratio) not in results])
compare = pd.DataFrame([S.summary_row(teacher, c, results[c, compare_ratio]) for c in all_criteria])
fig, axes = plt.subplots(1, 2, figsize=(13, 3.5), gridspec_kw={"width_ratios": [1, 1.4]})
plots.criteria_bars(axes[0], compare, compare_ratio, teacher.chance_avg)
removed_map = pd.DataFrame([[int(i in r) for i in range(num_layers)] for r in compare["blocks removed"]],
                           index=compare["criterion"], columns=range(num_layers))
sns.heatmap(removed_map, cbar=False, cmap="Reds", linewidths=0.5, linecolor="w", ax=axes[1])
axes[1].set(title="blocks removed (red)", xlabel="decoder block", ylabel="")
plt.show()
compare

# %%
lm_params, all_params = P.count_params(teacher.model)
block_share = sum(p.numel() for p in P.describe_lm(teacher.model).blocks[0].layer.parameters()) / lm_params
for (c, r), pruned in results.items():
    plan = pruned.plan
    assert plan.requested_ratio == r and 0 < plan.lm_ratio < 1, (c, r)
    assert plan.model_ratio < plan.lm_ratio, "the vision tower and projector are never pruned"
    assert abs(plan.lm_ratio - r) <= block_share / 2 + 1e-9, f"{c} {r}: not the nearest whole number of blocks"
    assert pruned.table[pruned.table["metric"] == "accuracy"]["score"].between(0, 1).all(), "accuracies in [0, 1]"
    assert set(pruned.relative["benchmark"]) == set(teacher.scored)
if teacher.scored:
    assert np.allclose(S.relative(teacher, teacher.reference)["relative"], 100.0), "the teacher itself: 100 %"
plan0 = P.make_plan(teacher.model, scores[criterion], 0.0)
assert plan0.kept_layers == list(range(num_layers)) and plan0.lm_ratio == 0.0
assert P.apply_plan(copy.deepcopy(teacher.model), plan0).config.text_config.num_hidden_layers == num_layers
if "deepest" in all_criteria:
    kept = results["deepest", compare_ratio].plan.kept_layers
    assert kept == list(range(len(kept) - 1)) + [num_layers - 1], "deepest removes the blocks before the last"
avg = by_ratio.set_index("requested")["AVG %"]
if check_quality:
    S.assert_pruning_quality(teacher, avg)
avg

# %% [markdown]
# Does each criterion beat a random order? Its AVG % minus random's at the comparison ratio, on the same items,
# with the 95 % paired-bootstrap interval: a criterion is better than chance only where the interval lies
# above 0. This is measured, not assumed (on one teacher seed, random beat Taylor at 30 %).

# %%
S.minus_random(teacher, results, all_criteria, compare_ratio)

# %%
metrics = {"notebook": "01_layerwise", "seed": seed, "calib_seed": calib_seed, "criterion": criterion,
           "calib_samples": calib_samples, "calibration_fingerprint": P.calibration_fingerprint(calib),
           **S.pruning_metrics(teacher, results, criterion, ratios, compare_ratio, all_criteria),
           "importance": {c: s.scores for c, s in scores.items()},
           "score_seconds": score_seconds, "teacher_eval_seconds": teacher.eval_seconds}
S.write_metrics(metrics, metrics_path)
