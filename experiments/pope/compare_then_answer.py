"""Look-then-answer POPE replies plus dense text-only comparisons; finetune, then POPE (README: 0.508).

POPE replies become "<caption>. So yes." and 6,000 text-only conversations of 4 turns ask the same questions
about a caption given in the prompt ("Objects: red circle at top left; ... Is there a red square?"), so the
only step left to the POPE reply is a comparison in text. Finetunes teacher 4b1e9870a7 on them plus 6,000
records of the usual mix and 3,000 POPE records, then scores held-out text comparisons, the POPE benchmark
(last "yes"/"no" of a 40-token reply) and scene-qa / count (forgetting).
Run at commit 7d830d4 on teacher 4b1e9870a7 (9.9 min):
    python experiments/pope/compare_then_answer.py 600 3e-4 6000 3000 cot [SAVE_DIR]
Measured: text comparison 0.497, POPE 0.508 (yes-ratio 0.80), scene-qa 0.813, count 0.737 (300 items each).
"""
import os, sys, time; os.environ["HF_HUB_OFFLINE"]="1"; os.environ["HF_DATASETS_OFFLINE"]="1"
import numpy as np, torch
from pathlib import Path
from datasets import Dataset, concatenate_datasets
from studylib import collate as C, data as D, evaluation as E, llava_json, models as M, teacher as T
steps=int(sys.argv[1]); lr=float(sys.argv[2]); n_text=int(sys.argv[3]); n_pope=int(sys.argv[4]); mode=sys.argv[5]
torch.manual_seed(0)
orig = D.q_pope
def caption(objs): return "; ".join(f"{o.name} at {D.CELL_NAMES[o.cell]}" for o in objs) + "."
def q_pope_cot(rng, objs, category=None):
    q, a, fam, cat = orig(rng, objs, category)
    return q, f"{caption(objs)} So {a}.", fam, cat
def text_compare(rng, i, turns=4):
    objs = D.random_scene(rng); conv=[]; asked=set()
    for t in range(12):
        q, a, _, _ = orig(rng, objs)
        q = q.replace(" in the image?", "?")
        if q in asked: continue
        asked.add(q)
        human = f"Objects: {caption(objs)} {q}" if not conv else q
        conv += [{"from":"human","value":human},{"from":"gpt","value":a}]
        if len(conv) == 2*turns: break
    return {"id":f"tc-{i}","image":None,"family":"text-only","conversations":conv,"answer":conv[1]["value"],"qtype":"tc","category":""}
def pope_cot(rng, i):
    image, turns = D.gen_scene(rng, ["pope"])
    q, a, _, cat = turns[0]
    return {"id":f"pc-{i}","image":image,"family":"pope","conversations":[{"from":"human","value":llava_json.image_question(q)},{"from":"gpt","value":a}],"answer":a,"qtype":"pope","category":cat}
D.q_pope = q_pope_cot if mode=="cot" else orig
rng=np.random.default_rng(123)
recs = D.generate_records("train", 6000, 11)
recs += [text_compare(rng, i) for i in range(n_text)]
recs += [pope_cot(rng, i) for i in range(n_pope)]
print(recs[-1]["conversations"], recs[-n_pope-1]["conversations"])
ds = Dataset.from_list(recs, features=llava_json.features())
model, proc = M.load("data/checkpoints/teacher-llava-small-s0-4b1e9870a7")  # the teacher measured
tds = C.tokenize_dataset(ds, proc)
cfg = T.TeacherConfig(lr=lr)
T.set_trainable(model, ("vision","projector","lm")); model.train()
t0=time.time()
log = T.run_stage(model, proc, tds, Path("/tmp/exp/ft"), steps, cfg, "ft", lr)
print("train s", round(time.time()-t0), "loss", [round(r["loss"],3) for r in log][::max(1,len(log)//12)])
model.eval(); D.q_pope = orig
# text-compare held out: greedy on first turn
trng=np.random.default_rng(999); tc=[text_compare(trng, i, 1) for i in range(300)]
tcd=Dataset.from_list(tc, features=llava_json.features())
pr=E.generate_answers(model, proc, tcd, max_new_tokens=3, progress=False)
print("text-compare acc", np.mean([E.parse_yes_no(p)==r["answer"] for p,r in zip(pr,tc)]))
bench = D.build_dataset("pope", 500, 0)
preds = E.generate_answers(model, proc, bench, max_new_tokens=(40 if mode=="cot" else 8), progress=False)
def parse(p):
    w=[x for x in E.normalize(p).split() if x in ("yes","no")]
    return w[-1] if w else ""
ans=np.array(bench["answer"]); pp=np.array([parse(p) for p in preds])
print("POPE acc", np.mean(pp==ans), "yes ratio", np.mean(pp=="yes"))
for c in ["random","popular","adversarial"]:
    m=np.array(bench["category"])==c; print(" ", c, np.mean(pp[m]==ans[m]))
print(preds[:4], list(ans[:4]))
for b in ["scene-qa","count"]:
    d = D.build_dataset(b, 300, 0); p2 = E.generate_answers(model, proc, d, progress=False)
    print(b, np.mean([E.is_correct(b,p,a) for p,a in zip(p2, d["answer"])]))
if len(sys.argv)>6: model.save_pretrained(sys.argv[6]); proc.save_pretrained(sys.argv[6])
