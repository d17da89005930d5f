"""POPE replies that name the object when present ("red circle, yes") and say "no" otherwise (README: 0.842).

Rewrites every POPE reply of 6,000 records of the mix plus 6,000 POPE records that way, finetunes teacher
4b1e9870a7 (whose bare yes/no POPE answer is at its prior, 0.52) on them, and scores the POPE benchmark (the
last yes/no word of the reply), per category, and scene-qa / count for forgetting. This is the experiment that
led to `data.pope_reply` (generator v9).
Run at commit 7d830d4 on teacher 4b1e9870a7 (7.5 min):
    python experiments/pope/name_first.py 500 3e-4 6000 [SAVE_DIR]
Measured: POPE 0.842 (yes-ratio 0.574; random 0.886, popular 0.904, adversarial 0.735), scene-qa 0.800,
count 0.743 (300 items).
"""
import os, sys, time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from datasets import Dataset
from studylib import collate as C, data as D, evaluation as E, llava_json, models as M, teacher as T
steps=int(sys.argv[1]); lr=float(sys.argv[2]); n_pope=int(sys.argv[3])
orig=D.q_pope
def q_pope_named(rng, objs, category=None):
    q,a,f,c=orig(rng,objs,category)
    name=q[len("Is there a "):-len(" in the image?")]
    return q, (f"{name}, yes" if a=="yes" else "no"), f, c
D.q_pope=q_pope_named
rng=np.random.default_rng(5)
recs=D.generate_records("train", 6000, 11)
for i in range(n_pope):
    image, turns = D.gen_scene(rng, ["pope"]); q,a,_,c=turns[0]
    recs.append({"id":f"p{i}","image":image,"family":"pope","conversations":[{"from":"human","value":llava_json.image_question(q)},{"from":"gpt","value":a}],"answer":a,"qtype":"pope","category":c})
print(recs[-1]["conversations"], recs[-2]["conversations"])
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-4b1e9870a7")
tds=C.tokenize_dataset(Dataset.from_list(recs,features=llava_json.features()),proc)
T.set_trainable(model,("vision","projector","lm")); model.train()
t0=time.time(); log=T.run_stage(model,proc,tds,Path("/tmp/exp/ft5"),steps,T.TeacherConfig(lr=lr),"ft",lr)
print("train s", round(time.time()-t0), "loss", [round(r["loss"],3) for r in log][::max(1,len(log)//12)])
model.eval(); D.q_pope=orig
bench=D.build_dataset("pope",500,0)
preds=E.generate_answers(model,proc,bench,progress=False)
def parse(p):
    w=[x for x in E.normalize(p).split() if x in ("yes","no")]; return w[-1] if w else ""
pp=np.array([parse(p) for p in preds]); ans=np.array(bench["answer"])
print("POPE acc", np.mean(pp==ans), "yes ratio", np.mean(pp=="yes"), preds[:6], list(ans[:6]))
for c in ["random","popular","adversarial"]:
    m=np.array(bench["category"])==c; print(" ", c, np.mean(pp[m]==ans[m]))
shape_q=np.array([len(q[0]["value"].split("\n")[0].split())==7 for q in bench["conversations"]])
print(" shape-only questions", np.mean(pp[shape_q]==ans[shape_q]), "coloured", np.mean(pp[~shape_q]==ans[~shape_q]))
for b in ["scene-qa","count"]:
    d=D.build_dataset(b,300,0); p2=E.generate_answers(model,proc,d,progress=False)
    print(b, np.mean([E.is_correct(b,p,a) for p,a in zip(p2,d["answer"])]))
if len(sys.argv)>4: model.save_pretrained(sys.argv[4]); proc.save_pretrained(sys.argv[4])
