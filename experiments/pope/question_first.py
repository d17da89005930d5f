"""Question-first records: finetune the image-first teacher on them (README: mcq 0.666 -> 0.776, POPE 0.482).
Run at commit d484045 on teacher a9deb797dd:  python experiments/pope/question_first.py 250 3e-4
"""
import os, sys, time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from studylib import collate as C, data as D, evaluation as E, llava_json, models as M, teacher as T
from datasets import Dataset
steps = int(sys.argv[1]); lr = float(sys.argv[2])
def qfirst(r):
    c = [dict(t) for t in r["conversations"]]
    if c[0]["value"].startswith("<image>\n"):
        c[0]["value"] = c[0]["value"][len("<image>\n"):] + "\n<image>"
    r = dict(r); r["conversations"] = c; return r
recs = [qfirst(r) for r in D.generate_records("train", 12000, 7)]
ds = Dataset.from_list(recs, features=llava_json.features())
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-a9deb797dd")
print(recs[0]["conversations"])
tds = C.tokenize_dataset(ds, proc)
cfg = T.TeacherConfig(lr=lr)
T.set_trainable(model, ("vision","projector","lm")); model.train()
t0=time.time()
log = T.run_stage(model, proc, tds, __import__("pathlib").Path("/tmp/popeft"), steps, cfg, "ft", lr)
print("train s", time.time()-t0, log[-1])
model.eval()
for b in ["pope","count","scene-qa","mcq"]:
    d = D.build_dataset(b, 500, 0).map(qfirst)
    pr = E.generate_answers(model, proc, d, progress=False)
    print(b, np.mean([E.is_correct(b,p,a) for p,a in zip(pr, d["answer"])]), pr[:6], flush=True)
