"""Would a deeper embedded LM make layerwise pruning finer-grained? (issue 16, section 4)

Trains, with the default teacher recipe (`teacher.TeacherConfig`, seed 0), a 16-block llava-small variant with
about the same LM parameters (hidden 144, 6 heads, MLP 336: 228k parameters a block against 442k) and reports
what one block is of the LM, the training time and the teacher goals, beside the 8-block default teacher.

    HF_HUB_OFFLINE=1 python experiments/deeper_lm.py --out reports/deeper_lm.json

Exploratory: it registers its preset at run time and changes nothing in the package.
"""

import argparse
import json
import time
from pathlib import Path

from studylib import data as D, evaluation as E, models as M, pruning as P, study as S, teacher as T, validate as V

DEEP = M.Preset("clip", "llama", 128, 3, 4, 144, 16, 6, 6, 336)


def measure(preset: str, root: Path) -> dict:
    cfg = T.TeacherConfig(preset=preset, seed=0)
    t0 = time.time()
    folder = T.ensure_teacher(cfg, root)
    seconds = time.time() - t0
    model, processor = M.load(folder)
    benchmarks = E.load_benchmarks(n=500, seed=0)
    table = E.evaluate(model, processor, benchmarks, model_name=preset)
    blank = E.evaluate(model, processor, {b: d for b, d in benchmarks.items() if b in D.IMAGE_BENCHMARKS},
                       model_name="blank", blank_images=True)
    summary, blank_summary = E.summary(table), E.summary(blank)
    chance = {b: D.chance_level(d) for b, d in benchmarks.items()}
    goals = S.teacher_goals(summary, blank_summary, chance)
    lm, total = P.count_params(model)
    layers = P.describe_lm(model).layers
    block = sum(p.numel() for p in layers[0].parameters())
    metrics = json.loads(Path(folder, "teacher_metrics.json").read_text())
    return {"preset": preset, "blocks": len(layers), "lm_params": lm, "params": total,
            "block_share_of_lm": block / lm, "train_seconds_this_run": round(seconds, 1),
            "train_seconds_recorded": metrics["train_seconds"], "scores": summary, "blank": blank_summary,
            "goals_met": int(goals["met"].sum()), "goals": len(goals)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/deeper_lm.json")
    ap.add_argument("--root", default="", help="checkpoint root (default data/checkpoints)")
    args = ap.parse_args()
    M.PRESETS["llava-deep16"] = DEEP
    V.EMBEDDED_PRESETS = (*V.EMBEDDED_PRESETS, "llava-deep16")
    root = Path(args.root) if args.root else T.default_checkpoint_root()
    rows = [measure(p, root) for p in ("llava-small", "llava-deep16")]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(f"{r['preset']}: {r['blocks']} blocks, LM {r['lm_params']:,}, one block {r['block_share_of_lm']:.1%} "
              f"of the LM, trained in {r['train_seconds_recorded']:.0f} s, image mean {r['scores']['image_mean']:.3f}, "
              f"goals {r['goals_met']}/{r['goals']}")


if __name__ == "__main__":
    main()
