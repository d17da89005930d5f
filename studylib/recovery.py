"""Recovery training of a pruned MLLM: supervised finetuning and distillation from the unpruned teacher.

    recover(student, teacher, data, config, out_dir, processor)   -> RecoveryResult

What is trained (`config.train`; the vision tower is always frozen, as in the study):
    projector   the multimodal projector only
    lora        the projector + LoRA adapters on the LM's linear layers (peft), merged into the weights on save
    full        the projector + the whole LM (embeddings, blocks, head)

The loss (`config.loss`), over a batch with answer positions A (labels != -100, shifted by one):
    ce      CE     = mean_{t in A} -log p_S(y_t)                               (LLaVA's SFT loss)
    kl      KL     = tau^2 * mean_{t in P} sum_v p_T(v|t) [log p_T(v|t) - log p_S(v|t)],  p = softmax(z / tau)
                     P = A (default) or every non-padding position (`kl_positions="all"`, the study's code);
                     `kl_scale="sequence_sum"` (the study's code) sums over P per sequence instead of the mean
    hidden  HID    = mean over matched block pairs (j, m(j)) of mean_{t, d} (h^S_j - h^T_{m(j)})^2
                     over non-padding tokens: the final blocks of both models always; an extra student
                     block j is matched to the teacher block it was (the plan's kept blocks, or j).
                     `hidden_target`: "final_norm" (default, as the study's code: the final pair is the
                     last hidden state, after the final norm), "blocks" (block outputs, before the final
                     norm), or "scale_free" (block outputs, each pair's MSE divided by mean(h^T^2))
    ce+kl, ce+hidden, ce+hidden+kl:   alpha * KD + (1 - alpha) * CE,   KD = KL, HID or KL + HID

The teacher is frozen and runs without gradients on the same batch. By default it sees its own image
features (its own vision tower and projector): it is the unpruned model answering the same question.
`teacher_input="student"` reproduces the study's LLaVA trainer, which fed the teacher the *student's*
projector output; the teacher then scores the student's view of the image, and the KD target moves as
the student's projector is trained.

Training goes through `transformers.Trainer` (a subclass that only overrides `compute_loss`), so the same
code runs on one CPU and under `accelerate launch`. The losses and the layer matching are written out
here because they are the methods being studied (TRL has logit distillation but no hidden-state one).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import collate as C
from . import data as D
from . import models as M
from . import evaluation, study
from .pruning import PruningPlan, count_params, describe_lm, hidden_out

from . import validate as V
from .validate import KL_POSITIONS, LOSSES, TEACHER_INPUTS, TRAIN_MODES  # noqa: F401  (the names users pass)


@dataclass
class RecoveryConfig:
    train: str = "lora"  # projector | lora | full
    loss: str = "ce"  # ce | kl | hidden | ce+kl | ce+hidden | ce+hidden+kl
    alpha: float = 0.5  # weight of the KD term in combinations
    temperature: float = 2.0  # tau of the KL term
    kl_positions: str = "answer"  # answer | all
    kl_scale: str = "token_mean"  # token_mean | sequence_sum (the study's code: summed over positions and vocabulary)
    hidden_target: str = "final_norm"  # final_norm (the study's code) | blocks | scale_free, see hidden_mse
    hidden_layers: list[int] = field(default_factory=list)  # extra student blocks matched (final block always)
    teacher_input: str = "own"  # own | student (the study's code)
    data_fraction: float | int = 0.05  # float in (0, 1]: a fraction; int >= 1: a number of examples
    n_train: int = 20000  # size of the instruction mix the subset is drawn from
    epochs: float = 1.0
    lr: float = 2e-4
    batch_size: int = 32
    warmup_ratio: float = 0.03
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["all"])  # LM linear layer names, or "all"
    seed: int = 0
    save_steps: int = 50  # Trainer checkpoint every N steps (resume); 0: none
    threads: int = 0  # 0: leave torch's default
    # Scale (real models on GPUs; the defaults are the CPU study's)
    bf16: bool = False  # bfloat16 autocast (GPUs only: ~28x slower than fp32 on this CPU)
    grad_accum: int = 1  # gradient accumulation steps: effective batch = batch_size x grad_accum x processes
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (memory for time)


@dataclass
class RecoveryResult:
    out_dir: Path
    metrics: dict
    log: list[dict]


# ----------------------------------------------------------------------------------------------
# Checks (all before any training starts)


def check_config(cfg: RecoveryConfig) -> None:
    """Raise a ValueError naming the parameter and its allowed values for any bad setting."""
    for name, allowed in (("train", TRAIN_MODES), ("loss", LOSSES), ("kl_positions", KL_POSITIONS),
                          ("kl_scale", V.KL_SCALES), ("hidden_target", V.HIDDEN_TARGETS),
                          ("teacher_input", TEACHER_INPUTS)):
        V.choice(name, getattr(cfg, name), allowed)
    V.number("alpha", cfg.alpha, 0, 1)  # loss = alpha * KD + (1 - alpha) * CE
    V.number("temperature", cfg.temperature, 0, low_open=True)
    V.number("epochs", cfg.epochs, 0, low_open=True)
    V.number("lr", cfg.lr, 0, low_open=True)
    V.number("warmup_ratio", cfg.warmup_ratio, 0, 1)
    V.number("lora_dropout", cfg.lora_dropout, 0, 1, high_open=True)
    for name in ("batch_size", "lora_rank", "lora_alpha", "n_train", "grad_accum"):
        V.integer(name, getattr(cfg, name), 1)
    for name in ("seed", "save_steps", "threads"):
        V.integer(name, getattr(cfg, name), 0)
    for j in cfg.hidden_layers:
        V.integer("hidden_layers", j)  # negative: counted from the last block (checked against the model later)
    check_fraction(cfg.data_fraction)


def check_fraction(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"data_fraction={value!r} must be a fraction in (0, 1] or a count >= 1")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError(f"data_fraction={value} must be a fraction in (0, 1] (or an integer count >= 1)")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"data_fraction={value} must be a count >= 1 (or a fraction in (0, 1])")


def uses_teacher(loss: str) -> bool:
    return loss != "ce"


def uses(loss: str, term: str) -> bool:
    return term in loss.split("+")


def check_pair(student, teacher, cfg: RecoveryConfig, plan: PruningPlan | None,
               processor=None, teacher_processor=None) -> list[tuple[int, int]]:
    """Check that `teacher` can teach `student` with `cfg.loss`; return the matched block pairs (hidden KD)."""
    if not uses_teacher(cfg.loss):
        return []
    if teacher is None:
        raise ValueError(f"loss={cfg.loss!r} distils from a teacher: pass the unpruned model as teacher")
    vs, vt = student.get_input_embeddings().num_embeddings, teacher.get_input_embeddings().num_embeddings
    if vs != vt:
        raise ValueError(f"student and teacher vocabularies differ ({vs} vs {vt} tokens): logit distillation "
                         "needs the same tokenizer; use the unpruned model the student was pruned from")
    if processor is not None and teacher_processor is not None:
        if processor.tokenizer.get_vocab() != teacher_processor.tokenizer.get_vocab():
            raise ValueError("student and teacher tokenizers differ (same size, different tokens): distillation "
                             "needs the tokenizer the student was pruned with")
    s_id = getattr(student.config, "image_token_id", None)
    t_id = getattr(teacher.config, "image_token_id", None)
    if s_id != t_id:
        raise ValueError(f"student and teacher image token ids differ ({s_id} vs {t_id})")
    if not uses(cfg.loss, "hidden"):
        return []
    hs = describe_lm(student).text_config.hidden_size
    ht = describe_lm(teacher).text_config.hidden_size
    if hs != ht:
        raise ValueError(f"hidden-state distillation needs equal hidden sizes (student {hs}, teacher {ht}); "
                         "structural pruning here keeps the hidden size, so the teacher is not the unpruned model")
    return layer_pairs(len(describe_lm(student).layers), len(describe_lm(teacher).layers), plan, cfg.hidden_layers)


def layer_pairs(n_student: int, n_teacher: int, plan: PruningPlan | None,
                extra: list[int] | tuple[int, ...] = ()) -> list[tuple[int, int]]:
    """(student block j, teacher block m(j)) pairs whose outputs hidden-state KD matches.

    The final student block is always matched to the final teacher block: the study's "final hidden
    state", what both models feed their norm and LM head. Each extra block j is matched to the teacher
    block it was: m(j) = plan.kept_layers[j] after layerwise pruning, m(j) = j otherwise. (Matching the
    final student block to its own original block instead would give a zero loss whenever the deepest
    blocks were removed, as Block Influence does on LLaVA: same weights, same input, same output.)
    A student with fewer blocks and no layerwise plan cannot be matched: error.
    """
    if plan is not None and plan.num_layers != n_teacher:
        raise ValueError(f"the student's pruning plan was made on a model with {plan.num_layers} blocks but the "
                         f"teacher has {n_teacher}: the student is not derived from this teacher")
    if plan is not None and plan.kept_layers is not None:
        kept = list(plan.kept_layers)
        if len(kept) != n_student:
            raise ValueError(f"the pruning plan keeps {len(kept)} blocks but the student has {n_student}")
    elif n_student == n_teacher:
        kept = list(range(n_student))
    else:
        raise ValueError(f"student has {n_student} blocks, teacher {n_teacher}, and no layerwise pruning plan "
                         "says which teacher block each student block came from (pruning_plan.json); "
                         "hidden-state distillation needs it")
    js = sorted(set(int(j) % n_student if -n_student <= int(j) < n_student else _bad_layer(j, n_student)
                    for j in [*extra, n_student - 1]))
    return [(j, n_teacher - 1 if j == n_student - 1 else kept[j]) for j in js]


def _bad_layer(j, n: int):
    raise ValueError(f"hidden_layers entry {j} is not a student block (valid: 0..{n - 1} or negative indices)")


# ----------------------------------------------------------------------------------------------
# Losses (pure functions over tensors)


def masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE = mean over answer tokens of -log softmax(logits[t])[labels[t + 1]] (labels -100 are ignored)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def kd_positions(labels: torch.Tensor, attention_mask: torch.Tensor, positions: str = "answer") -> torch.Tensor:
    """Boolean (B, L-1) mask of the logits positions that distillation compares: those predicting an
    answer token (`answer`) or any real token (`all`)."""
    V.choice("kl_positions", positions, KL_POSITIONS)
    if positions == "answer":
        return labels[:, 1:] != -100
    return attention_mask[:, 1:].bool()


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
            temperature: float = 2.0, scale: str = "token_mean") -> torch.Tensor:
    """tau^2 * KL(p_T || p_S), p = softmax(z / tau), over the masked positions of (B, L-1, V) logits:
    `token_mean` averages it over those positions; `sequence_sum` (the study's code) sums it over each
    sequence's positions and the vocabulary, then averages over the B sequences."""
    V.choice("kl_scale", scale, V.KL_SCALES)
    s = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    total = kl.mean() if scale == "token_mean" else kl.sum() / mask.shape[0]
    return total * temperature**2


def hidden_mse(student_states: list[torch.Tensor], teacher_states: list[torch.Tensor],
               mask: torch.Tensor, scale_free: bool = False) -> torch.Tensor:
    """Mean over pairs of mean_{masked tokens, dims} (h_S - h_T)^2; states are (B, L, H), mask (B, L). With
    scale_free, each pair's MSE is divided by the teacher states' mean square, mean(h_T^2) (so a residual
    stream of RMS 1000 and one of RMS 1 weigh alike). Which states: `hidden_target` ("blocks": the matched
    block outputs, before the final norm; "final_norm": the last hidden state after the final norm, what
    the study's code takes from `output_hidden_states[-1]`, plus any extra matched blocks)."""
    losses = []
    for s, t in zip(student_states, teacher_states):
        s, t = s[mask].float(), t[mask].float()
        loss = F.mse_loss(s, t)
        losses.append(loss / t.pow(2).mean().clamp_min(1e-12) if scale_free else loss)
    return torch.stack(losses).mean()


def combine(loss: str, alpha: float, ce=None, kl=None, hidden=None) -> torch.Tensor:
    """ce | kl | hidden alone, or alpha * KD + (1 - alpha) * CE with KD = the sum of the KD terms named."""
    kd = sum(t for t in (kl, hidden) if t is not None)
    if loss == "ce":
        return ce
    if "ce" not in loss.split("+"):
        return kd
    return alpha * kd + (1 - alpha) * ce


# ----------------------------------------------------------------------------------------------
# Data subsets


def subset_indices(n: int, fraction: float | int, seed: int = 0) -> list[int]:
    """A seeded uniform random subset of range(n): the first k of one fixed permutation, so subsets of
    the same seed are nested (the 1 % subset lies inside the 5 % one). k = round(fraction * n) or a count."""
    check_fraction(fraction)
    k = fraction if isinstance(fraction, int) else int(round(fraction * n))
    if k < 1:
        raise ValueError(f"data_fraction={fraction} of {n} examples selects no example; use a larger fraction "
                         f"(at least {1 / n:.2g}) or a count")
    if k > n:
        raise ValueError(f"data_fraction={fraction} asks for {k} examples but the data has only {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[:k])


def parse_fraction(text: str) -> float | int:
    """'5%' -> 0.05, '0.05' -> 0.05, '1.0' -> 1.0 (all), '500' -> 500 examples."""
    t = str(text).strip()
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100
        if any(c in t for c in ".eE"):
            return float(t)
        return int(t)
    except ValueError:
        raise ValueError(f"--data-fraction {text!r}: give a fraction (0.05), a percentage (5%) or a count (500)") \
            from None


# ----------------------------------------------------------------------------------------------
# What is trained


def _lm_linear_names(model, targets: list[str]) -> list[str]:
    info = describe_lm(model)
    prefix = next(n for n, m in model.named_modules() if m is info.decoder)
    names = [f"{prefix}.{n}" for n, m in info.decoder.named_modules() if isinstance(m, nn.Linear)]
    if targets != ["all"]:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        bad = [t for t in targets if t not in leaves]
        if bad:
            raise ValueError(f"lora_targets {bad} are not linear layers of the LM; valid: all, {', '.join(leaves)}")
        names = [n for n in names if n.rsplit(".", 1)[-1] in targets]
    return names


def prepare_student(student, cfg: RecoveryConfig):
    """Freeze what `cfg.train` does not train; wrap with LoRA adapters for `lora`. Returns the model to train."""
    for p in student.parameters():
        p.requires_grad_(False)
    if cfg.train == "lora":
        from peft import LoraConfig, get_peft_model

        names = _lm_linear_names(student, cfg.lora_targets)
        # A string target is a regex peft full-matches against module names: exactly the LM's linear layers.
        # The projector is trained whole as a "module to save", so Trainer checkpoints (resume) include it.
        lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules="|".join(re.escape(n) for n in names),
                          modules_to_save=["multi_modal_projector"])
        return get_peft_model(student, lcfg)  # the vision tower stays frozen, as in the study
    trained = [student.model.multi_modal_projector]
    if cfg.train == "full":
        info = describe_lm(student)
        trained += [info.decoder, info.lm_head]
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    return student


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# The Trainer


def _unwrap(model):
    while hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class _Capture:
    """Forward hooks that keep the outputs of some modules for the current step."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(k)) for k, m in modules.items()]

    def _hook(self, key):
        def hook(module, args, output):
            self.out[key] = hidden_out(output)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def trainer_class():
    """The recovery `Trainer` subclass (made on call, so that transformers is imported only when training)."""
    from transformers import Trainer

    class RecoveryTrainer(Trainer):
        """`Trainer` whose loss is `combine(ce, kl, hidden)` against a frozen teacher (see the module doc)."""

        def __init__(self, *args, teacher=None, cfg: RecoveryConfig, pairs=(), **kw):
            super().__init__(*args, **kw)
            self.cfg, self.pairs, self.teacher = cfg, list(pairs), teacher
            student = _unwrap(self.model)
            s_layers = describe_lm(student).layers
            mods = {f"s{j}": s_layers[j] for j, _ in self.pairs}
            if teacher is not None:
                teacher.to(self.args.device).eval().requires_grad_(False)
                t_layers = describe_lm(teacher).layers
                self.t_capture = _Capture({f"t{j}": t_layers[m] for j, m in self.pairs})
                if cfg.teacher_input == "student":
                    mods["projector"] = student.model.multi_modal_projector
            self.s_capture = _Capture(mods)
            self.parts: dict[str, list[float]] = {"ce": [], "kl": [], "hidden": []}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            cfg, terms = self.cfg, {}
            final_norm = uses(cfg.loss, "hidden") and cfg.hidden_target == "final_norm"
            out = model(**inputs, use_cache=False, output_hidden_states=final_norm)
            if uses(cfg.loss, "ce"):
                terms["ce"] = masked_ce(out.logits, labels)
            if self.teacher is not None:
                t_out = self._teacher_forward(inputs, final_norm)
                if uses(cfg.loss, "kl"):
                    mask = kd_positions(labels, inputs["attention_mask"], cfg.kl_positions)
                    terms["kl"] = kl_loss(out.logits[:, :-1], t_out.logits[:, :-1], mask, cfg.temperature,
                                          cfg.kl_scale)
                if uses(cfg.loss, "hidden"):
                    mask = inputs["attention_mask"].bool()
                    s_states = [self.s_capture.out[f"s{j}"] for j, _ in self.pairs]
                    t_states = [self.t_capture.out[f"t{j}"] for j, _ in self.pairs]
                    if final_norm:  # the final block pair (last in `pairs`) becomes the states after the norm
                        s_states[-1], t_states[-1] = out.hidden_states[-1], t_out.hidden_states[-1]
                    terms["hidden"] = hidden_mse(s_states, t_states, mask, cfg.hidden_target == "scale_free")
            for k, v in terms.items():
                self.parts[k].append(float(v.detach()))
            loss = combine(cfg.loss, cfg.alpha, **terms)
            return (loss, out) if return_outputs else loss

        @torch.no_grad()
        def _teacher_forward(self, inputs, hidden_states: bool = False):
            if self.cfg.teacher_input == "own":
                return self.teacher(**inputs, use_cache=False, output_hidden_states=hidden_states)
            # the study's LLaVA trainer: the teacher reads the student's projector output at the image tokens
            ids = inputs["input_ids"]
            embeds = self.teacher.get_input_embeddings()(ids)
            if "pixel_values" in inputs:
                feats = self.s_capture.out["projector"].detach().to(embeds.dtype)
                image = (ids == self.teacher.config.image_token_id).unsqueeze(-1)
                embeds = embeds.masked_scatter(image.expand_as(embeds), feats)
            return self.teacher(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], use_cache=False,
                                output_hidden_states=hidden_states)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            model = model or self.model
            if hasattr(model, "peft_config"):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            # Trainer reads model.safetensors with a plain load_state_dict, but save_pretrained wrote LLaVA's
            # original key layout (language_model.model.* ...): load it the way from_pretrained does.
            saved = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
            model.load_state_dict(saved.state_dict())

        def log(self, logs: dict, *args, **kwargs):
            for k, v in self.parts.items():  # the mean of each loss term since the last log
                if v and "loss" in logs:
                    logs[f"loss_{k}"] = round(sum(v) / len(v), 5)
                    v.clear()
            super().log(logs, *args, **kwargs)

    return RecoveryTrainer


# ----------------------------------------------------------------------------------------------
# Entry point


@torch.no_grad()
def mean_ce(model, processor, tds, batch_size: int = 32, max_examples: int = 128) -> float:
    """Mean answer-token CE of `model` on the first `max_examples` of a tokenized dataset."""
    collate = C.Collator(processor)
    device = next(model.parameters()).device
    model.eval()
    rows = tds.select(range(min(max_examples, len(tds))))
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate([rows[j] for j in range(i, min(i + batch_size, len(rows)))]).items()}
        labels = batch.pop("labels")
        logits = model(**batch, use_cache=False).logits
        n = int((labels[:, 1:] != -100).sum())
        total += float(masked_ce(logits, labels)) * n
        count += n
    return total / max(count, 1)


def recover(student, teacher, data, cfg: RecoveryConfig, out_dir: str | Path, processor,
            plan: PruningPlan | None = None, teacher_processor=None) -> RecoveryResult:
    """Recover `student` (pruned) on a `cfg.data_fraction` subset of `data` (a LLaVA-format Dataset).

    Writes a plain HF checkpoint (LoRA merged), the processor, `train_log.json` and `recovery_metrics.json`
    to `out_dir`; Trainer checkpoints go to `out_dir/_trainer` and an interrupted run resumes from the last.
    Every check runs before training; the student is modified in place (LoRA: a merged copy is saved).
    """
    from accelerate import PartialState
    from transformers import set_seed

    from .teacher import training_args

    check_config(cfg)
    pairs = check_pair(student, teacher, cfg, plan, processor, teacher_processor)
    idx = subset_indices(len(data), cfg.data_fraction, cfg.seed)
    if cfg.train == "lora":
        _lm_linear_names(student, cfg.lora_targets)  # checks the names
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    t0 = time.time()
    set_seed(cfg.seed)
    tds = C.tokenize_dataset(data.select(idx), processor)
    # > 1 under `accelerate launch --num_processes N` (GPUs) or torchrun (CPU processes over gloo)
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    processes = PartialState(cpu=cpu).num_processes
    per_step = cfg.batch_size * cfg.grad_accum * processes  # examples per optimizer step, all processes
    steps = max(1, math.ceil(cfg.epochs * len(tds) / per_step))
    args = training_args(out_dir / "_trainer", steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                         warmup_ratio=cfg.warmup_ratio, save_steps=cfg.save_steps if cfg.save_steps < steps else 0,
                         bf16=cfg.bf16, gradient_accumulation_steps=cfg.grad_accum, use_cpu=cpu,
                         gradient_checkpointing=cfg.gradient_checkpointing)
    sharded = _check_parallel_setup(args, cfg)
    if not sharded:
        student.to(args.device)  # the answer loss before training is measured where training runs
    ce_before = mean_ce(student, processor, tds)
    params = M.param_breakdown(student)  # recovery changes weights, not shapes (LoRA is merged)
    model = prepare_student(student, cfg)
    n_trainable = trainable_parameters(model)
    model.train()
    trainer = trainer_class()(model=model, args=args, train_dataset=tds, data_collator=C.Collator(processor),
                              teacher=teacher if uses_teacher(cfg.loss) else None, cfg=cfg, pairs=pairs)
    resume = last_complete_checkpoint(out_dir / "_trainer")
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        trainer.s_capture.remove()
        if hasattr(trainer, "t_capture"):
            trainer.t_capture.remove()
    t_train = time.time() - t0
    trainer.accelerator.wait_for_everyone()
    if sharded:  # FSDP / ZeRO-3: every process takes part in gathering the whole weights; process 0 writes
        trainer.save_model(str(out_dir))
    if not trainer.is_world_process_zero():
        return RecoveryResult(out_dir, {}, [])
    ce_after = float("nan")  # not measured when the weights are sharded: evaluate the saved checkpoint
    if not sharded:  # single process, DDP, ZeRO-1/2: process 0 holds whole weights
        final = model.merge_and_unload() if cfg.train == "lora" else model
        final = trainer.accelerator.unwrap_model(final).eval()
        ce_after = mean_ce(final, processor, tds)
        final.save_pretrained(out_dir)
    log = [row for row in trainer.state.log_history if "loss" in row]
    metrics = {"config": asdict(cfg), "examples": len(tds), "of_examples": len(data), "steps": steps,
               "processes": args.world_size, "resumed": resume is not None,
               "resumed_from": resume.name if resume else None, "trainable_params": n_trainable, "params": params,
               "layer_pairs": pairs, "train_seconds": round(t_train, 1), "train_ce_before": round(ce_before, 5),
               "train_ce_after": round(ce_after, 5)}
    processor.save_pretrained(out_dir)
    if plan is not None:
        plan.save(out_dir / "pruning_plan.json")
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=1))
    (out_dir / "recovery_metrics.json").write_text(json.dumps(metrics, indent=1))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    return RecoveryResult(out_dir, metrics, log)


def last_complete_checkpoint(trainer_dir: Path, log=print) -> Path | None:
    """The newest Trainer checkpoint that was written to the end, or None.

    Trainer writes a checkpoint's weights, optimizer and scheduler first and `trainer_state.json` last, so a
    checkpoint is complete when that file parses and every safetensors file in it reads (a kill or a full disk
    during the save leaves it missing or truncated). Incomplete ones are renamed `incomplete-checkpoint-N`
    (kept for inspection, never resumed from) and reported."""
    found = sorted((p for p in Path(trainer_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    for ckpt in reversed(found):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            for f in ckpt.glob("*.safetensors"):
                M.check_safetensors(f)
            if not any(ckpt.glob("*.safetensors")):
                raise ValueError("no weights")
            return ckpt
        except (OSError, ValueError) as e:
            aside = ckpt.with_name(f"incomplete-{ckpt.name}")
            shutil.rmtree(aside, ignore_errors=True)
            ckpt.rename(aside)
            log(f"recovery: {ckpt} was not written to the end ({e}); not resumed from, moved to {aside.name}")
    return None


def _check_parallel_setup(args, cfg: RecoveryConfig) -> bool:
    """True when the weights are sharded across processes (FSDP or DeepSpeed ZeRO-3). Sharded training
    saves through `Trainer.save_model` (which gathers the whole weights); LoRA is then refused, because its
    merge needs whole base weights on one process: use DDP or ZeRO-2 for LoRA (configs/accelerate/)."""
    ds = args.hf_deepspeed_config.config if getattr(args, "hf_deepspeed_config", None) else {}
    stage = (ds.get("zero_optimization") or {}).get("stage", 0)
    sharded = bool(args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or stage == 3
    if sharded and cfg.train == "lora":
        raise ValueError("train='lora' merges the adapter on process 0, which needs whole weights: launch with "
                         "configs/accelerate/ddp.yaml or deepspeed_zero2.yaml (FSDP / ZeRO-3 shard them); "
                         "use FSDP / ZeRO-3 for train='full'")
    if cfg.bf16 and not torch.cuda.is_available():
        raise ValueError("bf16=True needs a GPU (bfloat16 on this CPU is ~28x slower than fp32); leave it off")
    return sharded


def recovery_dir(root: str | Path, teacher_dir: str | Path, plan: PruningPlan | None, cfg: RecoveryConfig) -> Path:
    """`root/recovered-<paradigm>-<criterion>-<ratio %>-<train>-<loss>-<hash>`; the hash covers the teacher
    folder, the pruning plan and every recovery setting, so a changed input never reuses an old result."""
    from . import files

    digest = files.key({"teacher": str(teacher_dir), "plan": plan.to_dict() if plan else None, "cfg": asdict(cfg),
                        "data": D.GENERATOR_VERSION})
    what = f"{plan.paradigm}-{plan.criterion}-{round(100 * plan.lm_ratio)}" if plan else "unpruned"
    return Path(root) / f"recovered-{what}-{cfg.train}-{cfg.loss}-{digest}"


def ensure_recovered(student, teacher, data, cfg: RecoveryConfig, out_dir: str | Path, processor,
                     plan: PruningPlan | None = None) -> RecoveryResult:
    """`recover` unless `out_dir` already holds a finished run (recovery_metrics.json is written last);
    an unfinished one resumes from its last Trainer checkpoint."""
    out_dir = Path(out_dir)
    if (out_dir / "recovery_metrics.json").exists():
        return RecoveryResult(out_dir, json.loads((out_dir / "recovery_metrics.json").read_text()),
                              json.loads((out_dir / "train_log.json").read_text()))
    return recover(student, teacher, data, cfg, out_dir, processor, plan=plan)


# ----------------------------------------------------------------------------------------------
# The study's step (notebooks 03 and 04): recover a pruned copy of the teacher, then evaluate it


def recovery_config(teacher: "study.Teacher", **settings) -> RecoveryConfig:
    """A RecoveryConfig over the teacher's instruction data (bf16 with a bfloat16 teacher); `settings` are
    RecoveryConfig's fields, `seed` (the data subset's and the training order's) by default the teacher's."""
    return RecoveryConfig(**{"n_train": len(teacher.train_data), "seed": teacher.seed,
                             "bf16": teacher.dtype == "bfloat16", **settings})


@dataclass
class Recovered:
    """A recovered student: the training result (metrics, log, folder), its evaluation and relative scores."""

    result: RecoveryResult = field(repr=False)
    table: pd.DataFrame = field(repr=False)
    relative: pd.DataFrame = field(repr=False)
    items: dict = field(repr=False)  # per-item results (`evaluation.evaluate_items`)
    interval: object = None  # AVG % with its 95 % paired-bootstrap interval (`study.interval`)

    @property
    def avg(self) -> float:
        """AVG % (NaN without scored benchmarks)."""
        return study.mean_relative(self.relative)


def recover_and_evaluate(teacher: "study.Teacher", pruned: "study.Pruned", cfg: RecoveryConfig) -> Recovered:
    """Recover a copy of the pruned model (`recovery.ensure_recovered`: cached by its inputs under
    <checkpoint_root>/recovered, resumed if interrupted), reload the saved checkpoint and evaluate it."""
    out = recovery_dir(Path(teacher.checkpoint_root) / "recovered", teacher.dir, pruned.plan, cfg)
    result = ensure_recovered(copy.deepcopy(pruned.model), teacher.model, teacher.train_data, cfg, out,
                              teacher.processor, plan=pruned.plan)
    model, _ = M.load(out, dtype=getattr(torch, teacher.dtype))
    model.to(teacher.device)
    assert count_params(model) == count_params(pruned.model), "recovery keeps the pruned structure"
    table, items = evaluation.evaluate_cached(model, teacher.processor, teacher.benchmarks, out, model_name=out.name,
                                              items=True, progress=False)
    return Recovered(result, table, study.relative(teacher, table), items, study.interval(teacher, items))
