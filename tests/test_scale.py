"""Scaling recovery past one process: the accelerate configs, `accelerate launch` on CPU (one process and
two, DDP over gloo), recovery on LLaVA mix-665k-style JSON data, and the settings refused before training."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from studylib import cli
from studylib import models as M
from studylib import recovery as R

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = ROOT / "configs" / "accelerate"
N_TRAIN = 200


@pytest.mark.parametrize("name, kind, stage", [("ddp", "MULTI_GPU", None), ("deepspeed_zero2", "DEEPSPEED", 2),
                                               ("deepspeed_zero3", "DEEPSPEED", 3), ("fsdp", "FSDP", None)])
def test_accelerate_configs_load_with_accelerate(name, kind, stage):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ACCELERATE / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16"
    assert (cfg.deepspeed_config or {}).get("zero_stage") == stage
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert "LlamaDecoderLayer" in cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    text = (ACCELERATE / f"{name}.yaml").read_text()
    assert "accelerate launch --config_file configs/accelerate/" in text, "each config shows its command"


@pytest.mark.parametrize("fsdp, stage, train, ok", [
    ([], 0, "lora", True), ([], 2, "lora", True), ([], 3, "full", True), (["full_shard"], 0, "full", True),
    ([], 3, "lora", False), (["full_shard"], 0, "lora", False)])
def test_lora_is_refused_where_weights_are_sharded(fsdp, stage, train, ok):
    ds = SimpleNamespace(config={"zero_optimization": {"stage": stage}}) if stage else None
    args = SimpleNamespace(fsdp=fsdp, hf_deepspeed_config=ds)
    cfg = R.RecoveryConfig(train=train)
    if ok:
        assert R._check_parallel_setup(args, cfg) == (bool(fsdp) or stage == 3)
    else:
        with pytest.raises(ValueError, match="ddp.yaml or deepspeed_zero2.yaml"):
            R._check_parallel_setup(args, cfg)


def test_bf16_without_a_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is about machines without a GPU")
    with pytest.raises(ValueError, match="bf16=True needs a GPU"):
        R._check_parallel_setup(SimpleNamespace(fsdp=[], hf_deepspeed_config=None), R.RecoveryConfig(bf16=True))


def test_scale_settings_at_their_defaults_keep_the_cache_key():
    """Old recovered checkpoints stay valid: default scale settings do not enter `recovery_dir`'s hash."""
    base = R.recovery_dir("root", "teacher", None, R.RecoveryConfig())
    assert R.recovery_dir("root", "teacher", None, R.RecoveryConfig(grad_accum=1)) == base
    assert R.recovery_dir("root", "teacher", None, R.RecoveryConfig(grad_accum=2)) != base


def mix665k_fixture(folder: Path, n: int = 24) -> Path:
    """Rows shaped like llava_v1_5_mix665k.json: images under dataset subfolders, `<image>` at the start or
    the end of the first question, multi-turn conversations, and text-only rows without an image."""
    from studylib import data as D

    recs = D.generate_records("train", n, seed=3)
    rows = []
    for i, r in enumerate(recs):
        turns = [dict(t) for t in r["conversations"]]
        row = {"id": f"{i:012d}", "conversations": turns}
        if "<image>" in turns[0]["value"]:
            sub = ["coco/train2017", "gqa/images", "ocr_vqa/images"][i % 3]
            row["image"] = f"{sub}/{i:012d}.jpg"
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (i * 9 % 255, 90, 30)).save(folder / row["image"])
            if i % 2:  # mix-665k writes the placeholder before the question too (the embedded records, after)
                turns[0]["value"] = "<image>\n" + turns[0]["value"].replace("\n<image>", "")
        rows.append(row)
    path = folder / "llava_v1_5_mix665k_sample.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="module")
def student(tiny_teacher, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "pruned"
    assert cli.main(["prune", str(tiny_teacher), "--paradigm", "layerwise", "--criterion", "bi", "--ratio", "0.5",
                     "--n-train", str(N_TRAIN), "--cache", str(cache_dir), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("processes", [1, 2])
def test_recovery_through_accelerate_launch_on_cpu(processes, student, tiny_teacher, cache_dir, tmp_path):
    """`accelerate launch --cpu` runs `studylib recover` on mix-665k-style data (one process; two = DDP over
    gloo through torchrun, where process 0 alone writes the checkpoint); the result reloads, weights changed."""
    data = mix665k_fixture(tmp_path / "mix")
    out = tmp_path / "recovered"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # accelerate launch --cpu starts one process (more need mpirun); two CPU processes come from torchrun
    launcher = (["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no"] if processes == 1
                else ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)])
    cmd = [sys.executable, *launcher, "-m", "studylib.cli", "recover", str(student), "--teacher", str(tiny_teacher), "--train", "lora",
           "--loss", "ce+kl", "--data", str(data), "--data-fraction", "1.0", "--batch-size", "4",
           "--save-steps", "0", "--lr", "1e-3", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("recovered on 24 of 24 examples") == 1, proc.stdout  # process 0 reports, once
    metrics = json.loads((out / "recovery_metrics.json").read_text())
    assert metrics["processes"] == processes
    assert metrics["steps"] == -(-24 // (4 * processes)), "the data is split between processes"
    assert metrics["train_ce_after"] < metrics["train_ce_before"]
    before, _ = M.load(student)
    after, _ = M.load(out)
    changed = [k for k, v in after.state_dict().items() if not v.equal(before.state_dict()[k])]
    assert any("language_model" in k for k in changed), "LoRA merged into the LM weights"
    assert not any("vision_tower" in k for k in changed), "the vision tower stays frozen"


def test_recover_on_mix665k_data_in_process(student, tmp_path, capsys):
    data = mix665k_fixture(tmp_path / "mix")
    out = tmp_path / "recovered"
    assert cli.main(["recover", str(student), "--train", "projector", "--loss", "ce", "--data", str(data),
                     "--data-fraction", "12", "--batch-size", "4", "--save-steps", "0", "--out", str(out)]) == 0
    assert "recovered on 12 of 24 examples" in capsys.readouterr().out
    # bad input: a missing image names the row and the file; nothing is written
    rows = json.loads(data.read_text())
    rows[5]["image"] = "coco/train2017/missing.jpg"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rows))
    assert cli.main(["recover", str(student), "--train", "projector", "--loss", "ce", "--data", str(bad),
                     "--image-folder", str(tmp_path / "mix"), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "missing image" in err and "000000000005" in err and "missing.jpg" in err
    assert not (tmp_path / "never").exists()
    assert cli.main(["recover", str(student), "--train", "projector", "--loss", "ce", "--data", str(data),
                     "--data-fraction", "25", "--out", str(tmp_path / "never")]) == 2
    assert "asks for 25 examples but the data has only 24" in capsys.readouterr().err
