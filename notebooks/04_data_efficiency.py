# %% [markdown]
# # Data efficiency: how much instruction data does recovery need?
#
# The study's headline is that **5 %** of the instruction data recovers most of a pruned model's performance.
# Here one pruned model is recovered with one recipe on growing random shares of the instruction mix. The
# subsets are **nested** (the first $k$ examples of one seeded permutation: the 1 % subset lies inside the 5 %
# one), so the curve shows the effect of adding data, not of drawing a different sample. Each point is
# $\mathrm{AVG\,\%} = \frac{1}{|B|}\sum_{b} 100\,s_b/s_b(\text{teacher})$ after recovery, for the same number of epochs.
#
# **What is trained** (the vision tower is always frozen, as in the study): `projector` (the 2-layer MLP only),
# `lora` (the projector and LoRA adapters $W + \frac{\alpha}{r} BA$ on every linear layer of the LM, merged into $W$
# when saved), or `full` (the projector and the whole LM).
#
# **Losses**, over the answer positions $A$ of a batch (prompt and image tokens are masked, as in LLaVA):
#
# * SFT: $\mathcal{L}_{CE} = -\frac{1}{|A|}\sum_{t \in A}\log p_S(y_t)$;
# * logit distillation: $\mathcal{L}_{KL} = \frac{\tau^2}{|P|}\sum_{t \in P}\mathrm{KL}\big(\mathrm{softmax}(z^T_t/\tau)\,\Vert\,\mathrm{softmax}(z^S_t/\tau)\big)$,
#   $\tau = 2$, $P = A$ (or every token, `kl_positions = "all"`, as the study's code); the study's code also sums
#   over each sequence's positions instead of dividing by $|P|$ (`kl_scale = "sequence_sum"`);
# * hidden-state distillation: $\mathcal{L}_{HID} = \frac{1}{|J|}\sum_{j \in J}\mathrm{mean}_{t,d}\,(h^S_{j} - h^T_{m(j)})^2$: the final
#   hidden states of student and teacher, taken *after* the final norm as the study's code does
#   (`hidden_target = "final_norm"`), plus optional student blocks $j$ matched to the teacher block $m(j)$ they
#   were (the pruning plan's kept blocks after layerwise pruning). `"blocks"` matches the final block outputs
#   before the norm instead, `"scale_free"` those divided by the teacher's $\mathrm{mean}(h_T^2)$ per pair (on a
#   pretrained decoder whose residual stream has RMS ~1000, the unnormalised block loss swamps the CE);
# * combinations: $\mathcal{L} = \alpha\,\mathcal{L}_{KD} + (1-\alpha)\,\mathcal{L}_{CE}$ with $\alpha = 0.5$ and
#   $\mathcal{L}_{KD}$ the sum of the KD terms named (`ce+kl`, `ce+hidden`, `ce+hidden+kl`).
#
# The teacher is the frozen unpruned model and sees its own image features; the study's LLaVA code fed it the
# student's projector output instead (`teacher_input = "student"`).

# %%
import os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
paradigm = "layerwise"      # layerwise | widthwise
criterion = "bi"            # a name of studylib.pruning.criteria(paradigm), e.g. bi (layerwise), taylor (widthwise)
ratio = 0.30                # fraction of LM parameters to remove
match_layerwise = False     # widthwise: remove what a layerwise plan achieves for `ratio` (one LM ratio for both)
layers = None              # widthwise: list of blocks that may be pruned, None: all but the first and the last
calib_samples = 0           # 0: the criterion's default (50 for bi, 10 for taylor)
fractions = [0.01, 0.05, 0.10, 0.25]   # shares of the instruction mix (1.0: all of it), nested
train = "lora"              # projector | lora | full (the other settings: notebook 03's defaults)
loss = "ce+hidden"          # ce | kl | hidden | ce+kl | ce+hidden | ce+hidden+kl
epochs = 1.0
lr = 2e-4
recovery_batch_size = 32
seed = 0                   # the teacher's and its data's seed (instruction mix, benchmark items)
calib_seed = 0             # the calibration sample's seed (and the random criterion's)
recovery_seed = 0          # the recovery data subset's and training order's seed
n_train = 20000            # the instruction mix (as 00_teacher's)
train_json = ""            # empty: the embedded mix; else LLaVA-format data, e.g. llava_v1_5_mix665k.json
image_folder = ""          # images of train_json (empty: its folder)
teacher_dir = ""           # the unpruned model, a checkpoint folder or hub id; a sweep passes the teacher its
                           # 00_teacher cell trained; empty: the default teacher for seed and n_train (cached)
trust_remote_code = False  # True: allow a teacher_dir that ships its own code (Bunny); see README
device = "cpu"             # cpu | cuda
dtype = "float32"          # float32 | bfloat16 (GPUs only)
n_bench = 500              # items per benchmark
real_benchmarks = ""       # empty: the embedded suite; else "pope=lmms-lab/POPE,gqa=/data/gqa" (studylib.benchmarks)
checkpoint_root = ""       # empty: data/checkpoints
cache_dir = ""             # empty: data/cache
check_quality = True       # assert quality (off for the smoke run of the tiny preset)
metrics_path = "../reports/runs/04_data_efficiency.json"

# %% [markdown]
# ## The teacher and its scores (the 100 % of every AVG %)

# %%
from studylib import recovery as R, study as S
teacher = S.load_teacher(**{name: globals()[name] for name in S.TEACHER_PARAMETERS})  # as set above
S.describe(teacher)

# %% [markdown]
# ## The pruned student, before recovery

# %%
pruned = S.prune_one(teacher, paradigm, criterion, ratio, calib_samples, calib_seed, match_layerwise, layers=layers)
recipe = dict(train=train, loss=loss, epochs=epochs, lr=lr, batch_size=recovery_batch_size)  # the rest: defaults

# %% [markdown]
# ## Recovery with growing shares of the data

# %%
rows, per_benchmark, items = [], [], {}
for f in fractions:
    t0 = time.time()
    recovered = R.recover_and_evaluate(teacher, pruned, R.recovery_config(teacher, **recipe, data_fraction=f, seed=recovery_seed))
    m = recovered.result.metrics
    rows.append({"fraction": f, "examples": m["examples"], "steps": m["steps"], "train_seconds": m["train_seconds"],
                 "train_ce_after": m["train_ce_after"], "AVG %": recovered.avg, "AVG % lo": recovered.interval.lo,
                 "AVG % hi": recovered.interval.hi})
    items[f] = recovered.items
    per_benchmark.append(recovered.relative.assign(fraction=f))
    print(f"{f:.0%}: {m['examples']} examples, {m['steps']} steps, AVG % {recovered.avg:.1f} ({time.time() - t0:.0f} s)")
curve, per_benchmark = pd.DataFrame(rows), pd.concat(per_benchmark)
if teacher.scored:  # AVG % is undefined only for an untrained smoke-test teacher
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    sns.lineplot(data=curve, x="fraction", y="AVG %", marker="o", ax=axes[0], label=f"{train} / {loss}")
    axes[0].fill_between(curve["fraction"], curve["AVG % lo"], curve["AVG % hi"], alpha=0.2, label="95 % interval")
    axes[0].axhline(pruned.avg, color="tab:red", ls=":", label="no recovery")
    axes[0].axhline(95, color="k", ls="--", label="95 % of the teacher")
    axes[0].set(xscale="log", title=f"{paradigm} {pruned.plan.lm_ratio:.0%}: AVG % against data used",
                xlabel="share of the data")
    axes[0].legend()
    sns.lineplot(data=per_benchmark, x="fraction", y="relative", hue="benchmark", marker="o", ax=axes[1])
    axes[1].set(xscale="log", title="per benchmark", ylabel="% of teacher", xlabel="share of the data")
    plt.show()
curve

# %%
n = len(teacher.train_data)
subsets = [set(R.subset_indices(n, f, recovery_seed)) for f in sorted(fractions)]
assert all(a <= b for a, b in zip(subsets, subsets[1:])), "subsets are nested"
assert list(curve["examples"]) == [len(R.subset_indices(n, f, recovery_seed)) for f in fractions]
if check_quality:
    best = curve["AVG %"].max()
    assert best > pruned.avg, f"recovery helps at some share of the data ({best:.1f} vs {pruned.avg:.1f})"
    assert curve.sort_values("fraction")["train_ce_after"].iloc[-1] < 10, "finite answer loss"

# %%
metrics = {"notebook": "04_data_efficiency", "seed": seed, "calib_seed": calib_seed, "recovery_seed": recovery_seed,
           "match_layerwise": match_layerwise, "layers": layers, "teacher_dir": teacher.dir,
           "paradigm": paradigm, "criterion": criterion, "ratio": ratio, "lm_ratio": pruned.plan.lm_ratio,
           "recipe": {"train": train, "loss": loss, "alpha": m["config"]["alpha"], "epochs": epochs, "lr": lr},
           "teacher_scores": teacher.scores, "scored_benchmarks": teacher.scored, "avg_percent_pruned": pruned.avg,
           "curve": curve.to_dict(orient="records"),
           "relative": per_benchmark[["fraction", "benchmark", "relative"]].to_dict(orient="records"),
           "items": {"teacher": teacher.items, "pruned": pruned.items, **{str(f): i for f, i in items.items()}}}
S.write_metrics(metrics, metrics_path)
