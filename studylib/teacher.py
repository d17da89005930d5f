"""Training the embedded teacher: LLaVA's two stages with `transformers.Trainer`.

LLaVA-1.5 starts from a pretrained CLIP and Vicuna; stage 1 aligns the projector on captions, stage 2
instruction-tunes projector and LM. In the embedded presets nothing is pretrained, so both stages also
train the vision tower and the LM: stage 1 on dense captions only (a curriculum: "red circle at top left;
..." teaches colour, shape and position of every cell), stage 2 on the whole instruction mix. The pretrained
preset (`gemma-270m`, `studylib.pretrained`) follows LLaVA-1.5 exactly: its vision tower stays frozen,
stage 1 trains the projector alone, stage 2 projector and LM. Loss on answer tokens only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import collate as C
from . import data as D
from . import models as M
from . import validate as V


@dataclass
class TeacherConfig:
    preset: str = "llava-small"
    seed: int = 0
    n_train: int = 20000
    stage1_steps: int = 100  # captions only
    max_steps: int = 1200  # stage 2, the whole mix
    batch_size: int = 32
    lr: float = 3e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    threads: int = 0  # 0: leave torch's default
    stage1_lr: float | None = None  # None: `lr` for embedded presets, 1e-3 (LLaVA's projector rate) for pretrained
    stage2_lr: float | None = None  # None: `lr` for embedded presets, 5e-5 for pretrained (a pretrained LM forgets
                                    # the stage-1 alignment at 3e-4: its loss spikes and it stops reading the image)
    pack_to: int | None = None  # padding-free rows of this many tokens (`collate.PackingCollator`; 0: padded
                                # batches). None: PACK_TO for embedded presets, 0 for pretrained ones (untested
                                # with Gemma's sliding-window masks, and its measured teacher used padding)


PACK_TO = 160  # llava-small, batch 32: 0.63 s a step against 1.07 s padded, the same loss (benchmarks/bench_packing.py)


def training_args(out_dir: str | Path, *, steps: int, batch_size: int, lr: float, seed: int,
                  warmup_ratio: float = 0.03, weight_decay: float = 0.0, logging_steps: int = 0,
                  save_steps: int = 0, **kw):
    """TrainingArguments shared by every training run of the package (cosine schedule, CPU-friendly).

    `save_steps` > 0 keeps the latest Trainer checkpoint under `out_dir` (for resuming an interrupted run).
    """
    from transformers import TrainingArguments

    saving = dict(save_strategy="steps", save_steps=save_steps, save_total_limit=1) if save_steps else \
        dict(save_strategy="no")
    return TrainingArguments(
        output_dir=str(out_dir), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type="cosine", warmup_steps=math.ceil(warmup_ratio * steps), weight_decay=weight_decay,
        logging_steps=logging_steps or max(1, min(10, steps // 5)), report_to=[], seed=seed, data_seed=seed,
        dataloader_num_workers=0, dataloader_pin_memory=False, remove_unused_columns=False, disable_tqdm=False,
        **saving, **kw,
    )


def set_trainable(model, parts: tuple[str, ...]) -> None:
    """requires_grad on the named parts of a LLaVA model ('vision', 'projector', 'lm'), off elsewhere."""
    m = model.model
    modules = {"vision": [m.vision_tower], "projector": [m.multi_modal_projector],
               "lm": [m.language_model, model.lm_head]}
    for p in model.parameters():
        p.requires_grad_(False)
    for part in parts:
        for module in modules[part]:
            for p in module.parameters():
                p.requires_grad_(True)


def pack_to(cfg: TeacherConfig) -> int:
    """Row width of the packed batches `cfg` trains on (0: padded batches)."""
    from . import pretrained as P

    if cfg.pack_to is not None:
        return cfg.pack_to
    return 0 if cfg.preset in P.PRETRAINED_PRESETS else PACK_TO


def run_stage(model, processor, train_ds, out_dir: Path, steps: int, cfg: TeacherConfig, name: str,
              lr: float | None = None) -> list[dict]:
    from transformers import Trainer

    args = training_args(out_dir / name, steps=steps, batch_size=cfg.batch_size, lr=lr or cfg.lr, seed=cfg.seed,
                         warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay)
    collate = C.PackingCollator(processor, pack_to(cfg)) if pack_to(cfg) else C.Collator(processor)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collate)
    trainer.train()
    return [dict(row, stage=name) for row in trainer.state.log_history if "loss" in row]


def check_config(cfg: TeacherConfig) -> None:
    """Raise a ValueError naming the parameter and what is allowed for any bad setting (`studylib.validate`)."""
    V.choice("preset", cfg.preset, (*V.EMBEDDED_PRESETS, *V.PRETRAINED_PRESETS))
    for name, low in (("seed", 0), ("n_train", 1), ("stage1_steps", 0), ("max_steps", 1), ("batch_size", 1),
                      ("threads", 0)):
        V.integer(name, getattr(cfg, name), low)
    V.number("lr", cfg.lr, 0, low_open=True)
    V.number("warmup_ratio", cfg.warmup_ratio, 0, 1)
    V.number("weight_decay", cfg.weight_decay, 0)
    for name in ("stage1_lr", "stage2_lr"):
        if getattr(cfg, name) is not None:
            V.number(name, getattr(cfg, name), 0, low_open=True)
    if cfg.pack_to is not None:
        V.integer("pack_to", cfg.pack_to, 0)


def train_teacher(cfg: TeacherConfig, out_dir: str | Path, cache_dir: str | Path | None = None,
                  root: str | Path | None = None) -> dict:
    """Build data, processor and model for `cfg.preset`, train both stages, save a HF checkpoint.

    Writes `out_dir/` (model + processor), `train_log.json` and `teacher_metrics.json`; returns the metrics.
    A pretrained preset reads (or builds) its base LM and its vision teacher under `root` (default data/checkpoints).
    """
    from . import pretrained as P

    check_config(cfg)
    pretrained = cfg.preset in P.PRETRAINED_PRESETS
    if pretrained:  # before anything is trained (its vision teacher takes half an hour)
        P.check_extra(root or default_checkpoint_root())
    out_dir = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    ds = D.build_dataset("train", cfg.n_train, cfg.seed, cache_dir)
    if pretrained:  # the vision tower of the embedded teacher it names (trained, or loaded from the cache)
        vision_from = ensure_teacher(TeacherConfig(P.PRETRAINED_PRESETS[cfg.preset]["vision_from"], cfg.seed),
                                     root, cache_dir)
        processor, model = P.build(cfg.preset, cfg.seed, root or default_checkpoint_root(), vision_from)
    else:
        processor = M.build_processor(cfg.preset)
        model = M.build_model(cfg.preset, processor, cfg.seed)
    everything = ("vision", "projector", "lm")
    stages = P.STAGES if pretrained else {"stage1": everything, "stage2": everything}
    lrs = {"stage1": cfg.stage1_lr or (P.STAGE1_LR if pretrained else cfg.lr),
           "stage2": cfg.stage2_lr or (P.STAGE2_LR if pretrained else cfg.lr)}
    # Random batches, not length-grouped ones: grouping by length makes each batch one task family,
    # which trained a far weaker teacher here (image-benchmark mean 0.30 against 0.6 with random batches).
    tds = C.tokenize_dataset(ds, processor)
    t_data = time.time() - t0
    log: list[dict] = []
    if cfg.stage1_steps:
        captions = tds.filter(lambda f: f == "caption", input_columns="family")
        set_trainable(model, stages["stage1"])
        log += run_stage(model, processor, captions, out_dir / "_trainer", cfg.stage1_steps, cfg, "stage1", lrs["stage1"])
    if cfg.max_steps:
        set_trainable(model, stages["stage2"])
        log += run_stage(model, processor, tds, out_dir / "_trainer", cfg.max_steps, cfg, "stage2", lrs["stage2"])
    t_train = time.time() - t0 - t_data
    set_trainable(model, everything)
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    metrics = {"config": asdict(cfg), "learning_rates": lrs, "pack_to": pack_to(cfg), "trained": stages,
               "params": M.param_breakdown(model),
               "data_seconds": round(t_data, 1), "train_seconds": round(t_train, 1), "final_loss": log[-1]["loss"] if log else None}
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=1))
    (out_dir / "teacher_metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def config_hash(cfg: TeacherConfig) -> str:
    """The teacher's cache key (`files.key`): every field that changes the weights (all but `threads`, with
    `pack_to` resolved), the versions of the data generator and the embedded tokenizer (both built from
    code), and for a pretrained preset its training constants and its vision tower teacher's key."""
    from . import files
    from . import pretrained as P

    keep = {k: v for k, v in asdict(cfg).items() if k != "threads"} | {"pack_to": pack_to(cfg),
                                                                          "data": D.GENERATOR_VERSION}
    if cfg.preset in M.PRESETS:
        keep["tokenizer"] = M.TOKENIZER_VERSION
    if cfg.preset in P.PRETRAINED_PRESETS:
        vision = TeacherConfig(P.PRETRAINED_PRESETS[cfg.preset]["vision_from"], cfg.seed)
        keep["pretrained"] = {"stage1_lr": P.STAGE1_LR, "stage2_lr": P.STAGE2_LR, "trim": P.TRIM_VERSION,
                              "vision_from": config_hash(vision)}
    return files.key(keep)


def default_checkpoint_root() -> Path:
    """data/checkpoints in the project home (`files.home`: $STUDYLIB_HOME or the current directory)."""
    from . import files

    return files.home() / "data" / "checkpoints"


def ensure_teacher(cfg: TeacherConfig, root: str | Path | None = None, cache_dir=None, log=print) -> Path:
    """The teacher's folder for `cfg`, trained once and cached under `root/teacher-<preset>-s<seed>-<hash>`.

    Training writes to `<folder>.partial`, renamed at the end, so an interrupted run never leaves a folder
    that looks finished. While it trains, the process holds a lock on `root/.<folder>.lock`
    (`studylib.files.lock`): a second process asking for the same teacher (e.g. two sweep jobs) waits for
    it, telling `log` once which pid it waits for, and then uses the finished folder; it never deletes the
    `.partial` folder of a live process. The wait has no time limit: the kernel releases the lock when its
    holder dies (even by kill -9), and the waiter then trains afresh from the start.
    """
    import shutil

    from . import files

    check_config(cfg)
    root = Path(root) if root else default_checkpoint_root()
    path = root / f"teacher-{cfg.preset}-s{cfg.seed}-{config_hash(cfg)}"
    if (path / "teacher_metrics.json").exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    with files.lock(root / f".{path.name}.lock", f"the teacher folder {path}", wait=None, log=log):
        if (path / "teacher_metrics.json").exists():  # trained by the process this one waited for
            return path
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a dead process: the lock is ours
        train_teacher(cfg, tmp, cache_dir, root)
        shutil.rmtree(tmp / "_trainer", ignore_errors=True)
        tmp.rename(path)
    return path
