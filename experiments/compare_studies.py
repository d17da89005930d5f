"""Compare two default-study runs' records cell by cell (matched by notebook + parameters): every AVG %."""
import json, sys
from pathlib import Path

def load(root):
    out = {}
    for p in Path(root, "reports/runs").glob("[!.]*.json"):
        r = json.loads(p.read_text())
        if "metrics" not in r:
            continue
        params = {k: v for k, v in r["parameters"].items()}
        key = (r["notebook"], json.dumps(params, sort_keys=True))
        out[key] = r["metrics"]
    return out

def numbers(nb, m):
    if nb in ("01_layerwise", "02_widthwise"):
        d = {f"{p['requested_ratio']}": round(p["avg_percent"], 6) for p in m["per_ratio"]}
        d |= {f"cmp {c}": round(v, 6) for c, v in m["comparison"]["avg_percent"].items()}
        return d
    if nb == "03_recovery":
        return {"pruned": round(m["avg_percent_pruned"], 6), "recovered": round(m["avg_percent_recovered"], 6)}
    if nb == "04_data_efficiency":
        return {f"{c['fraction']}": round(c["AVG %"], 6) for c in m["curve"]}
    if nb == "00_teacher":
        return {b: round(v, 6) for b, v in m["scores"].items()}
    if nb == "05_efficiency":
        return {r["model"]: round(r["AVG %"], 6) for r in m["round_to"] if "AVG %" in r and r["AVG %"] == r["AVG %"]}
    return {}

a, b = load(sys.argv[1]), load(sys.argv[2])
print(len(a), len(b), "cells")
same = diff = 0
missing = set(a) ^ set(b)
for k in sorted(set(a) & set(b)):
    na, nb_ = numbers(k[0], a[k]), numbers(k[0], b[k])
    if na == nb_:
        same += 1
    else:
        diff += 1
        print("DIFF", k, {x: (na.get(x), nb_.get(x)) for x in set(na) | set(nb_) if na.get(x) != nb_.get(x)})
print(f"{same} cells identical, {diff} differ, {len(missing)} unmatched")
for k in missing:
    print("UNMATCHED", k[0], k[1][:150])
sa = json.loads(Path(sys.argv[1], "reports/summary.json").read_text())
sb = json.loads(Path(sys.argv[2], "reports/summary.json").read_text())
va, vb = [c["held"] for c in sa["claims"]], [c["held"] for c in sb["claims"]]
print("verdicts", va, vb, "the same" if va == vb else "DIFFERENT")
# The two claims tables side by side (markdown), as the README shows them
print(f"\n| claim | {sys.argv[1]} | verdict | {sys.argv[2]} | verdict |\n|---|---|---|---|---|")
for ca, cb in zip(sa["claims"], sb["claims"]):
    print(f"| {ca['claim'].split('.')[0]} | {ca['this run']} | {ca['held']} | {cb['this run']} | {cb['held']} |")
