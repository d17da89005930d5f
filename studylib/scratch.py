"""The baseline pruning must beat: a model of the pruned size trained from scratch with the same compute.

Claim 6 of the study says that beyond 60 % "pruning + recovery is not worth it". Its meaning is a comparison:
would the compute spent on pruning and recovery have bought more as a small model trained directly? On the
embedded setting this can be measured. The model has exactly the pruned model's architecture (its config, every
block's widths), every weight freshly initialised (vision tower, projector and LM, as the teacher began), and is
trained as the teacher was (`teacher.run_stage`: all parts, the instruction mix, AdamW, cosine schedule) on as
many examples as the same number of floating-point operations buys.

Compute, in training examples of the small model (a forward pass costs 2 N FLOPs a token, a training step 6 N;
N_s the small model's parameters, N_t the teacher's; `examples` the recovery subset, `calib` the calibration
samples):

    recovery:     6 N_s * examples  (+ 2 N_t * examples when a KD term runs the teacher)
    calibration:  2 N_t * calib  (6 N_t * calib for a criterion that needs gradients)
    scratch:      6 N_s * examples_scratch, so
    examples_scratch = examples * (1 + [KD] N_t / (3 N_s)) + calib * N_t / N_s * (1/3 or 1)

The small model is trained on a seeded random subset of that many examples (cycled when it exceeds the mix).
LoRA recovery is counted as full training (its backward pass still runs through every frozen weight), which
slightly favours the scratch model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import collate as C
from . import pruning as P
from . import teacher as T


@dataclass(frozen=True)
class Budget:
    """The compute of pruning + recovery, as training examples of the small model (`examples_scratch`)."""

    recovery_examples: int
    calib_samples: int
    calib_needs: str  # what the criterion needs: nothing | forward | gradients
    kd: bool  # whether recovery ran the teacher (a KD term)
    student_params: int
    teacher_params: int
    multiple: float = 1.0  # of the matched compute

    @property
    def examples_scratch(self) -> int:
        ratio = self.teacher_params / self.student_params
        recovery = self.recovery_examples * (1 + (ratio / 3 if self.kd else 0.0))
        calib = self.calib_samples * ratio * {"nothing": 0.0, "forward": 1 / 3, "gradients": 1.0}[self.calib_needs]
        return max(1, round(self.multiple * (recovery + calib)))

    def to_dict(self) -> dict:
        return {**asdict(self), "examples_scratch": self.examples_scratch}


def budget(teacher_model, pruned_model, *, recovery_examples: int, calib_samples: int, criterion: str,
           paradigm: str, kd: bool, multiple: float = 1.0) -> Budget:
    """The `Budget` of one pruned + recovered model (parameters counted over the whole model)."""
    needs = P.get_criterion(paradigm, criterion).needs
    return Budget(recovery_examples, calib_samples if needs != "nothing" else 0, needs, kd,
                  P.count_params(pruned_model)[1], P.count_params(teacher_model)[1], multiple)


def fresh_copy(model, seed: int):
    """A model of `model`'s architecture (its config, so every block keeps its pruned widths) with every weight
    initialised afresh under `seed`, as `transformers` initialises a new model."""
    torch.manual_seed(seed)
    return type(model)(model.config)


def train(model, processor, data, n_examples: int, *, seed: int = 0, batch_size: int = 32, lr: float = 3e-4,
          out_dir) -> list[dict]:
    """Train every part of `model` on `n_examples` examples of `data` (a seeded permutation, cycled), one pass,
    padded batches of `batch_size` (so steps = ceil(n_examples / batch_size), as recovery counts them); returns
    the loss log."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(data))
    idx = [int(order[i % len(order)]) for i in range(n_examples)]
    tds = C.tokenize_dataset(data.select(idx), processor)
    cfg = T.TeacherConfig(seed=seed, batch_size=batch_size, lr=lr, pack_to=0)
    T.set_trainable(model, ("vision", "projector", "lm"))
    model.train()
    log = T.run_stage(model, processor, tds, Path(out_dir), math.ceil(n_examples / batch_size), cfg, "scratch")
    model.eval()
    return log
