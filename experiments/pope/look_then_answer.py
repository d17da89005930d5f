"""Look-then-answer replies ('red circle, blue square; so no'): finetune, then POPE accuracy (README: 0.488).
Run at commit d484045 on teacher a9deb797dd:  python experiments/pope/look_then_answer.py 250 3e-4
"""
import os, sys, time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch, re
from studylib import collate as C, data as D, evaluation as E, llava_json, models as M, teacher as T
orig = D.q_pope
def q_pope_cot(rng, objs, category=None):
    q, a, fam, cat = orig(rng, objs, category)
    return q, ", ".join(o.name for o in objs) + "; so " + a, fam, cat
D.q_pope = q_pope_cot
from datasets import Dataset
steps = int(sys.argv[1]); lr = float(sys.argv[2])
recs = D.generate_records("train", 12000, 7)
ds = Dataset.from_list(recs, features=llava_json.features())
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-a9deb797dd")
print([r["conversations"] for r in recs if r["family"]=="pope"][:2])
tds = C.tokenize_dataset(ds, proc)
cfg = T.TeacherConfig(lr=lr)
T.set_trainable(model, ("vision","projector","lm")); model.train()
t0=time.time()
log = T.run_stage(model, proc, tds, __import__("pathlib").Path("/tmp/popeft"), steps, cfg, "ft", lr)
print("train s", time.time()-t0, log[-1])
model.eval()
D.q_pope = orig
bench = D.build_dataset("pope", 500, 0)
preds = E.generate_answers(model, proc, bench, max_new_tokens=32, progress=False)
def parse(p):
    w = E.normalize(p).split()
    for x in w:
        if x in ("yes","no"): return x
    return ""
acc = np.mean([parse(p)==a for p,a in zip(preds, bench["answer"])])
print("POPE cot acc", acc, "yes ratio", np.mean([parse(p)=="yes" for p in preds]))
print(preds[:5], bench["answer"][:5])
for b in ["scene-qa","count","ocr"]:
    d = D.build_dataset(b, 500, 0); pr = E.generate_answers(model, proc, d, progress=False)
    print(b, np.mean([E.is_correct(b,p,a) for p,a in zip(pr, d["answer"])]))
