"""'Is the object at the P a S?' (position lookup + one comparison): finetune, held-out accuracy (README: 0.54).
Run on teacher 4b1e9870a7:  python experiments/pope/cell_check.py DIR 400 shape
"""
import os,sys; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from datasets import Dataset
from studylib import collate as C, data as D, llava_json, models as M, teacher as T
model, proc = M.load(sys.argv[1]); steps=int(sys.argv[2]); kind=sys.argv[3]
def make(n, seed):
    rng=np.random.default_rng(seed); recs=[]
    for i in range(n):
        objs=D.random_scene(rng); o=objs[int(rng.integers(len(objs)))]
        if kind=="shape":
            name = o.shape if rng.integers(2) else str(rng.choice([s for s in D.SHAPES if s!=o.shape]))
            ans = "yes" if name==o.shape else "no"
        else:
            if rng.integers(2): name=o.name
            else:
                c,s = D.OBJECT_TYPES[int(rng.integers(len(D.OBJECT_TYPES)))]
                while f"{c} {s}"==o.name: c,s = D.OBJECT_TYPES[int(rng.integers(len(D.OBJECT_TYPES)))]
                name=f"{c} {s}"
            ans = "yes" if name==o.name else "no"
        q=f"Is the object at the {D.CELL_NAMES[o.cell]} a {name}?"
        recs.append({"id":f"c{i}","image":D.render_scene(objs,rng),"family":"pope","conversations":[{"from":"human","value":llava_json.image_question(q)},{"from":"gpt","value":ans}],"answer":ans,"qtype":"pope","category":""})
    return recs
tds=C.tokenize_dataset(Dataset.from_list(make(4000,5),features=llava_json.features()),proc)
T.set_trainable(model,("vision","projector","lm")); model.train()
log=T.run_stage(model,proc,tds,Path("/tmp/popecell"),steps,T.TeacherConfig(lr=3e-4),"ft",3e-4)
print("loss",[round(r["loss"],3) for r in log][::4])
model.eval(); tok=proc.tokenizer; tok.padding_side="left"
yes,no=tok.convert_tokens_to_ids("Ġyes"),tok.convert_tokens_to_ids("Ġno")
test=make(400,99); ps=[]
for s in range(0,400,100):
    rows=test[s:s+100]
    inp=proc(text=[C.prompt_text(r["conversations"][0]["value"]) for r in rows],images=[r["image"].convert("RGB") for r in rows],padding=True,return_tensors="pt")
    with torch.no_grad(): pr=model(**inp).logits[:,-1].softmax(-1)
    ps+=list((pr[:,yes]>pr[:,no]).numpy())
print(kind, "held-out accuracy", np.mean(np.array(ps)==(np.array([r["answer"] for r in test])=="yes")))
