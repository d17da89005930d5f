# %% [markdown]
# # Recovery: finetuning and distillation bring a pruned model back
#
# Pruning without recovery loses accuracy (notebooks 01 and 02). The study then trains the pruned model
# (the **student**) briefly on a small random share of the instruction data, with supervised finetuning
# (SFT) and/or knowledge distillation (KD) from the unpruned model (the **teacher**). This notebook runs one
# pruned model with one recipe and shows its loss curves, and its scores before and after, relative to the
# teacher: $\mathrm{AVG\,\%} = \frac{1}{|B|}\sum_{b} 100\,s_b/s_b(\text{teacher})$.
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
data_fraction = 0.05        # fraction (0.05) of the instruction mix, or a count (500)
train = "lora"              # projector | lora | full
loss = "ce+hidden"          # ce | kl | hidden | ce+kl | ce+hidden | ce+hidden+kl
alpha = 0.5                 # weight of the KD term in combinations
temperature = 2.0
kl_positions = "answer"     # answer | all
kl_scale = "token_mean"     # token_mean | sequence_sum (the study's code: summed over each sequence's positions)
hidden_target = "final_norm"  # final_norm (after the final norm, the study's code) | blocks | scale_free
teacher_input = "own"       # own | student (the study's code)
epochs = 1.0
lr = 2e-4
recovery_batch_size = 32
lora_rank = 16
lora_alpha = 32
teacher_dir = ""           # the unpruned model, a checkpoint folder or hub id; a sweep passes the teacher its
                           # 00_teacher cell trained; empty: the default teacher for seed and n_train (cached)
trust_remote_code = False  # True: allow a teacher_dir that ships its own code (Bunny); see README
device = "cpu"             # cpu | cuda
dtype = "float32"          # float32 | bfloat16 (GPUs only)
seed = 0                   # the teacher's and its data's seed (instruction mix, benchmark items)
calib_seed = 0             # the calibration sample's seed (and the random criterion's)
recovery_seed = 0          # the recovery data subset's and training order's seed
n_train = 20000            # the instruction mix (as 00_teacher's)
train_json = ""            # empty: the embedded mix; else LLaVA-format data, e.g. llava_v1_5_mix665k.json
image_folder = ""          # images of train_json (empty: its folder)
n_bench = 500              # items per benchmark
real_benchmarks = ""       # empty: the embedded suite; else "pope=lmms-lab/POPE,gqa=/data/gqa" (studylib.benchmarks)
checkpoint_root = ""       # empty: data/checkpoints
cache_dir = ""             # empty: data/cache
check_quality = True       # assert quality (off for the smoke run of the tiny preset)
metrics_path = "../reports/runs/03_recovery.json"

# %% [markdown]
# ## The teacher and its scores (the 100 % of every AVG %)

# %%
import numpy as np
from studylib import recovery as R, study as S
teacher = S.load_teacher(**{name: globals()[name] for name in S.TEACHER_PARAMETERS})  # as set above
S.describe(teacher)

# %% [markdown]
# ## The pruned student, before recovery

# %%
pruned = S.prune_one(teacher, paradigm, criterion, ratio, calib_samples, calib_seed, match_layerwise, layers=layers)
recipe = dict(train=train, loss=loss, alpha=alpha, temperature=temperature, kl_positions=kl_positions,
              kl_scale=kl_scale, hidden_target=hidden_target, teacher_input=teacher_input, epochs=epochs, lr=lr,
              batch_size=recovery_batch_size, lora_rank=lora_rank, lora_alpha=lora_alpha)

# %% [markdown]
# ## Recovery

# %%
t0 = time.time()
recovered = R.recover_and_evaluate(teacher, pruned, R.recovery_config(teacher, **recipe, data_fraction=data_fraction, seed=recovery_seed))
m = recovered.result.metrics
print(f"{train} / {loss}: {m['examples']} of {m['of_examples']} examples, {m['steps']} steps, "
      f"{m['trainable_params']:,} trainable parameters, trained in {m['train_seconds']} s "
      f"({time.time() - t0:.0f} s with evaluation)")
print(f"answer CE on the subset: {m['train_ce_before']:.4f} -> {m['train_ce_after']:.4f}; "
      f"AVG % {pruned.avg:.1f} -> {recovered.avg:.1f}")
log = pd.DataFrame(recovered.result.log)
terms = [c for c in ["loss", "loss_ce", "loss_kl", "loss_hidden"] if c in log]
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
sns.lineplot(data=log.melt(id_vars="step", value_vars=terms, var_name="term"), x="step", y="value", hue="term",
             marker="o", ax=axes[0])
axes[0].set(title=f"training loss ({loss}, alpha {alpha})", yscale="log")
before_after = pd.concat([pruned.relative.assign(model="pruned"), recovered.relative.assign(model="recovered")])
sns.barplot(data=before_after, x="benchmark", y="relative", hue="model", ax=axes[1])
axes[1].axhline(100, color="k", ls="--")
axes[1].set(title="% of teacher, per benchmark", ylabel="% of teacher")
plt.show()
before_after.pivot(index="benchmark", columns="model", values="relative").round(1)

# %%
assert m["examples"] == len(R.subset_indices(len(teacher.train_data), data_fraction, recovery_seed))
assert m["steps"] == max(1, int(np.ceil(epochs * m["examples"] / recovery_batch_size)))
assert not (recovered.result.out_dir / "_trainer").exists(), "the resume checkpoints are removed when a run finishes"
assert all(np.isfinite(log["loss"])), "finite losses"
if R.uses(loss, "hidden"):
    assert m["layer_pairs"][-1][1] == teacher.num_layers - 1, "the final blocks of student and teacher are matched"
if check_quality and train != "projector":  # projector-only near the teacher's loss need not lower it (widthwise
    # 11.8 %, recovery seed 2: 0.0939 -> 0.0948); its train_ce_before/after are recorded
    assert m["train_ce_after"] < m["train_ce_before"], "recovery lowers the answer loss on its data"
# Whether recovery raised AVG % is a finding, not an invariant (at 60 % layerwise with 5 % of the data it
# need not: claim 6), so it is recorded, not asserted.
recovery_helped = bool(recovered.avg > pruned.avg)
print(f"recovery {'raised' if recovery_helped else 'did not raise'} AVG %: {pruned.avg:.1f} -> {recovered.avg:.1f} "
      f"(95 % interval {recovered.interval.lo:.1f} to {recovered.interval.hi:.1f}, paired bootstrap over items)")

# %%
metrics = {"notebook": "03_recovery", "seed": seed, "calib_seed": calib_seed, "recovery_seed": recovery_seed,
           "match_layerwise": match_layerwise, "layers": layers, "teacher_dir": teacher.dir,
           "paradigm": paradigm, "criterion": criterion, "ratio": ratio, "lm_ratio": pruned.plan.lm_ratio,
           "recipe": {"train": train, "loss": loss, "alpha": alpha, "temperature": temperature,
                      "kl_positions": kl_positions, "kl_scale": kl_scale, "hidden_target": hidden_target,
                      "teacher_input": teacher_input},
           "data_fraction": data_fraction, "teacher_scores": teacher.scores, "scored_benchmarks": teacher.scored,
           "avg_percent_pruned": pruned.avg, "avg_percent_recovered": recovered.avg,
           "avg_percent_pruned_lo": pruned.interval.lo, "avg_percent_pruned_hi": pruned.interval.hi,
           "avg_percent_recovered_lo": recovered.interval.lo, "avg_percent_recovered_hi": recovered.interval.hi,
           "recovery_helped": recovery_helped, "relative_pruned": S.by_benchmark(pruned.relative),
           "relative_recovered": S.by_benchmark(recovered.relative), "recovery": m,
           "checkpoint": str(recovered.result.out_dir), "plan": pruned.plan.to_dict(),
           "items": {"teacher": teacher.items, "pruned": pruned.items, "recovered": recovered.items}}
S.write_metrics(metrics, metrics_path)
