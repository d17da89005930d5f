"""Text only: can the LM learn lookups in a list given in the prompt, and membership? (README: 0.68 / 0.52 / 0.48)

Conversations of 3 turns with no image about "Objects: red circle at top left; blue square at bottom right."
ask "What is at the P?" (keyed by position, copy), "Where is the X?" (keyed by content, copy) or
"Is there a X?" (membership, balanced as POPE). Finetunes teacher 4b1e9870a7 on 12,000 of them, then scores
300 held-out first turns of each kind.
Run at commit 7d830d4 on teacher 4b1e9870a7 (9.6 min):
    python experiments/pope/text_lists.py 600 5e-4 where,at,exists [SAVE_DIR]
Measured: "What is at the P?" 0.683, "Where is the X?" 0.517, "Is there a X?" 0.480.
"""
import os, sys, time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from datasets import Dataset
from studylib import collate as C, data as D, evaluation as E, llava_json, models as M, teacher as T
steps=int(sys.argv[1]); lr=float(sys.argv[2]); kinds=sys.argv[3].split(",")
def caption(objs): return "; ".join(f"{o.name} at {D.CELL_NAMES[o.cell]}" for o in objs) + "."
def qa(rng, objs, kind):
    if kind=="exists":
        q,a,_,_=D.q_pope(rng, objs); return q.replace(" in the image?","?"), a
    o=objs[int(rng.integers(len(objs)))]
    if kind=="where":
        if sum(p.name==o.name for p in objs)>1: return None
        return f"Where is the {o.name}?", D.CELL_NAMES[o.cell]
    if kind=="at": return f"What is at the {D.CELL_NAMES[o.cell]}?", o.name
def item(rng, i, kinds, turns=3):
    objs=D.random_scene(rng); conv=[]; asked=set()
    for t in range(20):
        r=qa(rng, objs, kinds[int(rng.integers(len(kinds)))])
        if r is None or r[0] in asked: continue
        asked.add(r[0]); q,a=r
        conv+=[{"from":"human","value":(f"Objects: {caption(objs)} {q}" if not conv else q)},{"from":"gpt","value":a}]
        if len(conv)==2*turns: break
    if not conv: return None
    return {"id":f"t{i}","image":None,"family":"text-only","conversations":conv,"answer":conv[1]["value"],"qtype":"","category":""}
rng=np.random.default_rng(1)
recs=[r for r in (item(rng,i,kinds) for i in range(12000)) if r]
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-4b1e9870a7")
tds=C.tokenize_dataset(Dataset.from_list(recs,features=llava_json.features()),proc)
T.set_trainable(model,("vision","projector","lm")); model.train()
t0=time.time(); log=T.run_stage(model,proc,tds,Path("/tmp/exp/ft2"),steps,T.TeacherConfig(lr=lr),"ft",lr)
print("train s", round(time.time()-t0), "loss", [round(r["loss"],3) for r in log][::max(1,len(log)//15)])
model.eval()
for k in ["where","at","exists"]:
    trng=np.random.default_rng(77); tc=[r for r in (item(trng,i,[k],1) for i in range(400)) if r][:300]
    pr=E.generate_answers(model, proc, Dataset.from_list(tc,features=llava_json.features()), max_new_tokens=6, progress=False)
    print(k, "acc", np.mean([E.normalize(p)==E.normalize(r["answer"]) for p,r in zip(pr,tc)]), pr[:3], [r["answer"] for r in tc[:3]])
if len(sys.argv)>4: model.save_pretrained(sys.argv[4]); proc.save_pretrained(sys.argv[4])
