"""Train on the POPE conversations of the mix alone and print the answer loss (README: 0.356 -> 0.334).
Run on teacher 4b1e9870a7:  python experiments/pope/pope_only.py DIR 3e-4 150
"""
import os,sys,time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from studylib import collate as C, data as D, models as M, teacher as T
model, proc = M.load(sys.argv[1])
ds = D.build_dataset("train", 20000, 0)
pope = ds.filter(lambda f: f=="pope", input_columns="family")
print(len(pope))
tds = C.tokenize_dataset(pope, proc)
T.set_trainable(model, ("vision","projector","lm")); model.train()
cfg=T.TeacherConfig(lr=float(sys.argv[2]))
log=T.run_stage(model, proc, tds, Path("/tmp/popeonly"), int(sys.argv[3]), cfg, "ft", float(sys.argv[2]))
print([round(r["loss"],3) for r in log])
