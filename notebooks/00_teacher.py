# %% [markdown]
# # The embedded teacher: a small LLaVA trained here, and the benchmarks it is measured on
#
# Every experiment of the study prunes and recovers a **teacher**: the unpruned multimodal model. The study
# uses LLaVA-v1.5-7B and Bunny-v1.0-3B; on a 2-core CPU with no model hub we train a small model of the
# same architecture from scratch, on data generated here:
#
# * **vision tower** (CLIP-style ViT, 8-pixel patches on 32 x 32 images: 16 image tokens),
# * **projector**: a 2-layer MLP with GELU, $z = W_2\,\mathrm{GELU}(W_1 v)$, mapping each patch feature $v$ into the
#   language model's embedding space,
# * **language model**: a Llama decoder (as Vicuna in LLaVA-1.5).
#
# Training follows LLaVA's two stages with the loss on answer tokens only,
# $\mathcal{L}_{CE} = -\frac{1}{|A|}\sum_{t \in A} \log p_\theta(y_t \mid y_{<t}, \text{image}, \text{prompt})$, where $A$ are
# the answer positions. Stage 1 uses dense captions only; stage 2 the whole instruction mix. Since nothing is
# pretrained here, both stages train every part (LLaVA freezes the pretrained vision tower).
#
# The benchmarks mirror the study's categories; each states its **chance level**: the accuracy of a blind
# guesser who always gives the most frequent answer of the question's type. A model that uses the image must
# fall to about that level when its images are blanked.

# %%
import json, os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
preset = "llava-small"   # llava-tiny | bunny-tiny | llava-small
seed = 0
n_train = 20000          # examples in the instruction mix
stage1_steps = 100       # caption-only steps
max_steps = 1200         # stage-2 steps on the whole mix
batch_size = 32
n_bench = 500            # items per benchmark
checkpoint_root = ""     # empty: data/checkpoints
cache_dir = ""           # empty: data/cache
check_quality = True     # assert the teacher uses the image (off for the smoke run of the tiny preset)
metrics_path = "../reports/runs/00_teacher.json"

# %%
from pathlib import Path
from studylib import data as D, evaluation as E, models as M, study as S, teacher as T
cache = cache_dir or None
train = D.build_dataset("train", n_train, seed, cache)
benchmarks = E.load_benchmarks(n=n_bench, seed=seed, cache_dir=cache)
print(f"instruction mix: {len(train)} examples, fingerprint {train._fingerprint}")
pd.DataFrame([{"benchmark": b, "items": len(ds), "chance": D.chance_level(ds)} for b, ds in benchmarks.items()])

# %% [markdown]
# A few examples of the instruction mix (question, then the target answer):

# %%
fig, axes = plt.subplots(1, 6, figsize=(15, 3))
shown = [r for r in train.select(range(40)) if r["image"] is not None][:6]
for ax, r in zip(axes, shown):
    ax.imshow(r["image"]); ax.axis("off")
    q = r["conversations"][0]["value"].replace("\n<image>", "")
    ax.set_title(f"{q[:28]}\n-> {r['answer'][:28]}", fontsize=7)
plt.show()

# %% [markdown]
# ## Training (cached: a second run with the same parameters loads the checkpoint)

# %%
t0 = time.time()
cfg = T.TeacherConfig(preset=preset, seed=seed, n_train=n_train, stage1_steps=stage1_steps,
                      max_steps=max_steps, batch_size=batch_size)
teacher_dir = str(T.ensure_teacher(cfg, checkpoint_root or None, cache))
print(f"teacher at {teacher_dir} ({time.time() - t0:.0f} s this run)")
train_metrics = json.loads(Path(teacher_dir, "teacher_metrics.json").read_text())
log = pd.DataFrame(json.loads(Path(teacher_dir, "train_log.json").read_text()))
log["loss"] = log["loss"].astype(float)
ax = sns.lineplot(data=log.reset_index(), x="index", y="loss", hue="stage")
ax.set(xlabel="logged step (every 10 optimiser steps)", ylabel="answer-token cross-entropy", yscale="log")
plt.show()
train_metrics

# %% [markdown]
# ## Evaluation: batched greedy answers on every benchmark, then with blank images

# %%
model, processor = M.load(teacher_dir)
t0 = time.time()
table = E.evaluate(model, processor, benchmarks, model_name="teacher")
eval_seconds = time.time() - t0
blank = E.evaluate(model, processor, {b: d for b, d in benchmarks.items() if b in D.IMAGE_BENCHMARKS},
                   model_name="teacher, blank images", blank_images=True)
scores = pd.concat([E.primary(table), E.primary(blank)])
ax = sns.barplot(data=scores, x="benchmark", y="score", hue="model")
ax.scatter(range(len(benchmarks)), [D.chance_level(d) for d in benchmarks.values()], color="k", marker="_",
           s=400, zorder=3, label="chance")
ax.legend(); ax.set(ylim=(0, 1), ylabel="accuracy"); plt.xticks(rotation=20); plt.show()
print(f"evaluation of {sum(len(d) for d in benchmarks.values())} items took {eval_seconds:.1f} s")
table[table.metric != "accuracy"][["benchmark", "metric", "score"]]

# %%
summary, blank_summary = E.summary(table), E.summary(blank)
chance = {b: D.chance_level(d) for b, d in benchmarks.items()}
assert set(summary) >= set(benchmarks), "every benchmark is scored"
assert all(0.0 <= summary[b] <= 1.0 for b in benchmarks)
assert log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean(), "training lowered the loss"
if check_quality:  # a trained teacher must use the image: blanking it costs at least 10 points on average
    assert blank_summary["image_mean"] <= summary["image_mean"] - 0.10, (
        f"the teacher ignores the image: blank {blank_summary} vs {summary}")
goals = S.teacher_goals(summary, blank_summary, chance)  # measured; a goal missed is reported, not hidden
print(f"{goals['met'].sum()} of {len(goals)} goals met")
display(goals)
pd.DataFrame({"score": summary, "blank images": blank_summary, "chance": chance})

# %%
metrics = {"notebook": "00_teacher", "preset": preset, "seed": seed, "teacher_dir": str(teacher_dir),
           "train": train_metrics, "eval_seconds": eval_seconds, "scores": summary,
           "blank_image_scores": blank_summary, "chance": chance, "goals": goals.to_dict(orient="records"),
           "table": table.to_dict(orient="records")}
S.write_metrics(metrics, metrics_path)
