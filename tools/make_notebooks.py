"""Write the study notebooks from the cell sources below (run after editing; commits stay output-free).

Notebooks are code we review like any other, so they are generated from this one readable file.
"""
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


def md(text):
    return nbf.v4.new_markdown_cell(text.strip())


def code(text, tags=None):
    c = nbf.v4.new_code_cell(text.strip())
    if tags:
        c.metadata["tags"] = tags
    return c


def write(name, cells):
    nb = nbf.v4.new_notebook(cells=cells, metadata=KERNEL)
    for i, c in enumerate(nb.cells):
        c["id"] = str(i)  # stable ids (as nbstripout writes them): regenerating gives the same file
    nbf.write(nb, HERE / f"{name}.ipynb")


SETUP = """
import json, os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
sns.set_theme(style="whitegrid")
"""

write("00_teacher", [
    md(r"""
# The embedded teacher: a small LLaVA trained here, and the benchmarks it is measured on

Every experiment of the study prunes and recovers a **teacher**: the unpruned multimodal model. The study
uses LLaVA-v1.5-7B and Bunny-v1.0-3B; on a 2-core CPU with no model hub we train a small model of the
same architecture from scratch, on data generated here:

* **vision tower** (CLIP-style ViT, 8-pixel patches on 32 x 32 images: 16 image tokens),
* **projector**: a 2-layer MLP with GELU, $z = W_2\,\mathrm{GELU}(W_1 v)$, mapping each patch feature $v$ into the
  language model's embedding space,
* **language model**: a Llama decoder (as Vicuna in LLaVA-1.5).

Training follows LLaVA's two stages with the loss on answer tokens only,
$\mathcal{L}_{CE} = -\frac{1}{|A|}\sum_{t \in A} \log p_\theta(y_t \mid y_{<t}, \text{image}, \text{prompt})$, where $A$ are
the answer positions. Stage 1 uses dense captions only; stage 2 the whole instruction mix. Since nothing is
pretrained here, both stages train every part (LLaVA freezes the pretrained vision tower).

The benchmarks mirror the study's categories; each states its **chance level**: the accuracy of a blind
guesser who always gives the most frequent answer of the question's type. A model that uses the image must
fall to about that level when its images are blanked.
"""),
    code(SETUP),
    code("""
preset = "llava-small"   # llava-tiny | bunny-tiny | llava-small
seed = 0
n_train = 20000          # examples in the instruction mix
stage1_steps = 150       # caption-only steps
max_steps = 600          # stage-2 steps on the whole mix
batch_size = 32
n_bench = 500            # items per benchmark
checkpoint_root = ""     # "" = data/checkpoints
cache_dir = ""           # "" = data/cache
check_quality = True     # assert the study's quality bar (off for the smoke run of the tiny preset)
metrics_path = "../reports/runs/00_teacher.json"
""", tags=["parameters"]),
    code("""
from studylib import data as D, evaluation as E, models as M, teacher as T
cache = cache_dir or None
train = D.build_dataset("train", n_train, seed, cache)
benchmarks = E.load_benchmarks(n=n_bench, seed=seed, cache_dir=cache)
print(f"instruction mix: {len(train)} examples, fingerprint {train._fingerprint}")
pd.DataFrame([{"benchmark": b, "items": len(ds), "chance": D.chance_level(ds)} for b, ds in benchmarks.items()])
"""),
    md("A few examples of the instruction mix (question, then the target answer):"),
    code("""
fig, axes = plt.subplots(1, 6, figsize=(15, 3))
shown = [r for r in train.select(range(40)) if r["image"] is not None][:6]
for ax, r in zip(axes, shown):
    ax.imshow(r["image"]); ax.axis("off")
    q = r["conversations"][0]["value"].replace("<image>\\n", "")
    ax.set_title(f"{q[:28]}\\n-> {r['answer'][:28]}", fontsize=7)
plt.show()
"""),
    md("## Training (cached: a second run with the same parameters loads the checkpoint)"),
    code("""
cfg = T.TeacherConfig(preset=preset, seed=seed, n_train=n_train, stage1_steps=stage1_steps,
                      max_steps=max_steps, batch_size=batch_size)
t0 = time.time()
teacher_dir = T.ensure_teacher(cfg, checkpoint_root or None, cache)
print(f"teacher at {teacher_dir} ({time.time() - t0:.0f} s this run)")
train_metrics = json.loads((teacher_dir / "teacher_metrics.json").read_text())
log = pd.DataFrame(json.loads((teacher_dir / "train_log.json").read_text()))
log["loss"] = log["loss"].astype(float)
ax = sns.lineplot(data=log.reset_index(), x="index", y="loss", hue="stage")
ax.set(xlabel="logged step (every 10 optimiser steps)", ylabel="answer-token cross-entropy", yscale="log")
plt.show()
train_metrics
"""),
    md("## Evaluation: batched greedy answers on every benchmark, then with blank images"),
    code("""
model, processor = M.load(teacher_dir)
t0 = time.time()
table = E.evaluate(model, processor, benchmarks, model_name="teacher")
eval_seconds = time.time() - t0
blank = E.evaluate(model, processor, {b: d for b, d in benchmarks.items() if b in D.IMAGE_BENCHMARKS},
                   model_name="teacher, blank images")
scores = pd.concat([E.primary(table), E.primary(blank)])
ax = sns.barplot(data=scores, x="benchmark", y="score", hue="model")
ax.scatter(range(len(benchmarks)), [D.chance_level(d) for d in benchmarks.values()], color="k", marker="_",
           s=400, zorder=3, label="chance")
ax.legend(); ax.set(ylim=(0, 1), ylabel="accuracy"); plt.xticks(rotation=20); plt.show()
print(f"evaluation of {sum(len(d) for d in benchmarks.values())} items took {eval_seconds:.1f} s")
table[table.metric != "accuracy"][["benchmark", "metric", "score"]]
"""),
    code("""
summary, blank_summary = E.summary(table), E.summary(blank)
chance = {b: D.chance_level(d) for b, d in benchmarks.items()}
assert set(summary) >= set(benchmarks), "every benchmark is scored"
assert all(0.0 <= summary[b] <= 1.0 for b in benchmarks)
assert log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean(), "training lowered the loss"
if check_quality:
    assert 0.70 <= summary["image_mean"] <= 0.95, f"image mean {summary['image_mean']:.3f} outside [0.70, 0.95]"
    for b in benchmarks:
        assert summary[b] >= chance[b] + 0.20, f"{b}: {summary[b]:.3f} is not 20 points above chance {chance[b]:.3f}"
    for b in D.IMAGE_BENCHMARKS:
        assert blank_summary[b] <= chance[b] + 0.10, f"{b}: blank images still score {blank_summary[b]:.3f}"
pd.DataFrame({"score": summary, "blank images": blank_summary, "chance": chance})
"""),
    code("""
metrics = {"notebook": "00_teacher", "preset": preset, "seed": seed, "teacher_dir": str(teacher_dir),
           "train": train_metrics, "eval_seconds": eval_seconds, "scores": summary,
           "blank_image_scores": blank_summary, "chance": chance, "table": table.to_dict(orient="records")}
os.makedirs(os.path.dirname(os.path.abspath(metrics_path)), exist_ok=True)
with open(metrics_path, "w") as f:
    json.dump(metrics, f, indent=1, default=str)
print(f"metrics written to {metrics_path}")
"""),
])
