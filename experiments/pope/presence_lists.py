"""Presence lists in a fixed order ("Which shapes are in the image?" -> "circle, cross"), then POPE (README: 0.52).

Adds 6,000 two-turn conversations (a presence list of shapes, colours or coloured shapes, in the fixed order of
data.SHAPES / COLORS / OBJECT_TYPES, then a POPE question) and 3,000 POPE records to 6,000 records of the mix,
finetunes teacher 4b1e9870a7 on them, and scores held-out presence lists (exact match), POPE, scene-qa, count.
Run at commit 7d830d4 on teacher 4b1e9870a7 (6.8 min):
    python experiments/pope/presence_lists.py 500 3e-4 6000 3000
Measured: presence lists 0.795 exact, POPE 0.520 (yes-ratio 1.0), scene-qa 0.770, count 0.747 (300 items):
the model can say which objects are present, but a bare yes/no about one of them stays at its prior.
"""
import os, sys, time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from datasets import Dataset
from studylib import collate as C, data as D, evaluation as E, llava_json, models as M, teacher as T
steps=int(sys.argv[1]); lr=float(sys.argv[2]); n_pres=int(sys.argv[3]); n_pope=int(sys.argv[4])
def presence(rng, objs):
    k=int(rng.integers(3))
    if k==0: return "Which shapes are in the image?", ", ".join(s for s in D.SHAPES if any(o.shape==s for o in objs))
    if k==1: return "Which colors are in the image?", ", ".join(c for c in D.COLORS if any(o.color==c for o in objs))
    names=[f"{c} {s}" for c,s in D.OBJECT_TYPES]
    return "Which objects are in the image?", ", ".join(n for n in names if any(o.name==n for o in objs))
def rec(rng, i, kind):
    objs=D.random_scene(rng); img=D.render_scene(objs, rng); conv=[]
    if kind=="presence":
        q,a=presence(rng,objs); conv=[{"from":"human","value":llava_json.image_question(q)},{"from":"gpt","value":a}]
        q2,a2,_,_=D.q_pope(rng,objs); conv+=[{"from":"human","value":q2},{"from":"gpt","value":a2}]
    else:
        q,a,_,_=D.q_pope(rng,objs); conv=[{"from":"human","value":llava_json.image_question(q)},{"from":"gpt","value":a}]
    return {"id":f"p{i}","image":img,"family":"pope","conversations":conv,"answer":conv[1]["value"],"qtype":kind,"category":""}
rng=np.random.default_rng(5)
recs=D.generate_records("train", 6000, 11)+[rec(rng,i,"presence") for i in range(n_pres)]+[rec(rng,i,"pope") for i in range(n_pope)]
print(recs[-n_pope-1]["conversations"])
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-4b1e9870a7")
tds=C.tokenize_dataset(Dataset.from_list(recs,features=llava_json.features()),proc)
T.set_trainable(model,("vision","projector","lm")); model.train()
t0=time.time(); log=T.run_stage(model,proc,tds,Path("/tmp/exp/ft4"),steps,T.TeacherConfig(lr=lr),"ft",lr)
print("train s", round(time.time()-t0), "loss", [round(r["loss"],3) for r in log][::max(1,len(log)//12)])
model.eval()
trng=np.random.default_rng(42); pt=[rec(trng,i,"presence") for i in range(200)]
for r in pt: r["conversations"]=r["conversations"][:2]
pr=E.generate_answers(model, proc, Dataset.from_list(pt,features=llava_json.features()), max_new_tokens=16, progress=False)
print("presence exact", np.mean([E.normalize(p)==E.normalize(r["answer"]) for p,r in zip(pr,pt)]), pr[:4], [r["answer"] for r in pt[:4]])
bench=D.build_dataset("pope",500,0)
pp=np.array([E.parse_yes_no(p) for p in E.generate_answers(model,proc,bench,progress=False)]); ans=np.array(bench["answer"])
print("POPE acc", np.mean(pp==ans), "yes ratio", np.mean(pp=="yes"))
for c in ["random","popular","adversarial"]:
    m=np.array(bench["category"])==c; print(" ", c, np.mean(pp[m]==ans[m]))
for b in ["scene-qa","count"]:
    d=D.build_dataset(b,300,0); p2=E.generate_answers(model,proc,d,progress=False)
    print(b, np.mean([E.is_correct(b,p,a) for p,a in zip(p2,d["answer"])]))
