"""RMS of each decoder layer's output (the residual stream) on a few training conversations: the scale the
unnormalised hidden-state MSE of recovery works at, compared across teachers.

    python benchmarks/hidden_scale.py data/checkpoints/teacher-gemma-270m-s0-<hash> data/checkpoints/teacher-llava-small-s0-<hash>
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from studylib import collate as C, data as D  # noqa: E402
from studylib import models as M  # noqa: E402

N = 8  # training conversations


def main() -> None:
    for folder in sys.argv[1:]:
        model, processor = M.load(folder)
        model.eval()
        rows = C.tokenize_dataset(D.build_dataset("train", 20000, 0).select(range(N)), processor)
        batch = C.Collator(processor)([rows[i] for i in range(N)])
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
        mask = batch["attention_mask"].bool()
        rms = [round(h[mask].pow(2).mean().sqrt().item(), 1) for h in out.hidden_states[1:-1]]
        print(f"{folder}: answer CE {out.loss.item():.3f}; residual RMS by layer {rms} "
              f"(last entry of hidden_states is after the final norm, left out)")


if __name__ == "__main__":
    main()
