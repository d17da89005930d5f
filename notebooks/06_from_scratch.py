# %% [markdown]
# # From scratch: is pruning + recovery worth its compute?
#
# The study's claim 6 says that beyond 60 % compression "pruning + recovery is not worth it". Its meaning is a
# comparison with the alternative: a model **of the pruned size trained from scratch** with the same compute.
# This notebook builds that model (the pruned model's exact architecture, every weight freshly initialised, the
# vision tower included, as the teacher began) and trains it as the teacher was trained, on as many examples as
# the compute of pruning + recovery buys (`studylib.scratch`; $N_s$, $N_t$ the small and the teacher model's
# parameters, a training step $6N$ FLOPs a token, a forward pass $2N$):
#
# $$n_\text{scratch} = n_\text{recovery}\Big(1 + [\text{KD}]\,\frac{N_t}{3N_s}\Big) + n_\text{calib}\,\frac{N_t}{N_s}\,c,\qquad c = \tfrac13 \text{ (forward) or } 1 \text{ (gradients)}.$$
#
# AVG % is measured on the teacher's benchmark items, as every other model: claim 6 holds when the scratch
# model retains at least as much as the best pruned + recovered model at the same size.

# %%
import os, tempfile
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
paradigm = "widthwise"      # the pruned model whose size and compute are matched: layerwise | widthwise
criterion = "taylor"        # a name of studylib.pruning.criteria(paradigm)
ratio = 0.60                # fraction of LM parameters removed
match_layerwise = True      # widthwise: at the LM ratio a layerwise plan achieves for `ratio` (as 03)
calib_samples = 0           # 0: the criterion's default (50 for bi, 10 for taylor)
calib_seed = 0              # the calibration sample's seed
data_fraction = 0.05        # the recovery it is compared with: its share of the instruction mix
train = "lora"              # ... its training (projector | lora | full)
loss = "ce+hidden"          # ... and its loss (a KD term runs the teacher: more compute)
multiple = 1.0              # the scratch model's compute, in multiples of pruning + recovery's
recovery_seed = 0           # the scratch model's initialisation, data subset and order
lr = 3e-4                   # the teacher's learning rate
batch_size = 32
teacher_dir = ""           # the unpruned model; a sweep passes the teacher its 00_teacher cell trained
trust_remote_code = False
device = "cpu"             # cpu | cuda
dtype = "float32"
seed = 0                   # the teacher's and its data's seed (instruction mix, benchmark items)
n_train = 20000
train_json = ""
image_folder = ""
n_bench = 500
real_benchmarks = ""
checkpoint_root = ""
cache_dir = ""
check_quality = True       # assert that training lowered the loss (off for the smoke run)
metrics_path = "../reports/runs/06_from_scratch.json"

# %% [markdown]
# ## The teacher, the pruned model it is compared with, and the compute to match

# %%
import numpy as np
from studylib import pruning as P, recovery as R, scratch, study as S
teacher = S.load_teacher(**{name: globals()[name] for name in S.TEACHER_PARAMETERS})
pruned = S.prune_one(teacher, paradigm, criterion, ratio, calib_samples, calib_seed, match_layerwise)
examples = len(R.subset_indices(len(teacher.train_data), data_fraction, recovery_seed))
budget = scratch.budget(teacher.model, pruned.model, recovery_examples=examples,
                        calib_samples=calib_samples or P.default_calib_samples(criterion), criterion=criterion,
                        paradigm=paradigm, kd=R.uses_teacher(loss), multiple=multiple)
pd.Series(budget.to_dict(), name="compute, in training examples")

# %% [markdown]
# ## Training the small model from scratch

# %%
model = scratch.fresh_copy(pruned.model, recovery_seed)
with tempfile.TemporaryDirectory() as tmp:
    log = pd.DataFrame(scratch.train(model, teacher.processor, teacher.train_data, budget.examples_scratch,
                                     seed=recovery_seed, batch_size=batch_size, lr=lr, out_dir=tmp))
log["loss"] = log["loss"].astype(float)
ax = sns.lineplot(data=log.reset_index(), x="index", y="loss", marker="o")
ax.set(xlabel="logged step", ylabel="answer-token cross-entropy", yscale="log", title="from scratch")
plt.show()

# %% [markdown]
# ## Its scores, relative to the teacher, beside the pruned model's before recovery

# %%
from studylib import evaluation as E
model.to(teacher.device)
table, items = E.evaluate_items(model, teacher.processor, teacher.benchmarks, model_name="scratch", progress=False)
rel = S.relative(teacher, table)
iv = S.interval(teacher, items)
print(f"from scratch ({budget.examples_scratch} examples): AVG % {S.mean_relative(rel):.1f} "
      f"[{iv.lo:.1f}, {iv.hi:.1f}]; the pruned model before recovery {pruned.avg:.1f}; "
      f"a blind guesser {teacher.chance_avg:.1f}")
both = pd.concat([pruned.relative.assign(model="pruned, no recovery"), rel.assign(model="from scratch")])
ax = sns.barplot(data=both, x="benchmark", y="relative", hue="model")
ax.axhline(100, color="k", ls="--"); ax.set(ylabel="% of teacher"); plt.xticks(rotation=20); plt.show()

# %%
assert P.count_params(model) == P.count_params(pruned.model), "the pruned model's size exactly"
assert len(log) and all(np.isfinite(log["loss"])), "finite losses"
if check_quality:
    assert log["loss"].iloc[-3:].mean() < log["loss"].iloc[:3].mean(), "training lowered the loss"

# %%
metrics = {"notebook": "06_from_scratch", "seed": seed, "calib_seed": calib_seed, "recovery_seed": recovery_seed,
           "teacher_dir": teacher.dir, "paradigm": paradigm, "criterion": criterion, "ratio": ratio,
           "match_layerwise": match_layerwise, "lm_ratio": pruned.plan.lm_ratio,
           "recipe": {"train": train, "loss": loss}, "data_fraction": data_fraction, "budget": budget.to_dict(),
           "avg_percent_scratch": S.mean_relative(rel), "avg_percent_scratch_lo": iv.lo,
           "avg_percent_scratch_hi": iv.hi, "relative_scratch": S.by_benchmark(rel), "train_log": log.to_dict("records"),
           "items": {"teacher": teacher.items, "scratch": items}}
S.write_metrics(metrics, metrics_path)
