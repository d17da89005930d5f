"""Linear probe: does any layer's hidden state at the last prompt token encode the POPE answer? (README: 0.51-0.55)
Run at commit d484045 (image-first records, teacher a9deb797dd; path and the '<image>\\nIs there' filter are
that commit's):  python experiments/pope/probe.py
"""
import os; os.environ["HF_HUB_OFFLINE"]="1"
import numpy as np, torch
from studylib import collate as C, data as D, models as M
from sklearn.linear_model import LogisticRegression
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-a9deb797dd"); model.eval()
recs = D.generate_records("train", 12000, 3)
pope = [r for r in recs if r["conversations"][0]["value"].startswith("<image>\nIs there")][:1600]
X=[[] for _ in range(9)]; y=[]
proc.tokenizer.padding_side="left"
for s in range(0, len(pope), 100):
    rows = pope[s:s+100]
    prompts=[C.prompt_text(r["conversations"][0]["value"]) for r in rows]
    inp = proc(text=prompts, images=[r["image"].convert("RGB") for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad(): out = model(**inp, output_hidden_states=True)
    for l,h in enumerate(out.hidden_states): X[l].append(h[:,-1].numpy())
    y += [r["conversations"][1]["value"]=="yes" for r in rows]
y=np.array(y); print(len(y), y.mean())
for l in range(9):
    Xl=np.concatenate(X[l]); clf=LogisticRegression(max_iter=2000).fit(Xl[:1200],y[:1200])
    print("layer",l,"train",clf.score(Xl[:1200],y[:1200]),"test",clf.score(Xl[1200:],y[1200:]))
