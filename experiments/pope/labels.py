"""Training POPE labels against the teacher's own captions (README: 100 of 100 agree).
Run on teacher 4b1e9870a7 (commit 588885d):  python experiments/pope/labels.py DIR
"""
import os,sys,re; os.environ["HF_HUB_OFFLINE"]="1"
import numpy as np, torch
from studylib import collate as C, data as D, models as M
model, proc = M.load(sys.argv[1]); model.eval()
tok=proc.tokenizer; tok.padding_side="left"
ds = D.build_dataset("train", 20000, 0)
idx = [i for i,f in enumerate(ds["family"][:3000]) if f=="pope"][:100]
rows = ds.select(idx)
inp=proc(text=[C.prompt_text("Describe the image.\n<image>")]*len(rows), images=[im.convert("RGB") for im in rows["image"]], padding=True, return_tensors="pt")
out=model.generate(**inp, max_new_tokens=40, do_sample=False)
caps=tok.batch_decode(out[:, inp["input_ids"].shape[1]:], skip_special_tokens=True)
agree=[]
for r,c in zip(rows, caps):
    name=re.search(r"Is there a (.+) in the image", r["conversations"][0]["value"]).group(1)
    listed=[p.split(" at ")[0].strip() for p in c.strip().rstrip(".").split(";")]
    a="yes" if any(o==name or o.endswith(" "+name) for o in listed) else "no"
    agree.append(a==r["answer"])
print("train pope labels agree with captions:", np.mean(agree), len(agree))
