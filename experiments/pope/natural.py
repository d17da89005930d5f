"""Run on teacher 4b1e9870a7:  python experiments/pope/natural.py DIR natural|balanced STEPS (README: AUC 0.54 / 0.545 / 0.485).
Saddle hypothesis: balanced POPE has no first-order signal. Finetune on POPE-only batches whose questions
name a uniformly drawn shape or coloured shape (answer = truth, so unbalanced), then measure AUC of p(yes) on
the balanced benchmark. Compare with the same finetune on the balanced training questions."""
import os,sys,time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from datasets import Dataset
from sklearn.metrics import roc_auc_score
from studylib import collate as C, data as D, llava_json, models as M, teacher as T
mode, steps = sys.argv[2], int(sys.argv[3])
model, proc = M.load(sys.argv[1])
rng = np.random.default_rng(11)
recs = []
for i in range(4000):
    objs = D.random_scene(rng)
    if mode == "natural":
        if rng.integers(2):
            name = str(rng.choice(D.SHAPES)); ans = "yes" if any(o.shape == name for o in objs) else "no"
        else:
            c, s = D.OBJECT_TYPES[int(rng.integers(len(D.OBJECT_TYPES)))]; name = f"{c} {s}"
            ans = "yes" if any(o.name == name for o in objs) else "no"
        q = f"Is there a {name} in the image?"
    else:
        q, ans, _, _ = D.q_pope(rng, objs)
    img = D.render_scene(objs, rng)
    recs.append({"id": f"p{i}", "image": img, "family": "pope", "conversations": [{"from": "human", "value": llava_json.image_question(q)}, {"from": "gpt", "value": ans}], "answer": ans, "qtype": "pope", "category": ""})
print(mode, "yes share", np.mean([r["answer"] == "yes" for r in recs]))
tds = C.tokenize_dataset(Dataset.from_list(recs, features=llava_json.features()), proc)
T.set_trainable(model, ("vision", "projector", "lm")); model.train()
log = T.run_stage(model, proc, tds, Path("/tmp/popenat"), steps, T.TeacherConfig(lr=3e-4), "ft", 3e-4)
print("loss", [round(r["loss"], 3) for r in log])
model.eval(); tok = proc.tokenizer; tok.padding_side = "left"
yes, no = tok.convert_tokens_to_ids("Ġyes"), tok.convert_tokens_to_ids("Ġno")
bench = D.build_dataset("pope", 500, 0)
ps = []
for s in range(0, 500, 100):
    rows = bench.select(range(s, s + 100))
    inp = proc(text=[C.prompt_text(c[0]["value"]) for c in rows["conversations"]], images=[im.convert("RGB") for im in rows["image"]], padding=True, return_tensors="pt")
    with torch.no_grad():
        pr = model(**inp).logits[:, -1].softmax(-1)
    ps += list((pr[:, yes] / (pr[:, yes] + pr[:, no])).numpy())
gold = np.array(bench["answer"]) == "yes"; ps = np.array(ps)
print(mode, "benchmark AUC", round(roc_auc_score(gold, ps), 3), "balanced acc at median threshold", round(np.mean((ps > np.median(ps)) == gold), 3))
