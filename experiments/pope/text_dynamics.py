"""Text only, one question per list, accuracy every K steps: does retrieval from a list ever start?
(README: after 1,500 steps "What is at the P?" 0.35, "Where is the X?" 0.49, "Is there a X?" 0.45)

As `text_lists.py` with one question per conversation (shorter rows: 0.5 s a step), a constant learning
rate after warm-up, and 150 held-out questions of each kind scored every K steps.
Run at commit 7d830d4 on teacher 4b1e9870a7 (14 min):
    python experiments/pope/text_dynamics.py 1500 1e-3 at,where,exists 250
Measured (at / where / exists): step 0 0.00 / 0.00 / 0.35; 250 0.13 / 0.50 / 0.45; 500 0.17 / 0.53 / 0.45;
750 0.33 / 0.52 / 0.55; 1000 0.40 / 0.49 / 0.45; 1250 0.39 / 0.47 / 0.45; 1500 0.35 / 0.49 / 0.45.
("Where is the X?" answered with a random listed position scores about 0.52.)
"""
import os, sys, time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from datasets import Dataset
from transformers import Trainer, TrainerCallback
from studylib import collate as C, data as D, evaluation as E, llava_json, models as M, teacher as T
steps=int(sys.argv[1]); lr=float(sys.argv[2]); kinds=sys.argv[3].split(","); every=int(sys.argv[4])
def caption(objs): return "; ".join(f"{o.name} at {D.CELL_NAMES[o.cell]}" for o in objs) + "."
def qa(rng, objs, kind):
    if kind=="exists":
        q,a,_,_=D.q_pope(rng, objs); return q.replace(" in the image?","?"), a
    o=objs[int(rng.integers(len(objs)))]
    if kind=="where":
        if sum(p.name==o.name for p in objs)>1: return None
        return f"Where is the {o.name}?", D.CELL_NAMES[o.cell]
    if kind=="at": return f"What is at the {D.CELL_NAMES[o.cell]}?", o.name
def item(rng, i, kind):
    while True:
        objs=D.random_scene(rng); r=qa(rng, objs, kind)
        if r: break
    q,a=r
    return {"id":f"t{i}","image":None,"family":"text-only","conversations":[{"from":"human","value":f"Objects: {caption(objs)} {q}"},{"from":"gpt","value":a}],"answer":a,"qtype":kind,"category":""}
rng=np.random.default_rng(1)
recs=[item(rng,i,kinds[i%len(kinds)]) for i in range(40000)]
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-4b1e9870a7")
tds=C.tokenize_dataset(Dataset.from_list(recs,features=llava_json.features()),proc)
tests={k: Dataset.from_list([item(np.random.default_rng(77+j),i,k) for j,i in enumerate(range(150))],features=llava_json.features()) for k in ["at","where","exists"]}
def score():
    model.eval(); out={}
    for k,d in tests.items():
        pr=E.generate_answers(model, proc, d, max_new_tokens=5, progress=False)
        out[k]=round(float(np.mean([E.normalize(p)==E.normalize(a) for p,a in zip(pr,d["answer"])])),3)
    model.train(); return out
class CB(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step % every == 0: print("STEP", state.global_step, score(), round(time.time()-t0), flush=True)
T.set_trainable(model,("vision","projector","lm")); model.train()
print("STEP 0", score(), flush=True)
args=T.training_args("/tmp/exp/ft3", steps=steps, batch_size=32, lr=lr, seed=0, warmup_ratio=0.03)
args.lr_scheduler_type="constant_with_warmup"
tr=Trainer(model=model,args=args,train_dataset=tds,data_collator=C.PackingCollator(proc,160),callbacks=[CB()])
t0=time.time(); tr.train()
