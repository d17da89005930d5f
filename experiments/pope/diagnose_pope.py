"""Does a teacher that fails POPE see the objects? Two measurements on the POPE benchmark items.

1. Answer POPE from the teacher's own caption: ask "Describe the image.", parse "red circle at top left; ...",
   and answer "yes" when the named object (a coloured shape, or a shape) is listed. High accuracy here and
   chance on the POPE question itself means the objects are seen and the failure is in answering.
2. The answer distribution of the POPE question: mean and spread of p(first token of " yes") over the items,
   split by the gold answer (equal means and no spread: the question's answer ignores image and object).
3. With `--forms`: greedy accuracy per question form on scene-qa, pope and count (colours, shapes, positions
   and relations replaced by C, S, P, R), to compare existence with the lookups the model does answer.

    python experiments/pope/diagnose_pope.py data/checkpoints/teacher-llava-small-s0-<hash> [--n 200] [--forms]
"""

from __future__ import annotations

import argparse
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from studylib import collate as C, data as D, llava_json  # noqa: E402
from studylib import models as M  # noqa: E402


def caption_answers(model, processor, ds, batch_size: int = 50) -> list[str]:
    """'yes'/'no' for each POPE item, read off the model's caption of the image."""
    tok = processor.tokenizer
    tok.padding_side = "left"
    answers = []
    for start in range(0, len(ds), batch_size):
        rows = ds.select(range(start, min(start + batch_size, len(ds))))
        prompts = [C.prompt_text(llava_json.image_question("Describe the image."), C.system_prompt(processor))] * len(rows)
        inputs = processor(text=prompts, images=[im.convert("RGB") for im in rows["image"]], padding=True,
                           return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        captions = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for row, caption in zip(rows, captions):
            name = re.search(r"Is there a (.+) in the image", row["conversations"][0]["value"]).group(1)
            listed = [part.split(" at ")[0].strip() for part in caption.strip().rstrip(".").split(";")]
            answers.append("yes" if any(o == name or o.endswith(" " + name) for o in listed) else "no")
    return answers


def first_token_yes(model, processor, ds) -> np.ndarray:
    """p(first token of " yes") after each POPE question."""
    tok = processor.tokenizer
    yes = tok(" yes", add_special_tokens=False)["input_ids"][0]
    probs = []
    for row in ds:
        prompt = C.prompt_text(row["conversations"][0]["value"], C.system_prompt(processor))
        inputs = processor(text=[prompt], images=[row["image"].convert("RGB")], return_tensors="pt")
        with torch.no_grad():
            probs.append(model(**inputs).logits[0, -1].softmax(-1)[yes].item())
    return np.array(probs)


def question_forms(model, processor, seed: int = 0, n: int = 500) -> dict[str, tuple[float, int]]:
    """Greedy accuracy and item count per question form of the scene-qa, pope and count benchmarks."""
    from collections import defaultdict

    from studylib import evaluation as E

    words = {"C": list(D.COLORS), "S": D.SHAPES, "P": D.CELL_NAMES, "R": ["left of", "right of", "above", "below"]}
    hits = defaultdict(list)
    for bench in ("scene-qa", "pope", "count"):
        ds = D.build_dataset(bench, n, seed)
        for pred, row in zip(E.generate_answers(model, processor, ds, progress=False), ds):
            form = row["conversations"][0]["value"].replace("\n<image>", "")
            for letter, names in words.items():
                form = re.sub("|".join(sorted(names, key=len, reverse=True)), letter, form)
            hits[f"{bench}: {form}"].append(E.is_correct(bench, pred, row["answer"]))
    return {k: (float(np.mean(v)), len(v)) for k, v in sorted(hits.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher")
    ap.add_argument("--n", type=int, default=200, help="POPE items (the benchmark's first n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--forms", action="store_true", help="also: accuracy per question form (3 x 500 items)")
    args = ap.parse_args()
    model, processor = M.load(args.teacher)
    model.eval()
    ds = D.build_dataset("pope", 500, args.seed).select(range(args.n))
    gold = np.array(ds["answer"])
    from_caption = np.array(caption_answers(model, processor, ds))
    p_yes = first_token_yes(model, processor, ds)
    print(f"POPE answered from the model's own captions: accuracy {np.mean(from_caption == gold):.3f} "
          f"on {args.n} items (yes-ratio {np.mean(from_caption == 'yes'):.2f}, gold {np.mean(gold == 'yes'):.2f})")
    print(f"POPE question, accuracy of p(yes) > 0.5: {np.mean((p_yes > 0.5) == (gold == 'yes')):.3f}")
    for g in ("yes", "no"):
        p = p_yes[gold == g]
        print(f"  gold {g:>3}: p(first token of ' yes') mean {p.mean():.3f}, std {p.std():.4f}, "
              f"range [{p.min():.3f}, {p.max():.3f}] over {len(p)} items")
    if args.forms:
        print("accuracy per question form (C colour, S shape, P position, R relation):")
        for form, (acc, n) in question_forms(model, processor, args.seed).items():
            print(f"  {acc:.3f}  n={n:<4} {form}")


if __name__ == "__main__":
    main()
