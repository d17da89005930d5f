"""Teacher recipe sweep on a GPU (exploration only; the teacher itself trains on the CPU).

A plain loop that matches the Trainer recipe (AdamW, linear warm-up then cosine decay, answer-token CE),
so many recipes can be compared in minutes. Accuracy vs optimiser steps is what transfers to the CPU.
Usage: python experiments/gpu_teacher_sweep.py OUT_JSON NAME [NAME ...]
"""
import json, math, os, sys, time
import torch
from studylib import collate as C, data as D, evaluation as E, models as M

dev = "cuda" if torch.cuda.is_available() else "cpu"
RECIPES = {
    "lr3e-4": dict(lr=3e-4, s1=0, steps=1200),
    "lr5e-4": dict(lr=5e-4, s1=0, steps=1200),
    "lr1e-3": dict(lr=1e-3, s1=0, steps=1200),
    "lr3e-4-s1": dict(lr=3e-4, s1=100, steps=1200),
}


def encode_all(recs, proc):
    n = C.num_image_tokens(proc)
    enc = [C.encode(r, proc, n) for r in recs]
    imgs = [r["image"] for r in recs]
    has = torch.tensor([im is not None for im in imgs])
    pv = proc.image_processor([im if im is not None else imgs[0] for im in imgs], return_tensors="pt")["pixel_values"]
    return enc, has, pv


def batch(enc, has, pv, idx, pad):
    n = max(len(enc[i]["input_ids"]) for i in idx)
    ids = torch.full((len(idx), n), pad); lab = torch.full((len(idx), n), -100); att = torch.zeros((len(idx), n), dtype=torch.long)
    for j, i in enumerate(idx):
        k = len(enc[i]["input_ids"]); ids[j, :k] = torch.tensor(enc[i]["input_ids"]); lab[j, :k] = torch.tensor(enc[i]["labels"]); att[j, :k] = 1
    sel = [i for i in idx if has[i]]
    out = dict(input_ids=ids, labels=lab, attention_mask=att)
    if sel:
        out["pixel_values"] = pv[sel]
    return {k: v.to(dev) for k, v in out.items()}


class ListDS:
    """Enough of datasets.Dataset for evaluation.generate_answers / score_benchmark."""
    def __init__(self, recs): self.recs = recs
    def __len__(self): return len(self.recs)
    def __getitem__(self, k):
        if isinstance(k, str): return [r[k] for r in self.recs]
        rs = self.recs[k]; return {c: [r[c] for r in rs] for c in rs[0]}


def quick_eval(model, proc, benches, blank=False):
    model.eval(); out = {}
    for b, ds in benches.items():
        if blank and b == "text-only": continue
        preds = E.generate_answers(model, proc, ds, 100, blank_images=blank, progress=False)
        out[b] = round(E.score_benchmark(b, preds, ds)["accuracy"], 3)
    model.train()
    img = [out[b] for b in D.IMAGE_BENCHMARKS]
    out["image_mean"] = round(sum(img) / len(img), 3)
    return out


def main():
    out_path, names = sys.argv[1], sys.argv[2:]
    t0 = time.time()
    proc = M.build_processor("llava-small")
    recs = D.generate_records("train", 20000, 0)
    enc, has, pv = encode_all(recs, proc)
    cap = [i for i, r in enumerate(recs) if r["family"] == "caption"]
    benches = {b: ListDS(D.generate_records(b, 300, 0)) for b in D.BENCHMARKS}
    print(f"data ready in {time.time() - t0:.0f}s", flush=True)
    orig_call = type(proc).__call__
    def call(self, *a, **k):
        return orig_call(self, *a, **k).to(dev)
    type(proc).__call__ = call
    results = {}
    scale = float(os.environ.get("SWEEP_SCALE", "1"))  # < 1 for a quick smoke run
    for name in names:
        r = RECIPES[name]
        from dataclasses import replace
        preset = replace(M.PRESETS["llava-small"], **r.get("preset", {}))
        torch.manual_seed(0)
        model = M.build_model(preset, proc).to(dev)
        params = M.param_breakdown(model)
        bs = r.get("bs", 32)
        g = torch.Generator().manual_seed(0)
        curve = []
        t1 = time.time()
        for stage, steps, pool in (("s1", int(r["s1"] * scale), cap), ("s2", int(r["steps"] * scale), list(range(len(recs))))):
            if not steps: continue
            opt = torch.optim.AdamW([p for p in model.parameters()], lr=r["lr"], weight_decay=r.get("wd", 0.0))
            warm = math.ceil(0.03 * steps)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
            perm = []
            for step in range(steps):
                if len(perm) < bs:
                    perm += [pool[i] for i in torch.randperm(len(pool), generator=g).tolist()]
                idx, perm = perm[:bs], perm[bs:]
                loss = model(**batch(enc, has, pv, idx, proc.tokenizer.pad_token_id)).loss
                loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad()
                if stage == "s2" and (step + 1) % int(300 * scale) == 0:
                    ev = quick_eval(model, proc, benches)
                    curve.append(dict(step=step + 1, loss=round(loss.item(), 3), **ev))
                    print(name, curve[-1], f"{time.time() - t1:.0f}s", flush=True)
        blank = quick_eval(model, proc, benches, blank=True)
        results[name] = dict(recipe=r, params=params, curve=curve, blank=blank)
        print(name, "BLANK", blank, flush=True)
        json.dump(results, open(out_path, "w"), indent=1)


main()
