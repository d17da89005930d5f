# %% [markdown]
# # Widthwise pruning: removing attention heads and MLP neurons, and what it costs without recovery
#
# Widthwise pruning keeps every decoder block but makes it narrower, as LLM-Pruner's block-wise mode in the
# study: whole **attention heads** go (a head $h$ is its rows of $W_q, W_k, W_v$ and its columns of $W_o$,
# removed together) and whole **MLP neurons** go (neuron $j$ is row $j$ of $W_{gate}$ and $W_{up}$ and column
# $j$ of $W_{down}$). The hidden size, the embeddings, the vision tower and the projector stay.
#
# The importance of a coupled group $g$ is computed from its weights $w$, and, for data-driven criteria, from
# calibration samples:
#
# * **taylor** (the study, 10 samples): first-order Taylor expansion of the answer-token loss,
#   $I_g = \sum_{w \in g} \left| w \, \frac{\partial \mathcal{L}}{\partial w} \right|$, from one forward and backward pass;
# * **taylor-vector**: $I_g = \left| \sum_{w \in g} w \, \frac{\partial \mathcal{L}}{\partial w} \right|$;
# * **l1** / **l2**: $\sum_{w \in g} |w|$ and $\sum_{w \in g} w^2$ (no data);
# * **wanda**: $\sum_{(i,j) \in g} |W_{ij}| \, \lVert X_j \rVert_2$, with $X_j$ the $j$-th input channel of the layer over all
#   calibration tokens;
# * **activation** (Minitron): mean $|a|$ of the head output or neuron activation over tokens;
# * **random**: a seeded random order.
#
# As the study, every pruned block keeps the same number of heads and neurons and the first and last
# blocks are skipped, so the per-block ratio is larger than the headline **compression ratio** (the fraction
# of LM parameters removed, met within one point). Models are evaluated **without recovery**:
# $\mathrm{AVG\,\%} = \frac{1}{|B|}\sum_{b \in B} 100\,\frac{s_b(\text{pruned})}{s_b(\text{teacher})}$. Importance is computed once
# per criterion and reused for every ratio.

# %%
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
criterion = "taylor"       # the study's criterion, measured at every ratio
criteria = []              # compared at compare_ratio; empty: every registered widthwise criterion
ratios = [0.15, 0.30, 0.45, 0.60]   # fractions of LM parameters to remove
match_layerwise = True     # also prune `criterion` to the LM ratio a layerwise plan achieves for each ratio
compare_ratio = 0.30
layers = None              # list of blocks that may be pruned, None: all but the first and the last
round_to = 1               # kept neurons a multiple of round_to
teacher_dir = ""           # the unpruned model, a checkpoint folder or hub id; a sweep passes the teacher its
                           # 00_teacher cell trained; empty: the default teacher for seed and n_train (cached)
trust_remote_code = False  # True: allow a teacher_dir that ships its own code (Bunny); see README
device = "cpu"             # cpu | cuda
dtype = "float32"          # float32 | bfloat16 (GPUs only)
calib_samples = 10         # calibration samples for criteria that need gradients (taylor; the study: 10)
calib_samples_forward = 50  # calibration samples for criteria that need forward passes (activation, wanda)
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
metrics_path = "../reports/runs/02_widthwise.json"

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
# Scores are computed once per criterion. The profile shows, per block, the mean score of its heads and of
# its neurons, divided by the largest block mean of that criterion (units differ between criteria).
# Shaded blocks are never pruned.

# %%
all_criteria = list(dict.fromkeys([criterion, *(criteria or P.criteria("widthwise"))]))
samples = {"nothing": 0, "forward": calib_samples_forward, "gradients": calib_samples}  # by what a criterion needs
calib = {c: S.calibration(teacher, c, samples[P.get_criterion("widthwise", c).needs], calib_seed) for c in all_criteria}
scores, score_seconds = S.importance(teacher, "widthwise", all_criteria, calib, calib_seed)
candidates = sorted(layers) if layers is not None else list(range(1, num_layers - 1))
profile = pd.DataFrame([{"criterion": c, "block": i, "group": group, "mean score": float(np.mean(v))}
                        for c, s in scores.items() for group, per_block in (("heads", s.heads), ("neurons", s.neurons))
                        for i, v in enumerate(per_block)])
top = profile.groupby(["criterion", "group"])["mean score"].transform(lambda v: v.abs().max())
profile["normalised"] = profile["mean score"] / top.replace(0, 1)
grid = sns.relplot(data=profile, x="block", y="normalised", hue="criterion", col="group", kind="line", marker="o",
                   height=3.5, aspect=1.4)
for ax in grid.axes.flat:
    for i in set(range(num_layers)) - set(candidates):
        ax.axvspan(i - 0.5, i + 0.5, color="grey", alpha=0.15)
    ax.set(xlabel="decoder block", ylabel="mean importance / max", xticks=range(num_layers))
plt.show()
pd.Series(score_seconds, name="scoring seconds")

# %% [markdown]
# ## AVG % against the compression ratio (criterion `taylor` by default, no recovery)
#
# The same widths in every pruned block; the per-block ratio is the fraction of the pruned blocks'
# parameters removed. The dashed line is a blind guesser's AVG %.
#
# Layerwise pruning removes whole blocks, so it reaches only multiples of one block (with 8 blocks, "15 %" is
# 11.9 %). With `match_layerwise`, `criterion` is also pruned to exactly the LM ratios layerwise achieves, and
# the claims compare the two paradigms there (the requested-ratio points stay in the table and the curve).

# %%
results = S.prune_grid(teacher, scores, [(criterion, r) for r in ratios], layers=layers, round_to=round_to)
matched = S.matched_ratios(teacher, ratios, scores[criterion], layers=layers, round_to=round_to) if match_layerwise else {}
results |= S.prune_grid(teacher, scores, [(criterion, m) for m in matched.values()], layers=layers, round_to=round_to)
by_ratio, per_benchmark = S.ratio_table(teacher, results, criterion, [*ratios, *matched.values()])
plots.ratio_curves(by_ratio, per_benchmark, f"{criterion}: AVG % without recovery", teacher.chance_avg)
plt.show()
by_ratio

# %% [markdown]
# ## Criteria compared at one ratio, and what each one keeps

# %%
results |= S.prune_grid(teacher, scores, [(c, compare_ratio) for c in all_criteria if (c, compare_ratio) not in results],
                        layers=layers, round_to=round_to)
compare = pd.DataFrame([S.summary_row(teacher, c, results[c, compare_ratio]) for c in all_criteria])
main_plan = results[criterion, compare_ratio].plan
compare[f"neurons shared with {criterion}"] = [S.neurons_shared(results[c, compare_ratio].plan, main_plan)
                                               for c in all_criteria]
fig, axes = plt.subplots(1, 2, figsize=(13, 3.5))
plots.criteria_bars(axes[0], compare, compare_ratio, teacher.chance_avg)
kept_map = pd.DataFrame([S.heads_kept(results[c, compare_ratio].plan) for c in all_criteria], index=all_criteria,
                        columns=[f"{i}.{h}" for i, w in enumerate(main_plan.widths_before) for h in range(w[0])])
sns.heatmap(kept_map, cbar=False, cmap="Greens", linewidths=0.3, linecolor="w", ax=axes[1])
axes[1].set(title="attention heads kept (green), block.head", ylabel="")
plt.show()
compare

# %%
widths = main_plan.widths_before
for (c, r), pruned in results.items():
    plan = pruned.plan
    assert plan.requested_ratio == r and abs(plan.lm_ratio - r) <= 0.01 + 1e-9, f"{c} {r}: ratio not met within 1 point"
    assert plan.model_ratio < plan.lm_ratio, "the vision tower and projector are never pruned"
    assert plan.layers == candidates
    assert all(plan.kept_heads[i] is None for i in range(num_layers) if i not in candidates), "skipped blocks untouched"
    assert all(n is None or len(n) % round_to == 0 or len(n) == widths[i][2] for i, n in enumerate(plan.kept_neurons))
    assert pruned.table[pruned.table["metric"] == "accuracy"]["score"].between(0, 1).all(), "accuracies in [0, 1]"
    assert set(pruned.relative["benchmark"]) == set(teacher.scored)
if teacher.scored:
    assert np.allclose(S.relative(teacher, teacher.reference)["relative"], 100.0), "the teacher itself: 100 %"
plan0 = P.make_plan(teacher.model, scores[criterion], 0.0, layers=layers, round_to=round_to)
assert all(h is None for h in plan0.kept_heads) and plan0.lm_ratio == 0.0
assert P.count_params(P.apply_plan(copy.deepcopy(teacher.model), plan0)) == P.count_params(teacher.model)
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
metrics = {"notebook": "02_widthwise", "seed": seed, "calib_seed": calib_seed, "criterion": criterion, "layers": candidates,
           "round_to": round_to, "calib_samples": calib_samples, "calib_samples_forward": calib_samples_forward,
           "calibration_fingerprints": {c: P.calibration_fingerprint(b) for c, b in calib.items()},
           **S.pruning_metrics(teacher, results, criterion, ratios, compare_ratio, all_criteria, matched),
           "importance_per_block": profile.to_dict(orient="records"),
           "score_seconds": score_seconds, "teacher_eval_seconds": teacher.eval_seconds}
S.write_metrics(metrics, metrics_path)
